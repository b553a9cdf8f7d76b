package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// The --config file is read here rather than by urfave/cli's altsrc, whose
// YAML source ignored keys it did not know (data_dir: silently meant
// ./meshreg-data), wanted a YAML list for a list flag, and wrapped a YAML
// syntax error twice. Its keys are the names of the command's flags, taken
// from the flag definitions themselves, so a new flag is a new key with no
// second list to keep; each value goes through the flag's own parser, as
// on the command line. A flag given on the command line or in its
// MESHREG_* variable wins over the file.

// configKeyIgnored is the one key that is not a setting: `serve --check`
// prints the path of the file it read under it, so that its output reads
// back as a --config file. One file does not include another.
const configKeyIgnored = "config"

// hiddenSecret is what `serve --check` prints instead of a secret (the
// join token); in a --config file it is refused, not taken for the secret.
const hiddenSecret = "(set)"

// loadConfigFile applies the YAML file named by c's --config flag to the
// flags (those not set otherwise), and reports every problem in it at
// once: a key that is no flag (with the nearest one), a value the flag
// cannot parse, a list for a single value; each with the file and line.
// It warns first about misspelt MESHREG_* variables (warnMisspeltEnv).
func loadConfigFile(c *cli.Context, flags []cli.Flag) error {
	warnMisspeltEnv(c.App.ErrWriter, os.Environ(), flags)
	path := c.String("config")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the --config file: %w", err)
	}
	doc, err := parseYAML(path, data)
	if err != nil || doc == nil {
		return err
	}
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s, line %d: the file must map flag names to values (listen: 127.0.0.1:5000), not be a %s", path, doc.Line, kindName(doc))
	}
	byName := map[string]cli.Flag{}
	var names []string
	for _, f := range flags {
		for _, n := range f.Names() {
			byName[n] = f
			names = append(names, n)
		}
	}
	seen := map[string]int{}
	var errs []error
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], resolveAlias(doc.Content[i+1])
		key := k.Value
		where := fmt.Sprintf("%s, line %d", path, k.Line)
		f, known := byName[key]
		switch {
		case k.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("%s: a key must be a flag name, not a %s", where, kindName(k)))
			continue
		case seen[key] != 0:
			errs = append(errs, fmt.Errorf("%s: key %q is given twice (first on line %d)", where, key, seen[key]))
			continue
		case !known:
			hint := "; the keys are the flag names of meshreg serve --help"
			if near, ok := nearest(key, names); ok {
				hint = fmt.Sprintf(": did you mean %q?", near)
			}
			errs = append(errs, fmt.Errorf("unknown key %q in %s (line %d)%s", key, path, k.Line, hint))
			continue
		}
		seen[key] = k.Line
		if key == configKeyIgnored {
			continue
		}
		values, err := configValues(f, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", where, key, err))
			continue
		}
		if setElsewhere(c, f) {
			continue
		}
		for _, val := range values {
			if val == hiddenSecret {
				errs = append(errs, fmt.Errorf("%s: %s %q is how serve --check hides a secret: put the token itself here, or in %s", where, key, val, envOf(f)))
				break
			}
			if err := c.Set(f.Names()[0], val); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s %q: %s", where, key, val, valueProblem(f, val, err.Error())))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// configValues returns the values a YAML node gives flag f: one for a
// scalar; one per item for a list, which only a repeatable flag takes (a
// single value is a list of one).
func configValues(f cli.Flag, v *yaml.Node) ([]string, error) {
	sf, ok := f.(cli.DocGenerationSliceFlag)
	repeatable := ok && sf.IsSliceFlag()
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null" && repeatable:
		return emptyList(f)
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return []string{""}, nil
	case v.Kind == yaml.ScalarNode:
		return []string{v.Value}, nil
	case v.Kind == yaml.SequenceNode && !repeatable:
		return nil, fmt.Errorf("takes one value, not a list")
	case v.Kind == yaml.SequenceNode:
		if len(v.Content) == 0 {
			return emptyList(f)
		}
		out := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			if item = resolveAlias(item); item.Kind == yaml.MappingNode && mappingItems[f.Names()[0]] {
				s, err := mappingItem(item)
				if err != nil {
					return nil, err
				}
				out = append(out, s)
				continue
			}
			if item.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a list item must be a value, not a %s", item.Line, kindName(item))
			}
			out = append(out, item.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("wants a value, not a %s (keys are flag names at the top level: listen: 127.0.0.1:5000)", kindName(v))
}

// emptyList accepts an empty list for a repeatable flag whose default is
// empty (join: [] is what `serve --check` prints), and refuses it for one
// that has a default, which the file could not clear.
func emptyList(f cli.Flag) ([]string, error) {
	if df, ok := f.(cli.DocGenerationFlag); ok && df.GetValue() != "" {
		return nil, fmt.Errorf("an empty list: give at least one value, or remove the key for the default (%s)", df.GetValue())
	}
	return nil, nil
}

// envOf names f's first environment variable, or its flag.
func envOf(f cli.Flag) string {
	if df, ok := f.(cli.DocGenerationFlag); ok && len(df.GetEnvVars()) > 0 {
		return df.GetEnvVars()[0]
	}
	return "--" + f.Names()[0]
}

// setElsewhere reports whether f was given on the command line or in one
// of its environment variables, which win over the file.
func setElsewhere(c *cli.Context, f cli.Flag) bool {
	for _, n := range f.Names() {
		if c.IsSet(n) {
			return true
		}
	}
	if df, ok := f.(cli.DocGenerationFlag); ok {
		for _, e := range df.GetEnvVars() {
			if _, ok := os.LookupEnv(e); ok {
				return true
			}
		}
	}
	return false
}

var reYAMLLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses one YAML document and returns its top node (nil for an
// empty file), or one error naming the file and the line.
func parseYAML(path string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		msg := err.Error()
		if m := reYAMLLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if strings.HasPrefix(m[2], "did not find expected") {
				// yaml.v3 counts the lines of its parser's errors (unlike
				// its scanner's) from 0.
				line++
			}
			return nil, fmt.Errorf("%s, line %d: not valid YAML: %s", path, line, m[2])
		}
		return nil, fmt.Errorf("%s: not valid YAML: %s", path, strings.TrimPrefix(msg, "yaml: "))
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document (---): put every setting in one", path)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return resolveAlias(doc.Content[0]), nil
}

// resolveAlias follows a YAML alias (*name) to the node it names.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "YAML node"
}

// warnMisspeltEnv warns on w about each MESHREG_* variable of environ
// that is no flag's but close to one's (MESHREG_DATADIR for
// MESHREG_DATA_DIR), which would otherwise be ignored without a word.
// Variables close to none are left alone: Kubernetes sets
// MESHREG_SERVICE_HOST and the like for a Service named meshreg.
func warnMisspeltEnv(w io.Writer, environ []string, flags []cli.Flag) {
	known := map[string]bool{"MESHREG_NODE": true, envTestPassTTL: true} // the cluster and token commands'; serve's test-only knob
	var names []string
	for _, f := range flags {
		if df, ok := f.(cli.DocGenerationFlag); ok {
			for _, e := range df.GetEnvVars() {
				known[e] = true
				names = append(names, e)
			}
		}
	}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "MESHREG_") || known[k] {
			continue
		}
		if near, ok := nearest(k, names); ok {
			fmt.Fprintf(w, "meshreg: warning: %s is not a setting of meshreg serve and is ignored: did you mean %s?\n", k, near)
		}
	}
}

// mappingItems are the repeatable flags whose config-file items may be
// mappings: an upstream is clearer as
//
//	upstream:
//	  - name: docker.io
//	    url: https://registry-1.docker.io
//	    revalidate: 10m
//	    allow: [library/*, bitnami/**]
//
// than as one NAME=URL;revalidate=10m;... string (which also works).
var mappingItems = map[string]bool{"upstream": true}

// mappingItem writes a mapping item in its flag's form:
// name=url;key=value...; a list value repeats the key, a true boolean is
// the bare key.
func mappingItem(m *yaml.Node) (string, error) {
	var name, url string
	var opts []string
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i].Value, resolveAlias(m.Content[i+1])
		var values []string
		switch v.Kind {
		case yaml.ScalarNode:
			values = []string{v.Value}
		case yaml.SequenceNode:
			for _, it := range v.Content {
				if it = resolveAlias(it); it.Kind != yaml.ScalarNode {
					return "", fmt.Errorf("line %d: %s: a list item must be a value", it.Line, k)
				}
				values = append(values, it.Value)
			}
		default:
			return "", fmt.Errorf("line %d: %s wants a value or a list of values", v.Line, k)
		}
		for _, val := range values {
			if strings.ContainsAny(val, ";,") {
				return "", fmt.Errorf("line %d: %s %q may not contain ; or ,", v.Line, k, val)
			}
		}
		switch {
		case k == "name" && len(values) == 1:
			name = values[0]
		case k == "url" && len(values) == 1:
			url = values[0]
		case v.Tag == "!!bool":
			if values[0] == "true" {
				opts = append(opts, k)
			}
		default:
			for _, val := range values {
				opts = append(opts, k+"="+val)
			}
		}
	}
	if name == "" || url == "" {
		return "", fmt.Errorf("line %d: an upstream needs a name and a url", m.Line)
	}
	return strings.Join(append([]string{name + "=" + url}, opts...), ";"), nil
}

package testnet

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric reads the node's /metrics and returns SumMetric of it.
func (n *Node) Metric(ctx context.Context, name string, match ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Host()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("testnet: reading metrics of %s: %w", n.Host(), err)
	}
	defer resp.Body.Close()
	v, err := SumMetric(resp.Body, name, match...)
	if err != nil {
		return 0, fmt.Errorf("testnet: metrics of %s: %w", n.Host(), err)
	}
	return v, nil
}

// SumMetric reads the Prometheus text format from r and returns the sum of
// every sample of the named metric whose labels include all of match (each
// `key="value"`, as Prometheus prints them). A metric with no such sample
// is an error, so a renamed metric cannot pass for zero.
func SumMetric(r io.Reader, name string, match ...string) (float64, error) {
	sum, found := 0.0, false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a comment, another metric, or one whose name starts with this one
		}
		labels := ""
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("metric line %q: unterminated labels", line)
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if !hasAll(labels, match) {
			continue
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			return 0, fmt.Errorf("metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("no metric %s{%s}", name, strings.Join(match, ","))
	}
	return sum, nil
}

func hasAll(labels string, match []string) bool {
	for _, m := range match {
		if !strings.Contains(labels, m) {
			return false
		}
	}
	return true
}

package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/api/tlsconf"
)

// nodeFlag is the --node flag of the commands that talk to a node's API.
func nodeFlag(whose string) *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "node",
		Value:   "127.0.0.1:5000",
		Usage:   "`ADDR` of " + whose + " API: HOST:PORT (plain HTTP) or an http(s) URL",
		EnvVars: []string{"MESHREG_NODE"},
	}
}

// nodeURL turns a --node value into the base URL of a node's API, without
// a trailing slash: an http(s) URL as given, or HOST:PORT as http://HOST:PORT.
func nodeURL(v string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("--node %q: %s: want HOST:PORT or an http(s) URL, e.g. 127.0.0.1:5000 or https://meshreg.example:5000", v, why)
	}
	s := strings.TrimSpace(v)
	if s == "" {
		return "", bad("empty")
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		switch {
		case err != nil:
			return "", bad("no port")
		case host == "" || port == "":
			return "", bad("no host or no port")
		}
		s = "http://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", bad("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", bad("scheme " + u.Scheme + " is not http or https")
	case u.Host == "":
		return "", bad("no host")
	case u.RawQuery != "" || u.Fragment != "":
		return "", bad("a query or fragment has no place in it")
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// apiErrorText is what a node's error answer says: the message of its
// first OCI-style JSON error ({"errors":[{"code","message"}]}), or the
// body's text; then the HTTP status and the error code.
func apiErrorText(status int, body []byte) string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		return fmt.Sprintf("%s; HTTP %d %s", e.Errors[0].Message, status, e.Errors[0].Code)
	}
	return fmt.Sprintf("%s; HTTP %d", strings.TrimSpace(string(body)), status)
}

// nodeClientFlags are the flags of the commands that talk to a node's
// API: --username and --password (with a node's --auth-htpasswd on, the
// admin endpoints need a user with the admin right; MESHREG_USERNAME and
// MESHREG_PASSWORD keep the password out of the process list), --tls-ca
// (a node whose certificate is not signed by a CA the system trusts) and
// --tls-client-cert/--tls-client-key (a node with --tls-client-ca).
func nodeClientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "username", Usage: "`USER` to authenticate as (Basic auth), for a node with --auth-htpasswd", EnvVars: []string{"MESHREG_USERNAME"}},
		&cli.StringFlag{Name: "password", Usage: "`PASSWORD` of --username (prefer MESHREG_PASSWORD: flags show in ps)", EnvVars: []string{"MESHREG_PASSWORD"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "trust the CA in PEM `FILE` besides the system's roots, for an https --node", EnvVars: []string{"MESHREG_TLS_CA"}},
		&cli.StringFlag{Name: "tls-client-cert", Usage: "present the client certificate in PEM `FILE`, for a node with --tls-client-ca (needs --tls-client-key)", EnvVars: []string{"MESHREG_TLS_CLIENT_CERT"}},
		&cli.StringFlag{Name: "tls-client-key", Usage: "private key PEM `FILE` of --tls-client-cert", EnvVars: []string{"MESHREG_TLS_CLIENT_KEY"}},
	}
}

// nodeTLSFiles are the TLS files nodeClientFlags name.
func nodeTLSFiles(c *cli.Context) tlsconf.ClientFiles {
	return tlsconf.ClientFiles{
		CA: c.String("tls-ca"), Cert: c.String("tls-client-cert"), Key: c.String("tls-client-key"),
		CAFlag: "--tls-ca", CertFlag: "--tls-client-cert", KeyFlag: "--tls-client-key",
	}
}

// nodeDo sends req to a node with the client that nodeClientFlags
// describe: its TLS files and, when a user is given, Basic auth. The
// whole exchange must end within 30 s.
func nodeDo(c *cli.Context, req *http.Request) (*http.Response, error) {
	return nodeDoWithin(c, req, 30*time.Second)
}

// nodeRequest is a request of method for path (with its query) on the
// node --node names.
func nodeRequest(c *cli.Context, method, path string, body io.Reader) (*http.Request, error) {
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return nil, err
	}
	return http.NewRequestWithContext(c.Context, method, base+path, body)
}

// nodeDoWithin is nodeDo for an answer that may take longer (0: no bound,
// for a node that streams progress until the operation ends).
func nodeDoWithin(c *cli.Context, req *http.Request, timeout time.Duration) (*http.Response, error) {
	client, err := tlsconf.HTTPClient(nodeTLSFiles(c), timeout)
	if err != nil {
		return nil, err
	}
	if user := c.String("username"); user != "" {
		req.SetBasicAuth(user, c.String("password"))
	}
	resp, err := client.Do(req)
	if err != nil {
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			return nil, fmt.Errorf("%s %s: %w (pass the CA of the node's certificate with --tls-ca)", req.Method, req.URL, err)
		}
		return nil, fmt.Errorf("%s %s: %w (is a node running there? pass --node)", req.Method, req.URL, err)
	}
	return resp, nil
}

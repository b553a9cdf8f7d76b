package api

import (
	"net/http"
	"net/url"

	"github.com/meshreg/meshreg/api/oci"
)

// checkQuery refuses a request whose query string does not parse. Go's
// parser drops what it cannot read without a word (a bad escape, or every
// parameter past the 10,000th, GODEBUG urlmaxqueryparams): a push with
// 20,000 ?tag= parameters would otherwise succeed and set none of them.
func checkQuery(r *http.Request) error {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return oci.Wrap(oci.Unsupported, err, "the query string cannot be read ("+truncate(err.Error())+
			"): escape it properly and send at most 10000 parameters (push tags in several requests)").WithStatus(http.StatusBadRequest)
	}
	return nil
}

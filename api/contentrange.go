package api

import (
	"fmt"
	"strconv"
	"strings"
)

// parseContentRange parses the Content-Range of a chunk upload, which the
// spec writes as "<start>-<end>" (inclusive). "bytes " and "bytes=" prefixes
// that some clients add are accepted too.
func parseContentRange(s string) (start, end int64, err error) {
	v := strings.TrimSpace(s)
	v = strings.TrimPrefix(v, "bytes")
	v = strings.TrimLeft(v, " =")
	// A full HTTP Content-Range may carry a total ("0-99/100"); the total
	// adds nothing here.
	if i := strings.IndexByte(v, '/'); i >= 0 {
		v = v[:i]
	}
	a, b, ok := strings.Cut(v, "-")
	if !ok {
		return 0, 0, fmt.Errorf("content range %q: want <start>-<end>", truncate(s))
	}
	start, err = strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, fmt.Errorf("content range %q: bad start", truncate(s))
	}
	end, err = strconv.ParseInt(b, 10, 64)
	if err != nil || end < start {
		return 0, 0, fmt.Errorf("content range %q: bad end", truncate(s))
	}
	return start, end, nil
}

// uploadRange is the Range header of an upload session holding size bytes:
// "0-<last byte>", and "0-0" for an empty session, as CNCF Distribution and
// the clients that follow it expect.
func uploadRange(size int64) string {
	if size <= 0 {
		return "0-0"
	}
	return "0-" + strconv.FormatInt(size-1, 10)
}

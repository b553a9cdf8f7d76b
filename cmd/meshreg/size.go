package main

import (
	"fmt"

	"github.com/meshreg/meshreg/internal/bytesize"
)

// parseSize reads a byte count: "0", "1048576", "256MiB", "1.5GiB", "500MB"
// (binary K/M/G/T without "B" too; see bytesize.Parse). flag names the
// flag for the error.
func parseSize(flag, s string) (int64, error) {
	n, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a size such as 256MiB, 1GiB or a number of bytes (0 turns it off)", flag, s)
	}
	return n, nil
}

// formatSize prints n so that parseSize reads it back exactly.
func formatSize(n int64) string { return bytesize.Format(n) }

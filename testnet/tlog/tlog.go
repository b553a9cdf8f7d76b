// Package tlog routes a test's log/slog records to t.Log, so that they show
// only when the test fails (or with -v). Tests of every package use it.
package tlog

import (
	"log/slog"
	"strings"
	"testing"
)

// Logger returns a logger that writes records at level and above to t.Log.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer{t}, &slog.HandlerOptions{Level: level}))
}

// Writer writes each line it is given to t.Log.
type Writer struct{ T testing.TB }

func (w Writer) Write(p []byte) (int, error) {
	w.T.Helper()
	w.T.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/meshreg/meshreg/node/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		app := newApp()
		app.Writer, app.ErrWriter = &out, io.Discard
		if err := app.Run(append([]string{"meshreg", "version"}, args...)); err != nil {
			t.Fatalf("meshreg version %v: %v", args, err)
		}
		return out.String()
	}
	want := buildinfo.Read()
	if got := run(); got != want.String()+"\n" {
		t.Errorf("meshreg version printed %q, want %q", got, want.String()+"\n")
	}
	var got buildinfo.Info
	if err := json.Unmarshal([]byte(run("--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("meshreg version --json = %+v, want %+v", got, want)
	}
}

package state

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestPutSettingAppliesAndReplaces(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	read(t, a.db, func(r Reader) {
		if _, err := r.Setting(SettingAuthTokenKeys); !errors.Is(err, ErrNotFound) {
			t.Errorf("Setting before any write = %v, want ErrNotFound", err)
		}
	})
	got, resp := a.apply(Command{Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: []byte(`{"v":1}`)})
	if resp != nil || got.Kind != KindPutSetting || got.Setting != SettingAuthTokenKeys || got.Failed {
		t.Fatalf("apply = %+v, %v; want a put_setting of %s", got, resp, SettingAuthTokenKeys)
	}
	a.must(Command{Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: []byte(`{"v":2}`)})
	read(t, a.db, func(r Reader) {
		b, err := r.Setting(SettingAuthTokenKeys)
		if err != nil || string(b) != `{"v":2}` {
			t.Errorf("Setting = %q, %v; want the last write", b, err)
		}
	})
}

// TestPutSettingHostileInputs: every write outside the bounds is refused by
// Validate (at propose) and, proposed anyway, by Apply (an error result,
// the state unchanged but for the applied index), never a panic.
func TestPutSettingHostileInputs(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	a.must(Command{Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: []byte("good")})
	for name, c := range map[string]Command{
		"unknown name":   {Op: OpPutSetting, Name: "retention", Body: []byte("x")},
		"empty name":     {Op: OpPutSetting, Body: []byte("x")},
		"name with NUL":  {Op: OpPutSetting, Name: SettingAuthTokenKeys + "\x00x", Body: []byte("x")},
		"huge name":      {Op: OpPutSetting, Name: strings.Repeat("a", 1<<20), Body: []byte("x")},
		"empty body":     {Op: OpPutSetting, Name: SettingAuthTokenKeys},
		"oversized body": {Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: bytes.Repeat([]byte("x"), MaxSettingBytes+1)},
		"with a repo":    {Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: []byte("x"), Repo: "a"},
		"with tags":      {Op: OpPutSetting, Name: SettingAuthTokenKeys, Body: []byte("x"), Tags: []string{"t"}},
		"name on manifest": func() Command {
			c := put("r", "application/vnd.oci.image.manifest.v1+json", "{}")
			c.Name = SettingAuthTokenKeys
			return c
		}(),
		"name on a link": {Op: OpLinkBlob, Repo: "r", Digest: digest.Digest("sha256:" + strings.Repeat("a", 64)), Name: SettingAuthTokenKeys},
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: Validate = %v, want ErrInvalidCommand", name, err)
		}
		if got, resp := a.apply(c); !errors.Is(resp, ErrInvalidCommand) || !got.Failed {
			t.Errorf("%s: Apply = %+v, %v; want a failed entry with ErrInvalidCommand", name, got, resp)
		}
	}
	read(t, a.db, func(r Reader) {
		if b, err := r.Setting(SettingAuthTokenKeys); err != nil || string(b) != "good" {
			t.Errorf("Setting after hostile writes = %q, %v; want the good one unchanged", b, err)
		}
		if _, err := r.Setting("retention"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown setting read = %v, want ErrNotFound", err)
		}
	})
	// Garbage after the op byte decodes to an error, never a panic.
	for _, data := range [][]byte{{byte(OpPutSetting)}, {byte(OpPutSetting), '{'}, append([]byte{byte(OpPutSetting)}, `{"name":7}`...)} {
		a.index++
		if _, ok, resp, err := Apply(a.db, a.index, data, nil); err != nil || !ok || !errors.Is(resp, ErrInvalidCommand) {
			t.Errorf("Apply(%q) = ok %v, resp %v, err %v; want an invalid command", data, ok, resp, err)
		}
	}
}

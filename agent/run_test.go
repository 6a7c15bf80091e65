package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunRefusesAnUnknownDriverAndADriverWithoutItsDirectory(t *testing.T) {
	state := t.TempDir()
	env := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--state-dir", state, "--driver", "hyperv"}, `--driver "hyperv" is not known; this agent has: filedisk, qemu`},
		{[]string{"--state-dir", state, "--driver", "qemu"}, "--driver qemu needs --qmp-dir"},
		{[]string{"--state-dir", state, "--driver", "filedisk"}, "--driver filedisk needs --vm-root"},
	} {
		err := runCommand(context.Background(), c.args, env, io.Discard, io.Discard)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestTheConfigFileSetsTheQMPDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, []byte(`{"driver": "qemu"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// qmp_dir is a known key: without it the qemu driver asks for it.
	err := runCommand(context.Background(), []string{"--state-dir", t.TempDir(), "--config", path}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "needs --qmp-dir") {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(path, []byte(`{"driver": "qemu", "qmp_dir": "/run/qmp", "vm_root": ""}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	err = runCommand(context.Background(), []string{"--config", path}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || err.Error() != "run needs --state-dir" {
		t.Fatalf("%v", err)
	}
}

package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
)

func TestConfigFileFillsWhatNeitherFlagsNorEnvironmentSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, []byte(`{"vm_root": "/srv/vms", "max_tasks": 8, "log_level": "debug", "log_format": "json"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vmRoot := fs.String("vm-root", "", "")
	maxTasks := fs.Int("max-tasks", 4, "")
	logLevel := fs.String("log-level", "info", "")
	logFormat := fs.String("log-format", "text", "")
	if err := fs.Parse([]string{"--max-tasks", "2"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LIFEBOAT_LOG_FORMAT": "text"}
	if err := applyConfigFile(fs, path, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *vmRoot != "/srv/vms" || *maxTasks != 2 || *logLevel != "debug" || *logFormat != "text" {
		t.Fatalf("vm-root %q, max-tasks %d (flag wins), log-level %q (file), log-format %q (environment wins)", *vmRoot, *maxTasks, *logLevel, *logFormat)
	}
}

func TestConfigFileWithAnUnknownKeyIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, []byte(`{"vmroot": "/srv/vms"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := applyConfigFile(flag.NewFlagSet("run", flag.ContinueOnError), path, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "vmroot") {
		t.Fatalf("error %v", err)
	}
}

func TestRunReadsItsSettingsFromTheConfigFile(t *testing.T) {
	stateDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, []byte(`{"state_dir": "`+stateDir+`", "vm_root": "`+t.TempDir()+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Everything the run needs comes from the file; it stops at the missing registration.
	err := run(t.Context(), []string{"run", "--config", path}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not registered in "+stateDir) {
		t.Fatalf("error %v", err)
	}
}

// A qemu recovery host's QEMU arguments come from the config file as a
// JSON list or as shell words, and its VM directory defaults to one in the
// state directory.
func TestQEMURecoverySettingsComeFromTheConfigFileAsListsOrShellWords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.json")
	body := `{"qemu_args": ["-m", "2048", "-append", "console=ttyS0 quiet"], "qemu_net_args": "-nic bridge,br=br0", "qemu_binary": "/opt/qemu/bin/qemu-system-x86_64"}`
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	vmDir := fs.String("qemu-vm-dir", "", "")
	binary := fs.String("qemu-binary", qemu.DefaultBinary, "")
	args := fs.String("qemu-args", "", "")
	netArgs := fs.String("qemu-net-args", "", "")
	if err := applyConfigFile(fs, path, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	q := &qemu.Driver{Binary: *binary}
	if err := configureRecovery(q, "/var/lib/lifeboat", *vmDir, *args, *netArgs); err != nil {
		t.Fatal(err)
	}
	if q.VMDir != "/var/lib/lifeboat/qemu-vms" || q.Binary != "/opt/qemu/bin/qemu-system-x86_64" ||
		strings.Join(q.MachineArgs, "|") != "-m|2048|-append|console=ttyS0 quiet" || strings.Join(q.NetArgs, "|") != "-nic|bridge,br=br0" {
		t.Fatalf("driver %+v", q)
	}
	if err := os.WriteFile(path, []byte(`{"qemu_args": 7}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "shell words or a list") {
		t.Fatalf("qemu_args of a number: %v", err)
	}
	if err := configureRecovery(q, "/s", "", `-append 'open`, ""); err == nil || !strings.Contains(err.Error(), "--qemu-args") {
		t.Fatalf("unbalanced quotes: %v", err)
	}
}

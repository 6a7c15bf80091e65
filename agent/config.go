package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
)

// fileConfig is the optional file `run --config FILE` reads, for hosts that
// prefer a file to flags or environment variables:
//
//	{"state_dir": "/var/lib/lifeboat-agent", "driver": "filedisk",
//	 "vm_root": "/srv/vms", "max_tasks": 4, "log_format": "json"}
//
// (or "driver": "qemu", "qmp_dir": "/run/lifeboat/qmp" for QEMU VMs, and
// on a recovery host "qemu_vm_dir": "/srv/recovered", "qemu_args":
// ["-machine", "q35", "-m", "4096"], "qemu_net_args": "-nic bridge,br=br0")
//
// A flag on the command line wins over its environment variable, which wins
// over the file, which wins over the default.
type fileConfig struct {
	StateDir   string `json:"state_dir"`
	Driver     string `json:"driver"`
	VMRoot     string `json:"vm_root"`
	QMPDir     string `json:"qmp_dir"`
	QEMUVMDir  string `json:"qemu_vm_dir"`
	QEMUBinary string `json:"qemu_binary"`
	// QEMUArgs and QEMUNetArgs are shell words ("-m 2048") or a JSON list
	// (["-m", "2048"]).
	QEMUArgs      qemuArgs `json:"qemu_args"`
	QEMUNetArgs   qemuArgs `json:"qemu_net_args"`
	MaxTasks      int      `json:"max_tasks"`
	StorageConc   int      `json:"storage_concurrency"`
	FreezeCommand string   `json:"freeze_command"`
	ThawCommand   string   `json:"thaw_command"`
	StartCommand  string   `json:"start_command"`
	StopCommand   string   `json:"stop_command"`
	LogFormat     string   `json:"log_format"`
	LogLevel      string   `json:"log_level"`
}

// configSetting ties a config field to its flag and environment variable.
type configSetting struct {
	flag, env, value string
}

func (c fileConfig) settings() []configSetting {
	maxTasks := ""
	if c.MaxTasks != 0 {
		maxTasks = strconv.Itoa(c.MaxTasks)
	}
	storageConc := ""
	if c.StorageConc != 0 {
		storageConc = strconv.Itoa(c.StorageConc)
	}
	return []configSetting{
		{"state-dir", "LIFEBOAT_AGENT_STATE_DIR", c.StateDir},
		{"driver", "LIFEBOAT_AGENT_DRIVER", c.Driver},
		{"vm-root", "LIFEBOAT_AGENT_VM_ROOT", c.VMRoot},
		{"qmp-dir", "LIFEBOAT_AGENT_QMP_DIR", c.QMPDir},
		{"qemu-vm-dir", "LIFEBOAT_AGENT_QEMU_VM_DIR", c.QEMUVMDir},
		{"qemu-binary", "LIFEBOAT_AGENT_QEMU_BINARY", c.QEMUBinary},
		{"qemu-args", "LIFEBOAT_AGENT_QEMU_ARGS", string(c.QEMUArgs)},
		{"qemu-net-args", "LIFEBOAT_AGENT_QEMU_NET_ARGS", string(c.QEMUNetArgs)},
		{"max-tasks", "LIFEBOAT_AGENT_MAX_TASKS", maxTasks},
		{"storage-concurrency", "LIFEBOAT_AGENT_STORAGE_CONCURRENCY", storageConc},
		{"freeze-command", "LIFEBOAT_AGENT_FREEZE_COMMAND", c.FreezeCommand},
		{"thaw-command", "LIFEBOAT_AGENT_THAW_COMMAND", c.ThawCommand},
		{"start-command", "LIFEBOAT_AGENT_START_COMMAND", c.StartCommand},
		{"stop-command", "LIFEBOAT_AGENT_STOP_COMMAND", c.StopCommand},
		{"log-format", "LIFEBOAT_LOG_FORMAT", c.LogFormat},
		{"log-level", "LIFEBOAT_LOG_LEVEL", c.LogLevel},
	}
}

// applyConfigFile reads path and sets every flag that neither the command
// line nor the environment set.
func applyConfigFile(fs *flag.FlagSet, path string, getenv func(string) string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the config file: %w", err)
	}
	var c fileConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("config file %s: %w (known keys: state_dir, driver, vm_root, qmp_dir, qemu_vm_dir, qemu_binary, qemu_args, qemu_net_args, max_tasks, storage_concurrency, freeze_command, thaw_command, start_command, stop_command, log_format, log_level)", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range c.settings() {
		if s.value == "" || set[s.flag] || getenv(s.env) != "" {
			continue
		}
		if fs.Lookup(s.flag) == nil {
			continue
		}
		if err := fs.Set(s.flag, s.value); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, s.flag, err)
		}
	}
	return nil
}

// qemuArgs is QEMU arguments in the config file: a string of shell words,
// or a JSON list of strings, kept as the flag's text (which takes both).
type qemuArgs string

func (a *qemuArgs) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = qemuArgs(s)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("QEMU arguments must be a string of shell words or a list of strings, not %s", b)
	}
	*a = qemuArgs(b)
	return nil
}

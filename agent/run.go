package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/driver/qemu"
	"github.com/lifeboat-dr/lifeboat/agent/runner"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
)

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", envOr(getenv, "LIFEBOAT_AGENT_STATE_DIR", ""), "the agent's state directory (LIFEBOAT_AGENT_STATE_DIR)")
	driverName := fs.String("driver", envOr(getenv, "LIFEBOAT_AGENT_DRIVER", filedisk.Name), "the hypervisor driver: filedisk or qemu (LIFEBOAT_AGENT_DRIVER)")
	vmRoot := fs.String("vm-root", envOr(getenv, "LIFEBOAT_AGENT_VM_ROOT", ""), "filedisk: the directory whose subdirectories are VMs (LIFEBOAT_AGENT_VM_ROOT)")
	qmpDir := fs.String("qmp-dir", envOr(getenv, "LIFEBOAT_AGENT_QMP_DIR", ""), "qemu: the directory of the VMs' QMP monitors, one NAME.qmp unix socket per VM (LIFEBOAT_AGENT_QMP_DIR)")
	qemuVMDir := fs.String("qemu-vm-dir", envOr(getenv, "LIFEBOAT_AGENT_QEMU_VM_DIR", ""), "qemu: where the VMs that failovers make on this host live, one directory each (default STATE-DIR/qemu-vms) (LIFEBOAT_AGENT_QEMU_VM_DIR)")
	qemuBinary := fs.String("qemu-binary", envOr(getenv, "LIFEBOAT_AGENT_QEMU_BINARY", qemu.DefaultBinary), "qemu: the QEMU that starts those VMs (LIFEBOAT_AGENT_QEMU_BINARY)")
	qemuArgs := fs.String("qemu-args", envOr(getenv, "LIFEBOAT_AGENT_QEMU_ARGS", ""), "qemu: the machine arguments of every VM it starts, as shell words or a JSON list (default \"-machine q35 -m 1024 -smp 1 -accel kvm\", tcg without a usable /dev/kvm) (LIFEBOAT_AGENT_QEMU_ARGS)")
	qemuNetArgs := fs.String("qemu-net-args", envOr(getenv, "LIFEBOAT_AGENT_QEMU_NET_ARGS", ""), "qemu: their network, as shell words or a JSON list (default \"-nic user,model=virtio-net-pci\"); a test failover's VM gets -nic none instead (LIFEBOAT_AGENT_QEMU_NET_ARGS)")
	maxTasks := fs.Int("max-tasks", envInt(getenv, "LIFEBOAT_AGENT_MAX_TASKS", runner.DefaultMaxTasks()), "how many tasks run at once; default two per core, at least 4 (LIFEBOAT_AGENT_MAX_TASKS)")
	storageConc := fs.Int("storage-concurrency", envInt(getenv, "LIFEBOAT_AGENT_STORAGE_CONCURRENCY", 8), "Azure Blob targets: page writes in flight per disk (LIFEBOAT_AGENT_STORAGE_CONCURRENCY)")
	configFile := fs.String("config", envOr(getenv, "LIFEBOAT_AGENT_CONFIG", ""), "a JSON file with any of: state_dir, driver, vm_root, qmp_dir, qemu_vm_dir, qemu_binary, qemu_args, qemu_net_args, max_tasks, storage_concurrency, freeze_command, thaw_command, start_command, stop_command, log_format, log_level; flags and environment win over it (LIFEBOAT_AGENT_CONFIG)")
	freeze := fs.String("freeze-command", envOr(getenv, "LIFEBOAT_AGENT_FREEZE_COMMAND", ""), "filedisk: command that quiesces a VM before an app-consistent point (run with LIFEBOAT_VM_ID and LIFEBOAT_VM_DIR set; exit 0 = frozen)")
	thaw := fs.String("thaw-command", envOr(getenv, "LIFEBOAT_AGENT_THAW_COMMAND", ""), "filedisk: command that resumes the VM after it (always run after a freeze)")
	start := fs.String("start-command", envOr(getenv, "LIFEBOAT_AGENT_START_COMMAND", ""), "filedisk: command that starts a VM (failover; run with LIFEBOAT_VM_ID, LIFEBOAT_VM_DIR and LIFEBOAT_ISOLATED=1 for a test failover)")
	stop := fs.String("stop-command", envOr(getenv, "LIFEBOAT_AGENT_STOP_COMMAND", ""), "filedisk: command that shuts a VM down gracefully (planned failover)")
	logFormat := fs.String("log-format", envOr(getenv, "LIFEBOAT_LOG_FORMAT", "text"), "text or json")
	logLevel := fs.String("log-level", envOr(getenv, "LIFEBOAT_LOG_LEVEL", "info"), "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile, getenv); err != nil {
			return err
		}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	switch {
	case *stateDir == "":
		return errors.New("run needs --state-dir")
	case *driverName != filedisk.Name && *driverName != qemu.Name:
		return fmt.Errorf("--driver %q is not known; this agent has: filedisk, qemu", *driverName)
	case *driverName == filedisk.Name && *vmRoot == "":
		return errors.New("--driver filedisk needs --vm-root")
	case *driverName == qemu.Name && *qmpDir == "":
		return errors.New("--driver qemu needs --qmp-dir")
	case *maxTasks < 1 || *maxTasks > 64:
		return errors.New("--max-tasks must be from 1 to 64")
	case *storageConc < 1 || *storageConc > 64:
		return errors.New("--storage-concurrency must be from 1 to 64")
	case (*freeze == "") != (*thaw == ""):
		return errors.New("give both --freeze-command and --thaw-command, or neither")
	}
	stateAbs, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	dir, err := state.Open(stateAbs)
	if err != nil {
		return err
	}
	var drv driver.Driver
	switch *driverName {
	case qemu.Name:
		sockets, err := filepath.Abs(*qmpDir)
		if err != nil {
			return err
		}
		// Captures' NBD sockets and fleecing overlays go under the state
		// directory (qemu-captures/VM), which needs room for the disks of
		// the VM being captured.
		q := &qemu.Driver{QMPDir: sockets, WorkDir: filepath.Join(stateAbs, "qemu-captures"), StateDir: stateAbs, Log: log, Binary: *qemuBinary}
		if err := configureRecovery(q, stateAbs, *qemuVMDir, *qemuArgs, *qemuNetArgs); err != nil {
			return err
		}
		defer q.Close()
		drv = q
	default:
		// Paths go to the vault (disks) and into checks' messages: absolute.
		root, err := filepath.Abs(*vmRoot)
		if err != nil {
			return err
		}
		drv = &filedisk.Driver{Root: root, Log: log, FreezeCommand: *freeze, ThawCommand: *thaw, StartCommand: *start, StopCommand: *stop}
	}
	a, err := runner.New(dir, drv, runner.Options{MaxTasks: *maxTasks}, log)
	if err != nil {
		return err
	}
	a.Register(tasks.New(tasks.Deps{Driver: drv, State: dir, Vault: a.Vault(), Clock: a, StorageConcurrency: *storageConc, Version: runner.Version}).Kinds())
	id := a.Identity()
	fmt.Fprintf(stdout, "lifeboat-agent %s: host %s, vault %s\n", runner.Version, id.HostID, id.VaultURL)
	return a.Run(ctx)
}

func envInt(getenv func(string) string, name string, def int) int {
	if n, err := strconv.Atoi(getenv(name)); err == nil {
		return n
	}
	return def
}

// configureRecovery sets up the qemu driver as a recovery host: where the
// VMs it makes live, and the QEMU arguments it starts them with.
func configureRecovery(q *qemu.Driver, stateDir, vmDir, machine, net string) error {
	if vmDir == "" {
		vmDir = filepath.Join(stateDir, "qemu-vms")
	}
	abs, err := filepath.Abs(vmDir)
	if err != nil {
		return err
	}
	q.VMDir = abs
	if machine != "" {
		if q.MachineArgs, err = qemu.ParseArgs(machine); err != nil {
			return fmt.Errorf("--qemu-args: %w", err)
		}
	}
	if net != "" {
		if q.NetArgs, err = qemu.ParseArgs(net); err != nil {
			return fmt.Errorf("--qemu-net-args: %w", err)
		}
	}
	return nil
}

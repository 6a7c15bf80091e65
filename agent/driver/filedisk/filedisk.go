// Package filedisk is the simplest driver: VMs are directories of raw disk
// images. It serves tests, demos and any hypervisor whose disks are plain
// files.
//
// Conventions, under the VM root:
//   - each directory is a VM; its name is the VM's name;
//   - an optional vm.json {"id": "..."} gives a stable id, else the id is
//     the directory name; a vm.json that cannot be read is logged as a
//     warning and the directory name is used, so the VM stays visible;
//   - a VM that a failover made (Materialize) has a "lifeboat" record in
//     its vm.json saying what it was made of; only such VMs are replaced
//     or removed (materialize.go);
//   - the VM's disks are its regular files ending in .img (raw images);
//   - a file named "running" in the directory marks the VM as running
//     (a hypervisor hook can create and remove it), else it is off.
//
// Changes are found by hashing every block against the replica's stored
// hashes: filedisk keeps no change journal, so there is none to lose. How
// consistent a capture is depends on what holds the guest's writes; see
// capture.go.
package filedisk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Driver lists and captures the VMs under Root.
type Driver struct {
	Root string
	Log  *slog.Logger
	// FreezeCommand and ThawCommand quiesce and resume a VM around an
	// app-consistent capture; without them the driver cannot quiesce.
	FreezeCommand, ThawCommand string
	// StartCommand and StopCommand start and stop a VM (a hypervisor
	// hook); run with LIFEBOAT_VM_ID and LIFEBOAT_VM_DIR, and
	// LIFEBOAT_ISOLATED=1 for a test failover's start.
	StartCommand, StopCommand string

	warnedNoQuiesce sync.Map // VM ids already told they get no app-consistent points
	warnedNoReflink sync.Map // VM directories already found without reflinks
}

var _ driver.Driver = (*Driver)(nil)

// Name is the driver's name as agents report it.
const Name = "filedisk"

// Name implements driver.Driver.
func (d *Driver) Name() string { return Name }

// DataDir is the VM root.
func (d *Driver) DataDir() string { return d.Root }

// CanQuiesce reports whether app-consistent points are possible.
func (d *Driver) CanQuiesce() bool { return d.FreezeCommand != "" && d.ThawCommand != "" }

// runHook runs one of the configured commands for a VM.
func runHook(ctx context.Context, command, vmID, dir string, extraEnv ...string) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(append(os.Environ(), "LIFEBOAT_VM_ID="+vmID, "LIFEBOAT_VM_DIR="+dir), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%q: %v: %s", command, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// freeze quiesces the VM and returns the function that resumes it, which
// must always be called.
func (d *Driver) freeze(ctx context.Context, vmID, dir string) (thaw func() error, err error) {
	if err := runHook(ctx, d.FreezeCommand, vmID, dir); err != nil {
		// A freeze that failed half-way is thawed all the same.
		_ = runHook(context.WithoutCancel(ctx), d.ThawCommand, vmID, dir)
		return nil, fmt.Errorf("freeze: %w", err)
	}
	return func() error { return runHook(context.WithoutCancel(ctx), d.ThawCommand, vmID, dir) }, nil
}

// VMDir finds the directory of the VM with id vmID.
func (d *Driver) VMDir(vmID string) (string, error) {
	vms, err := d.Inventory(context.Background())
	if err != nil {
		return "", err
	}
	for _, vm := range vms {
		if vm.ID == vmID {
			return filepath.Join(d.Root, vm.Name), nil
		}
	}
	return "", fmt.Errorf("%w: VM %s is not under %s", driver.ErrVMNotFound, vmID, d.Root)
}

// Check says whether the VM root can be used, and opens every disk.
func (d *Driver) Check(ctx context.Context) (string, error) {
	if err := d.checkRoot(); err != nil {
		return "", err
	}
	vms, err := d.Inventory(ctx)
	if err != nil {
		return "", err
	}
	disks := 0
	for _, vm := range vms {
		for _, disk := range vm.Disks {
			if err := readable(disk.Path); err != nil {
				return "", fmt.Errorf("disk %s of VM %s %w", disk.Path, vm.Name, err)
			}
			disks++
		}
	}
	return fmt.Sprintf("%d VM(s), %d disk(s), all readable", len(vms), disks), nil
}

func (d *Driver) checkRoot() error {
	fi, err := os.Stat(d.Root)
	if err != nil {
		return fmt.Errorf("VM root %s: %w", d.Root, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("VM root %s is not a directory", d.Root)
	}
	if _, err := os.ReadDir(d.Root); err != nil {
		return fmt.Errorf("VM root %s cannot be read: %w", d.Root, err)
	}
	return nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot be opened: %w", err)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 4096)); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("cannot be read: %w", err)
	}
	return nil
}

// CheckVM says whether the VM's disks are there, raw files, readable and
// of the sizes the vault expects.
func (d *Driver) CheckVM(_ context.Context, _ string, disks []driver.DiskRef) error {
	var problems []string
	for _, disk := range disks {
		fi, err := os.Stat(disk.Path)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s cannot be opened: %v", disk.Path, err))
		case !fi.Mode().IsRegular():
			problems = append(problems, disk.Path+" is not a regular file (raw image)")
		case fi.Size() != disk.SizeBytes:
			problems = append(problems, fmt.Sprintf("%s is %d bytes, the vault expects %d; wait for the next inventory", disk.Path, fi.Size(), disk.SizeBytes))
		default:
			if err := readable(disk.Path); err != nil {
				problems = append(problems, disk.Path+" "+err.Error())
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Inventory lists every VM with its disks, sorted by id.
func (d *Driver) Inventory(context.Context) ([]agentproto.VM, error) {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return nil, fmt.Errorf("list VMs in %s: %w", d.Root, err)
	}
	var vms []agentproto.VM
	ids := map[string]string{}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue // hidden: a capture's or a materialization's work in progress
		}
		dir := filepath.Join(d.Root, e.Name())
		vm, err := d.readVM(dir, e.Name())
		if err != nil {
			d.logger().Warn("VM directory skipped", "dir", dir, slog.Any("error", err))
			continue
		}
		vm.ID = d.stableID(dir, vm.ID)
		if other, dup := ids[vm.ID]; dup {
			d.logger().Warn("VM directory skipped: its id is taken", "dir", dir, "id", vm.ID, "taken_by", other)
			continue
		}
		ids[vm.ID] = dir
		vms = append(vms, vm)
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
	return vms, nil
}

func (d *Driver) readVM(dir, name string) (agentproto.VM, error) {
	vm := agentproto.VM{ID: name, Name: name, PowerState: agentproto.PowerOff, Disks: []agentproto.Disk{}}
	if _, err := os.Stat(filepath.Join(dir, runningMarker)); err == nil {
		vm.PowerState = agentproto.PowerRunning
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return vm, err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".img") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return vm, err
		}
		vm.Disks = append(vm.Disks, agentproto.Disk{Path: filepath.Join(dir, e.Name()), SizeBytes: fi.Size(), Format: "raw"})
	}
	return vm, nil
}

// stableID is the id vm.json gives, or else the directory's name. A broken
// vm.json is not a reason to hide the VM: it is reported under its
// directory's name and the warning says what to fix.
func (d *Driver) stableID(dir, name string) string {
	path := filepath.Join(dir, "vm.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return name
	}
	var meta struct {
		ID string `json:"id"`
	}
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err == nil && strings.TrimSpace(meta.ID) == "" {
		err = errors.New(`the "id" is missing or empty`)
	}
	if err != nil {
		d.logger().Warn(`vm.json must be {"id": "..."}; using the directory name as the VM's id`, "file", path, slog.Any("error", err))
		return name
	}
	return strings.TrimSpace(meta.ID)
}

func (d *Driver) logger() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

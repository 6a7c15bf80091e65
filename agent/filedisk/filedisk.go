// Package filedisk is the simplest driver: VMs are directories of raw disk
// images. It serves tests, demos and any hypervisor whose disks are plain
// files.
//
// Conventions, under the VM root:
//   - each directory is a VM; its name is the VM's name;
//   - an optional vm.json {"id": "..."} gives a stable id, else the id is
//     the directory name; a vm.json that cannot be read is logged as a
//     warning and the directory name is used, so the VM stays visible;
//   - the VM's disks are its regular files ending in .img (raw images);
//   - a file named "running" in the directory marks the VM as running
//     (a hypervisor hook can create and remove it), else it is off.
package filedisk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Driver lists the VMs under Root.
type Driver struct {
	Root string
	Log  *slog.Logger
	// FreezeCommand and ThawCommand quiesce and resume a VM around an
	// app-consistent point; without them the driver cannot quiesce.
	FreezeCommand, ThawCommand string
}

// CanQuiesce reports whether app-consistent points are possible.
func (d *Driver) CanQuiesce() bool { return d.FreezeCommand != "" && d.ThawCommand != "" }

// Freeze quiesces the VM whose directory is name (its id is vmID) and
// returns the function that resumes it, which must always be called.
func (d *Driver) Freeze(ctx context.Context, vmID, dir string) (thaw func() error, err error) {
	run := func(ctx context.Context, command string) error {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		cmd.Env = append(os.Environ(), "LIFEBOAT_VM_ID="+vmID, "LIFEBOAT_VM_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%q: %v: %s", command, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := run(ctx, d.FreezeCommand); err != nil {
		// A freeze that failed half-way is thawed all the same.
		_ = run(context.WithoutCancel(ctx), d.ThawCommand)
		return nil, fmt.Errorf("freeze: %w", err)
	}
	return func() error { return run(context.WithoutCancel(ctx), d.ThawCommand) }, nil
}

// VMDir finds the directory of the VM with id vmID.
func (d *Driver) VMDir(vmID string) (string, error) {
	vms, err := d.Inventory()
	if err != nil {
		return "", err
	}
	for _, vm := range vms {
		if vm.ID == vmID && len(vm.Disks) > 0 {
			return filepath.Dir(vm.Disks[0].Path), nil
		}
	}
	return "", fmt.Errorf("VM %s is not under %s", vmID, d.Root)
}

// Name is the driver's name as agents report it.
const Name = "filedisk"

// Check says whether the VM root can be used.
func (d *Driver) Check() error {
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

// Inventory lists every VM with its disks, sorted by id.
func (d *Driver) Inventory() ([]agentproto.VM, error) {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return nil, fmt.Errorf("list VMs in %s: %w", d.Root, err)
	}
	var vms []agentproto.VM
	ids := map[string]string{}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
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
	vm := agentproto.VM{ID: name, Name: name, PowerState: "Off", Disks: []agentproto.Disk{}}
	if _, err := os.Stat(filepath.Join(dir, "running")); err == nil {
		vm.PowerState = "Running"
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

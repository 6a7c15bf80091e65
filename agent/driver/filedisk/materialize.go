package filedisk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// materializePrefix names the hidden directory under the VM root where a
// VM is written before it appears whole, by rename. Inventory ignores it;
// Recover removes what a crashed agent left.
const materializePrefix = ".lifeboat-materialize-"

// replaceShutdownTimeout bounds the shutdown of a VM that a materialize
// replaces: the payload has no timeout of its own, and the VM is one
// Lifeboat made, whose guest is the protected VM's.
const replaceShutdownTimeout = 5 * time.Minute

// vmMeta is vm.json.
type vmMeta struct {
	ID string `json:"id"`
	// Lifeboat is set only in VMs that Materialize made.
	Lifeboat *origin `json:"lifeboat,omitempty"`
}

// origin is what a materialized VM was made of.
type origin struct {
	SourceVMID     string    `json:"source_vm_id"`
	PointID        string    `json:"point_id"`
	Test           bool      `json:"test"`
	MaterializedAt time.Time `json:"materialized_at"`
}

// readOrigin is the "lifeboat" record of the VM in dir: nil, with the
// reason, when there is none.
func readOrigin(dir string) (*origin, error) {
	b, err := os.ReadFile(filepath.Join(dir, "vm.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("it has no vm.json")
	}
	if err != nil {
		return nil, err
	}
	var meta vmMeta
	if err := json.Unmarshal(b, &meta); err != nil {
		return nil, fmt.Errorf("its vm.json cannot be read: %w", err)
	}
	if meta.Lifeboat == nil {
		return nil, errors.New(`its vm.json has no "lifeboat" record`)
	}
	return meta.Lifeboat, nil
}

// madeOf says whether a VM's record names the spec's source and point.
func (o *origin) madeOf(spec driver.MaterializeSpec) bool {
	return o != nil && o.SourceVMID == spec.SourceVMID && o.PointID == spec.PointID && o.Test == spec.Test
}

// Materialize implements driver.Driver: the VM's directory is written
// under a hidden name (disks sparse, vm.json with its id and origin, all
// fsynced) and appears by rename, whole or not at all.
func (d *Driver) Materialize(ctx context.Context, spec driver.MaterializeSpec) (driver.Materialized, error) {
	if !safeName(spec.Name) || strings.TrimSpace(spec.ID) == "" {
		return driver.Materialized{}, fmt.Errorf("VM name %q or id %q cannot be a VM directory", spec.Name, spec.ID)
	}
	if spec.SourceVMID == "" || spec.PointID == "" {
		return driver.Materialized{}, fmt.Errorf("VM %s: a materialized VM must say its source VM and recovery point", spec.ID)
	}
	final := filepath.Join(d.Root, spec.Name)
	replacing, done, err := d.checkExisting(ctx, final, spec)
	if err != nil || done != nil {
		return deref(done), err
	}
	tmp, nonce, err := diskfile.HiddenDir(d.Root, materializePrefix)
	if err != nil {
		return driver.Materialized{}, d.hostError(spec, err)
	}
	// After a failure, and after an exchange (which leaves the old VM here).
	defer os.RemoveAll(tmp)
	written, err := d.writeVM(ctx, tmp, spec)
	if err != nil {
		return driver.Materialized{}, err
	}
	// The VM it replaces runs until its successor is written, so a failed
	// write leaves it as it was. It is the VM in final (checkExisting says
	// so), so the root is not scanned again to find it.
	if replacing {
		if err := d.shutdownDir(ctx, spec.ID, final, replaceShutdownTimeout); err != nil {
			return driver.Materialized{}, diskfile.Prefixed("VM "+spec.ID+" is not replaced", err)
		}
	}
	if err := diskfile.SwapIn(tmp, final, filepath.Join(d.Root, materializePrefix+"old-"+nonce), replacing); err != nil {
		return driver.Materialized{}, err
	}
	if err := diskfile.SyncDir(d.Root); err != nil {
		return driver.Materialized{}, err
	}
	vm, err := d.readVMWithID(final, spec.Name)
	return driver.Materialized{VM: vm, BytesWritten: written}, err
}

func deref(m *driver.Materialized) driver.Materialized {
	if m == nil {
		return driver.Materialized{}
	}
	return *m
}

// checkExisting looks at what holds the VM's name or id already. It
// returns the VM as it is when it was made of the same source and point
// (done), whether there is one to replace, or why it may not be.
func (d *Driver) checkExisting(ctx context.Context, final string, spec driver.MaterializeSpec) (replacing bool, done *driver.Materialized, err error) {
	vms, err := d.Inventory(ctx)
	if err != nil {
		return false, nil, err
	}
	for _, vm := range vms {
		if vm.ID == spec.ID && vm.Name != spec.Name {
			return false, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
				"VM id %s is taken on this host by %s; remove or rename that VM, or choose another recovery host", spec.ID, filepath.Join(d.Root, vm.Name))}
		}
	}
	if _, err := os.Lstat(final); errors.Is(err, fs.ErrNotExist) {
		return false, nil, nil
	} else if err != nil {
		return false, nil, err
	}
	id := d.stableID(final, spec.Name)
	made, why := readOrigin(final)
	switch {
	case id == spec.ID && made.madeOf(spec):
		vm, err := d.readVMWithID(final, spec.Name)
		return false, &driver.Materialized{VM: vm, Existing: true}, err
	case !spec.Replace:
		return false, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s exists already on this host (VM %s); remove or rename it there, or choose another recovery host", final, id)}
	case id != spec.ID:
		return false, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s holds VM %s, not %s, so it is not replaced; remove or rename it there, or choose another recovery host", final, id, spec.ID)}
	case made == nil:
		return false, nil, &agentproto.TaskError{Code: agentproto.CodeVMNotMaterialized, Message: fmt.Sprintf(
			"VM %s in %s was not made by a Lifeboat failover (%v), so it is not replaced; remove or rename it on the host, or choose another recovery host", id, final, why)}
	case made.SourceVMID != spec.SourceVMID:
		return false, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s holds the recovered VM of %s, not of %s, so it is not replaced; remove it there, or choose another recovery host", final, made.SourceVMID, spec.SourceVMID)}
	}
	return true, nil, nil
}

// writeVM writes the VM's disks and vm.json into dir and syncs them, and
// returns the bytes of data written.
func (d *Driver) writeVM(ctx context.Context, dir string, spec driver.MaterializeSpec) (int64, error) {
	var written int64
	for _, disk := range spec.Disks {
		if !safeName(disk.Name) {
			return written, fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		n, err := diskfile.WriteSparse(ctx, filepath.Join(dir, disk.Name+".img"), disk.Data, disk.SizeBytes)
		written += n
		var re *diskfile.ReadError
		if errors.As(err, &re) {
			return written, fmt.Errorf("read the image of disk %s: %w", disk.Name, re)
		}
		if err != nil {
			return written, fmt.Errorf("write disk %s: %w", disk.Name, d.hostError(spec, err))
		}
	}
	meta, _ := json.Marshal(vmMeta{ID: spec.ID, Lifeboat: &origin{SourceVMID: spec.SourceVMID, PointID: spec.PointID, Test: spec.Test,
		MaterializedAt: time.Now().UTC()}})
	if err := diskfile.WriteSynced(filepath.Join(dir, "vm.json"), meta); err != nil {
		return written, d.hostError(spec, err)
	}
	return written, d.hostError(spec, diskfile.SyncDir(dir))
}

// hostError says so when the VM root is full: freeing space is the
// operator's to do, so it is not retried by itself.
func (d *Driver) hostError(spec driver.MaterializeSpec, err error) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	var total int64
	for _, disk := range spec.Disks {
		total += disk.SizeBytes
	}
	return &agentproto.TaskError{Code: agentproto.CodeRecoveryHostFull, Message: fmt.Sprintf(
		"the VM root %s has no room for the disks of VM %s (%d bytes, less their runs of zeros): %v. Nothing of the VM was left behind; free space on this host or choose another recovery host, then restart the job",
		d.Root, spec.Name, total, err)}
}

func (d *Driver) readVMWithID(dir, name string) (agentproto.VM, error) {
	vm, err := d.readVM(dir, name)
	if err != nil {
		return vm, err
	}
	vm.ID = d.stableID(dir, name)
	return vm, nil
}

// safeName is a name that is one path element and not hidden.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`) && !strings.HasPrefix(name, ".")
}

package qemu

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// A recovery host's VMs (the ones Materialize makes) live under VMDir,
// one directory per VM, named by the VM's name:
//
//	VMDIR/NAME/vm.json     the VM's id, name, disks and what it was made of
//	VMDIR/NAME/DISK.img    its disks, raw and sparse
//	VMDIR/NAME/qemu.pid    while its QEMU runs (Start, Launch)
//	VMDIR/NAME/serial.log  its guest's serial console
//
// Its QEMU's monitor is QMPDir/ID.qmp like any VM's, so while it runs it
// is listed, captured and shut down as the others are. Only VMs with a
// vm.json are replaced, written back into or removed: Lifeboat deletes
// only what it made.

// Hidden directories under VMDir: a VM being written (it appears whole,
// by rename) and one being deleted. Recover removes what a crashed agent
// left of either.
const (
	materializePrefix = ".lifeboat-materialize-"
	removePrefix      = ".lifeboat-remove-"
)

// recordFile is a made VM's record in its directory.
const recordFile = "vm.json"

// replaceShutdownTimeout bounds the shutdown of a VM that a materialize
// replaces (the payload has no timeout of its own).
const replaceShutdownTimeout = 5 * time.Minute

// vmRecord is vm.json.
type vmRecord struct {
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	Lifeboat *origin      `json:"lifeboat"`
	Disks    []recordDisk `json:"disks"`
	// Hydrating: the disks are overlays whose data is still partly on the
	// recovery point (an instant failover's copy runs; instant.go).
	Hydrating bool `json:"hydrating,omitempty"`
}

// origin is what a made VM was made of.
type origin struct {
	SourceVMID     string    `json:"source_vm_id"`
	PointID        string    `json:"point_id"`
	Test           bool      `json:"test"`
	MaterializedAt time.Time `json:"materialized_at"`
}

// recordDisk is one disk of a made VM, in the guest's order.
type recordDisk struct {
	Name   string `json:"name"`   // the disk's name (the point's)
	File   string `json:"file"`   // its image, in the VM's directory
	Format string `json:"format"` // raw, or qcow2 (an overlay)
}

// madeVM is a VM of VMDir: its directory and record.
type madeVM struct {
	dir string
	rec vmRecord
}

func (mv *madeVM) madeOf(spec driver.MaterializeSpec) bool {
	o := mv.rec.Lifeboat
	return o != nil && o.SourceVMID == spec.SourceVMID && o.PointID == spec.PointID && o.Test == spec.Test
}

func (mv *madeVM) drives() []Drive {
	var out []Drive
	for _, dk := range mv.rec.Disks {
		out = append(out, Drive{File: filepath.Join(mv.dir, dk.File), Format: dk.Format})
	}
	return out
}

// readRecord reads the record of the VM in dir; an error says why it is
// not a VM that Lifeboat made.
func readRecord(dir string) (*madeVM, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("it has no %s", recordFile)
	}
	if err != nil {
		return nil, err
	}
	var rec vmRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("its %s cannot be read: %w", recordFile, err)
	}
	if rec.Lifeboat == nil || rec.ID == "" {
		return nil, fmt.Errorf(`its %s has no "id" or no "lifeboat" record`, recordFile)
	}
	return &madeVM{dir: dir, rec: rec}, nil
}

// madeVMs lists the VMs under VMDir by id. A directory that is not one
// (no record) is logged and left out; none at all when VMDir is unset or
// not there yet.
func (d *Driver) madeVMs() (map[string]*madeVM, error) {
	out := map[string]*madeVM{}
	if d.VMDir == "" {
		return out, nil
	}
	entries, err := os.ReadDir(d.VMDir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the recovered VMs in %s: %w", d.VMDir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		mv, err := readRecord(filepath.Join(d.VMDir, e.Name()))
		if err != nil {
			d.logger().Warn("directory in the VM directory skipped: it is not a VM Lifeboat made", "dir", filepath.Join(d.VMDir, e.Name()), slog.Any("error", err))
			continue
		}
		if other := out[mv.rec.ID]; other != nil {
			d.logger().Warn("VM directory skipped: its id is taken", "dir", mv.dir, "id", mv.rec.ID, "taken_by", other.dir)
			continue
		}
		out[mv.rec.ID] = mv
	}
	return out, nil
}

// made finds the VM of that id under VMDir, or nil.
func (d *Driver) made(vmID string) (*madeVM, error) {
	vms, err := d.madeVMs()
	if err != nil {
		return nil, err
	}
	return vms[vmID], nil
}

// offlineVM is a made VM whose monitor does not answer, as the inventory
// lists it: Off when its QEMU is not running (it stopped, was killed, the
// host restarted), Unknown when it runs and its monitor does not answer.
func (mv *madeVM) offlineVM() agentproto.VM {
	vm := agentproto.VM{ID: mv.rec.ID, Name: mv.rec.Name, PowerState: agentproto.PowerOff, Disks: []agentproto.Disk{}}
	if qemuPID(mv.dir) != 0 {
		vm.PowerState = agentproto.PowerUnknown
	}
	for _, dk := range mv.rec.Disks {
		path := filepath.Join(mv.dir, dk.File)
		size, _ := virtualSize(path, formatOr(dk.Format))
		vm.Disks = append(vm.Disks, agentproto.Disk{Path: path, SizeBytes: size, Format: formatOr(dk.Format)})
	}
	return vm
}

// virtualSize is the size of the disk an image holds: a raw file's size,
// or the size in a qcow2 header (big-endian, at byte 24).
func virtualSize(path, format string) (int64, error) {
	switch format {
	case "raw":
		fi, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	case "qcow2":
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		var h [32]byte
		if _, err := f.ReadAt(h[:], 0); err != nil {
			return 0, err
		}
		if string(h[:4]) != "QFI\xfb" {
			return 0, fmt.Errorf("%s is not a qcow2 image", path)
		}
		return int64(binary.BigEndian.Uint64(h[24:32])), nil
	}
	return 0, fmt.Errorf("%s: images of format %s are not read", path, format)
}

func formatOr(f string) string {
	if f == "" {
		return "raw"
	}
	return f
}

// listMade is a made VM as the inventory lists it: from its monitor when
// it answers, else from its record.
func (d *Driver) listMade(ctx context.Context, mv *madeVM) agentproto.VM {
	if _, err := os.Lstat(d.socket(mv.rec.ID)); err == nil {
		if vm, err := d.vm(ctx, mv.rec.ID); err == nil {
			vm.Name = mv.rec.Name
			return vm
		}
	}
	return mv.offlineVM()
}

// offline says, for a made VM whose monitor does not answer, its power
// state (Off, or Unknown while its QEMU runs); ok is false for any other
// VM.
func (d *Driver) offline(ctx context.Context, vmID string) (state string, ok bool) {
	mv, err := d.made(vmID)
	if err != nil || mv == nil {
		return "", false
	}
	if _, err := d.monitor(ctx, vmID); err == nil {
		return "", false
	}
	return mv.offlineVM().PowerState, true
}

// recoverVMDir removes what a materialize or a removal cut short by an
// agent's death left under VMDir. It runs at start, before any task.
func (d *Driver) recoverVMDir() error {
	if d.VMDir == "" {
		return nil
	}
	if err := os.MkdirAll(d.VMDir, 0o750); err != nil {
		return fmt.Errorf("the VM directory %s: %w", d.VMDir, err)
	}
	entries, err := os.ReadDir(d.VMDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && (strings.HasPrefix(e.Name(), materializePrefix) || strings.HasPrefix(e.Name(), removePrefix)) {
			if err := os.RemoveAll(filepath.Join(d.VMDir, e.Name())); err != nil {
				d.logger().Warn("what an interrupted materialize or removal left could not be deleted", "dir", filepath.Join(d.VMDir, e.Name()), slog.Any("error", err))
			}
		}
	}
	return nil
}

// Materialize implements driver.Driver: the VM's directory is written
// under a hidden name in VMDir (disks raw and sparse, vm.json with its id,
// name, disks and origin, all synced) and appears by rename, whole or not
// at all. It does not start the VM (Start does).
func (d *Driver) Materialize(ctx context.Context, spec driver.MaterializeSpec) (driver.Materialized, error) {
	final, old, done, err := d.prepareMaterialize(ctx, spec)
	if err != nil || done != nil {
		return deref(done), err
	}
	d.warnIfSmall(spec)
	tmp, nonce, err := diskfile.HiddenDir(d.VMDir, materializePrefix)
	if err != nil {
		return driver.Materialized{}, d.hostError(spec, err)
	}
	// After a failure, and after an exchange (which leaves the old VM here).
	defer os.RemoveAll(tmp)
	written, err := d.writeVM(ctx, tmp, spec)
	if err != nil {
		return driver.Materialized{}, err
	}
	mv, err := d.swapIn(ctx, spec, tmp, final, nonce, old)
	if err != nil {
		return driver.Materialized{}, err
	}
	return driver.Materialized{VM: mv.offlineVM(), BytesWritten: written}, nil
}

// swapIn puts a VM written in tmp in place at final, stopping the VM it
// replaces first (old, which ran until its successor was written, so a
// failed write left it as it was), and returns it as made.
func (d *Driver) swapIn(ctx context.Context, spec driver.MaterializeSpec, tmp, final, nonce string, old *madeVM) (*madeVM, error) {
	if old != nil {
		if err := d.stopQEMU(ctx, old.rec.ID, old.dir, replaceShutdownTimeout, true); err != nil {
			return nil, diskfile.Prefixed("VM "+spec.ID+" is not replaced", err)
		}
	}
	if err := diskfile.SwapIn(tmp, final, filepath.Join(d.VMDir, materializePrefix+"old-"+nonce), old != nil); err != nil {
		return nil, err
	}
	if err := diskfile.SyncDir(d.VMDir); err != nil {
		return nil, err
	}
	return readRecord(final)
}

// prepareMaterialize checks a spec and what its VM's name and id hold on
// this host (checkExisting): the VM's directory, the VM it replaces, or
// the VM made of the same point before.
func (d *Driver) prepareMaterialize(ctx context.Context, spec driver.MaterializeSpec) (final string, old *madeVM, done *driver.Materialized, err error) {
	if d.VMDir == "" {
		return "", nil, nil, &agentproto.TaskError{Code: agentproto.CodeTargetNotSupported, Message: "this qemu agent has no VM directory for recovered VMs; run it with --qemu-vm-dir"}
	}
	if !safeName(spec.Name) || !safeName(spec.ID) {
		return "", nil, nil, fmt.Errorf("VM name %q or id %q cannot be a VM directory and socket name", spec.Name, spec.ID)
	}
	if spec.SourceVMID == "" || spec.PointID == "" {
		return "", nil, nil, fmt.Errorf("VM %s: a materialized VM must say its source VM and recovery point", spec.ID)
	}
	if err := d.checkSocketPath(spec.ID); err != nil {
		return "", nil, nil, err
	}
	if err := os.MkdirAll(d.VMDir, 0o750); err != nil {
		return "", nil, nil, err
	}
	final = filepath.Join(d.VMDir, spec.Name)
	old, done, err = d.checkExisting(ctx, final, spec)
	return final, old, done, err
}

func deref(m *driver.Materialized) driver.Materialized {
	if m == nil {
		return driver.Materialized{}
	}
	return *m
}

// checkExisting looks at what holds the VM's name or id already: the VM
// as it is when it was made of the same source and point (done), the VM
// to replace (old), or why it may not be.
func (d *Driver) checkExisting(ctx context.Context, final string, spec driver.MaterializeSpec) (old *madeVM, done *driver.Materialized, err error) {
	vms, err := d.madeVMs()
	if err != nil {
		return nil, nil, err
	}
	if mv := vms[spec.ID]; mv != nil && mv.dir != final {
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"VM id %s is taken on this host by %s; remove that VM, or choose another recovery host", spec.ID, mv.dir)}
	}
	if vms[spec.ID] == nil {
		if _, err := os.Lstat(d.socket(spec.ID)); err == nil {
			return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
				"VM id %s is taken on this host by the QEMU whose monitor is %s (a VM Lifeboat did not make); stop it and remove the socket, or choose another recovery host", spec.ID, d.socket(spec.ID))}
		}
	}
	if _, err := os.Lstat(final); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	mv, why := readRecord(final)
	switch {
	case mv != nil && mv.rec.ID == spec.ID && mv.madeOf(spec):
		return nil, &driver.Materialized{VM: d.listMade(ctx, mv), Existing: true}, nil
	case !spec.Replace && mv == nil:
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s exists already on this host (%v); remove or rename it there, or choose another recovery host", final, why)}
	case !spec.Replace:
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s exists already on this host (VM %s); remove it there, or choose another recovery host", final, mv.rec.ID)}
	case mv == nil:
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeVMNotMaterialized, Message: fmt.Sprintf(
			"%s was not made by a Lifeboat failover (%v), so it is not replaced; remove or rename it on the host, or choose another recovery host", final, why)}
	case mv.rec.ID != spec.ID:
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s holds VM %s, not %s, so it is not replaced; remove it there, or choose another recovery host", final, mv.rec.ID, spec.ID)}
	case mv.rec.Lifeboat.SourceVMID != spec.SourceVMID:
		return nil, nil, &agentproto.TaskError{Code: agentproto.CodeRecoveryVMExists, Message: fmt.Sprintf(
			"%s holds the recovered VM of %s, not of %s, so it is not replaced; remove it there, or choose another recovery host", final, mv.rec.Lifeboat.SourceVMID, spec.SourceVMID)}
	}
	return mv, nil, nil
}

// writeVM writes the VM's disks and vm.json into dir and syncs them, and
// returns the bytes of data written.
func (d *Driver) writeVM(ctx context.Context, dir string, spec driver.MaterializeSpec) (int64, error) {
	rec := vmRecord{ID: spec.ID, Name: spec.Name, Lifeboat: &origin{SourceVMID: spec.SourceVMID, PointID: spec.PointID,
		Test: spec.Test, MaterializedAt: time.Now().UTC()}}
	var written int64
	for _, disk := range spec.Disks {
		if !safeName(disk.Name) {
			return written, fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		file := disk.Name + ".img"
		n, err := diskfile.WriteSparse(ctx, filepath.Join(dir, file), disk.Data, disk.SizeBytes)
		written += n
		var re *diskfile.ReadError
		if errors.As(err, &re) {
			return written, fmt.Errorf("read the image of disk %s: %w", disk.Name, re)
		}
		if err != nil {
			return written, fmt.Errorf("write disk %s: %w", disk.Name, d.hostError(spec, err))
		}
		rec.Disks = append(rec.Disks, recordDisk{Name: disk.Name, File: file, Format: "raw"})
	}
	if err := writeRecord(dir, rec); err != nil {
		return written, d.hostError(spec, err)
	}
	return written, d.hostError(spec, diskfile.SyncDir(dir))
}

func writeRecord(dir string, rec vmRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return diskfile.ReplaceSynced(filepath.Join(dir, recordFile), b)
}

// hostError says so when VMDir is full: freeing space is the operator's
// to do, so it is not retried by itself.
func (d *Driver) hostError(spec driver.MaterializeSpec, err error) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	return &agentproto.TaskError{Code: agentproto.CodeRecoveryHostFull, Message: fmt.Sprintf(
		"the VM directory %s has no room for the disks of VM %s (%d bytes, less their runs of zeros): %v. Nothing of the VM was left behind; free space on this host or choose another recovery host, then restart the job",
		d.VMDir, spec.Name, diskTotal(spec.Disks), err)}
}

func diskTotal(disks []driver.MaterializeDisk) int64 {
	var total int64
	for _, disk := range disks {
		total += disk.SizeBytes
	}
	return total
}

// warnIfSmall logs when VMDir has less room than the disks' full size:
// the images are sparse, so they may fit now, but a guest that fills its
// disks would find the host full (QEMU then pauses it).
func (d *Driver) warnIfSmall(spec driver.MaterializeSpec) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.VMDir, &st); err != nil {
		return
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < diskTotal(spec.Disks) {
		d.logger().Warn("the VM directory has less free space than the VM's disks are large: they are written sparse, but the guest may fill the host", "vm", spec.ID, "free_bytes", free, "disk_bytes", diskTotal(spec.Disks))
	}
}

// Remove implements driver.Driver: only a VM under VMDir (with the record
// Materialize writes) is stopped (its guest asked to power off for at
// most timeout, then its QEMU quits regardless, or is killed) and
// deleted. A VM that is gone already is success.
func (d *Driver) Remove(ctx context.Context, vmID string, timeout time.Duration) error {
	mv, err := d.made(vmID)
	if err != nil {
		return err
	}
	if mv == nil {
		if _, err := os.Lstat(d.socket(vmID)); err == nil {
			return &agentproto.TaskError{Code: agentproto.CodeVMNotMaterialized, Message: fmt.Sprintf(
				"VM %s was not made by a Lifeboat failover (its QEMU was started outside Lifeboat, monitor %s), so Lifeboat does not delete it; stop and delete it on the host yourself if it is no longer needed",
				vmID, d.socket(vmID))}
		}
		return nil // removed before: a rerun, or someone did it on the host
	}
	if err := d.stopQEMU(ctx, vmID, mv.dir, timeout, false); err != nil {
		return diskfile.Prefixed("VM "+vmID+" is not removed", err)
	}
	doomed := filepath.Join(d.VMDir, removePrefix+diskfile.Nonce())
	if err := os.Rename(mv.dir, doomed); err != nil {
		return fmt.Errorf("remove VM %s: %w", vmID, err)
	}
	// The rename must be on disk before the files go: after a crash the VM
	// is either whole or hidden.
	if err := diskfile.SyncDir(d.VMDir); err != nil {
		return fmt.Errorf("remove VM %s: %w", vmID, err)
	}
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("remove VM %s: its directory is hidden as %s but its files could not all be deleted: %w", vmID, doomed, err)
	}
	// Its captures' work directory (empty between captures) and tracking
	// record: a VM made again under its id starts afresh.
	os.RemoveAll(d.vmDir(vmID))
	os.Remove(d.trackingPath(vmID))
	return diskfile.SyncDir(d.VMDir)
}

// WriteBack implements driver.Driver for a VM under VMDir (a failback into
// the VM a failover made here): each raw image is read beside the point
// and only its 4 KiB blocks that differ are written. The VM must be off:
// a QEMU whose guest powered off (state shutdown) is quit first, one whose
// guest runs is refused with CodeVMRunning. A VM whose QEMU was started
// outside Lifeboat is refused: its images may be of any format and are
// the operator's.
func (d *Driver) WriteBack(ctx context.Context, vmID string, disks []driver.MaterializeDisk) (driver.Materialized, error) {
	mv, err := d.made(vmID)
	if err != nil {
		return driver.Materialized{}, err
	}
	if mv == nil {
		if _, err := os.Lstat(d.socket(vmID)); err != nil {
			return driver.Materialized{}, fmt.Errorf("%w: VM %s is neither under %s nor has a monitor in %s", driver.ErrVMNotFound, vmID, d.VMDir, d.QMPDir)
		}
		return driver.Materialized{}, &agentproto.TaskError{Code: agentproto.CodeTargetNotSupported, Message: fmt.Sprintf(
			"a failback into VM %s, whose QEMU was started outside Lifeboat, is not built for qemu (its images are the operator's, of any format); fail back to a new VM instead: choose another recovery host, or remove the VM here", vmID)}
	}
	if m, err := d.monitor(ctx, vmID); err == nil {
		st, err := Status(ctx, m)
		if err != nil {
			return driver.Materialized{}, err
		}
		if powerState(st) == agentproto.PowerRunning {
			return driver.Materialized{}, &agentproto.TaskError{Code: agentproto.CodeVMRunning, Message: fmt.Sprintf(
				"VM %s runs; a failback writes into its disks only while it is off: shut it down, then restart the job", vmID)}
		}
	}
	if err := d.stopQEMU(ctx, vmID, mv.dir, 0, true); err != nil {
		return driver.Materialized{}, err
	}
	result := func(written int64) driver.Materialized {
		return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}
	}
	have := map[string]recordDisk{}
	for _, dk := range mv.rec.Disks {
		have[dk.Name] = dk
	}
	want := map[string]bool{}
	for _, disk := range disks {
		want[disk.Name] = true
	}
	// A disk the VM has and the point lacks would keep what it held before
	// the failover: the VM would boot with its disks from two times.
	for _, dk := range mv.rec.Disks {
		if !want[dk.Name] {
			return result(0), &agentproto.TaskError{Code: agentproto.CodeFailbackDiskMismatch, Message: fmt.Sprintf(
				"VM %s has the disk %s, which the recovery point does not hold (it was removed, or renamed, while failed over); remove the VM, or fail back to another host", vmID, filepath.Join(mv.dir, dk.File))}
		}
		if formatOr(dk.Format) != "raw" {
			return result(0), &agentproto.TaskError{Code: agentproto.CodeTargetNotSupported, Message: fmt.Sprintf(
				"VM %s's disk %s is %s, and a failback writes only into raw images; remove the VM, or fail back to another host", vmID, dk.File, dk.Format)}
		}
	}
	var written int64
	added := false
	for _, disk := range disks {
		if !safeName(disk.Name) {
			return result(written), fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		dk, ok := have[disk.Name]
		if !ok {
			dk = recordDisk{Name: disk.Name, File: disk.Name + ".img", Format: "raw"}
			mv.rec.Disks = append(mv.rec.Disks, dk)
			added = true
		}
		n, err := diskfile.WriteBack(ctx, filepath.Join(mv.dir, dk.File), disk.Data, disk.SizeBytes)
		written += n
		if err != nil {
			return result(written), err
		}
	}
	if added {
		if err := writeRecord(mv.dir, mv.rec); err != nil {
			return result(written), err
		}
	}
	if err := diskfile.SyncDir(mv.dir); err != nil {
		return result(written), err
	}
	return driver.Materialized{VM: mv.offlineVM(), BytesWritten: written}, nil
}

// startMade starts a VM under VMDir: a new QEMU unless one runs its guest.
// A test failover's VM always starts isolated, whatever it is asked.
func (d *Driver) startMade(ctx context.Context, mv *madeVM, opts driver.StartOptions) error {
	id := mv.rec.ID
	if m, err := d.monitor(ctx, id); err == nil {
		st, err := Status(ctx, m)
		if err != nil {
			return err
		}
		switch {
		case st.Running:
			return nil
		case st.Status != "shutdown":
			// Paused (by an I/O error, or by an operator): it goes on.
			if err := m.Execute(ctx, "cont", nil, nil); err != nil {
				return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s (%s): %v", id, st.Status, err)}
			}
			return nil
		case mv.rec.Hydrating:
			// Its QEMU holds the copy of its disks from the recovery
			// point: the guest boots again in it.
			if err := d.resetAfterPowerOff(ctx, id, m); err != nil {
				return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s: %v", id, err)}
			}
			if err := m.Execute(ctx, "cont", nil, nil); err != nil {
				return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s: %v", id, err)}
			}
			return nil
		}
		// Its guest powered off: a new QEMU boots it afresh.
	}
	if mv.rec.Hydrating {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"VM %s was started by an instant failover and its disks are still partly on recovery point %s (its copy did not finish), so it cannot start on its own; restart the failover job, whose run serves the point again and finishes the copy", id, mv.rec.Lifeboat.PointID)}
	}
	if err := d.stopQEMU(ctx, id, mv.dir, 0, true); err != nil {
		return err
	}
	return d.Launch(ctx, LaunchSpec{ID: id, Name: mv.rec.Name, Dir: mv.dir, Drives: mv.drives(),
		Isolated: opts.Isolated || mv.rec.Lifeboat.Test})
}

// sortVMs sorts an inventory by id.
func sortVMs(vms []agentproto.VM) {
	sort.Slice(vms, func(i, j int) bool { return vms[i].ID < vms[j].ID })
}

// safeName is a name that is one path element, not hidden, and fits in a
// QEMU option without quoting.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00,") && !strings.HasPrefix(name, ".")
}

package filedisk

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// WriteBack implements driver.Driver: a failback into the VM a failover
// left (its disks still hold what it had then). Each disk file is read
// beside the point and only its 4 KiB blocks that differ are written,
// then the file is synced: what travels to the original disks is what
// changed since, not the disk. The VM must be off. A disk file the VM
// lacks is created; one larger than the point's disk is refused (the disk
// shrank: Lifeboat does not guess which end to cut). A crash part-way
// leaves a disk between the two versions; the task run again compares
// anew and ends the same, so it may simply be rerun.
func (d *Driver) WriteBack(ctx context.Context, vmID string, disks []driver.MaterializeDisk) (driver.Materialized, error) {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return driver.Materialized{}, err
	}
	if running(dir) {
		return driver.Materialized{}, &agentproto.TaskError{Code: agentproto.CodeVMRunning, Message: fmt.Sprintf(
			"VM %s runs; a failback writes into its disks only while it is off: shut it down, then restart the job", vmID)}
	}
	// A disk the VM has and the point lacks would keep what it held before
	// the failover: the VM would boot with its disks from two times.
	current, err := d.readVMWithID(dir, filepath.Base(dir))
	if err != nil {
		return driver.Materialized{}, err
	}
	want := map[string]bool{}
	for _, disk := range disks {
		want[disk.Name+".img"] = true
	}
	for _, cd := range current.Disks {
		if !want[filepath.Base(cd.Path)] {
			return driver.Materialized{}, &agentproto.TaskError{Code: agentproto.CodeFailbackDiskMismatch, Message: fmt.Sprintf(
				"VM %s has the disk %s, which the recovery point does not hold (it was removed, or renamed, while failed over); move it out of %s if the VM no longer needs it, then restart the job, or fail back to another host",
				vmID, cd.Path, dir)}
		}
	}
	var written int64
	for _, disk := range disks {
		if !safeName(disk.Name) {
			return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}, fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		n, err := diskfile.WriteBack(ctx, filepath.Join(dir, disk.Name+".img"), disk.Data, disk.SizeBytes)
		written += n
		if err != nil {
			return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}, err
		}
	}
	if err := diskfile.SyncDir(dir); err != nil {
		return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}, err
	}
	vm, err := d.readVMWithID(dir, filepath.Base(dir))
	return driver.Materialized{VM: vm, BytesWritten: written}, err
}

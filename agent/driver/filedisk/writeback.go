package filedisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
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
		n, err := writeBackDisk(ctx, filepath.Join(dir, disk.Name+".img"), disk)
		written += n
		if err != nil {
			return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}, err
		}
	}
	if err := syncDir(dir); err != nil {
		return driver.Materialized{VM: agentproto.VM{ID: vmID}, BytesWritten: written}, err
	}
	vm, err := d.readVMWithID(dir, filepath.Base(dir))
	return driver.Materialized{VM: vm, BytesWritten: written}, err
}

// writeBackDisk makes one disk file equal to the image, writing only the
// blocks that differ, and returns the bytes written.
func writeBackDisk(ctx context.Context, path string, disk driver.MaterializeDisk) (int64, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writeSparse(ctx, path, disk.Data, disk.SizeBytes)
	}
	if err != nil {
		return 0, err
	}
	if fi.Size() > disk.SizeBytes {
		return 0, &agentproto.TaskError{Code: agentproto.CodeDiskResized, Message: fmt.Sprintf(
			"%s is %d bytes, larger than its disk at the recovery point (%d bytes); the failback does not shrink a disk: make it the point's size, or fail back to another host", path, fi.Size(), disk.SizeBytes)}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if fi.Size() < disk.SizeBytes {
		if err := f.Truncate(disk.SizeBytes); err != nil { // it grew after the failover; the new part reads as zeros until written
			return 0, err
		}
	}
	want := make([]byte, 4<<20)
	have := make([]byte, len(want))
	var written int64
	for off := int64(0); off < disk.SizeBytes; off += int64(len(want)) {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		w, h := want[:min(int64(len(want)), disk.SizeBytes-off)], have[:min(int64(len(want)), disk.SizeBytes-off)]
		if err := readChunk(disk.Data, w, off, disk.SizeBytes); err != nil {
			return written, err
		}
		if _, err := io.ReadFull(io.NewSectionReader(f, off, int64(len(h))), h); err != nil {
			return written, fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		n, err := writeDiffering(f, w, h, off)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, f.Sync()
}

// writeDiffering writes the blocks of want that differ from have, at off,
// coalescing neighbours into one write; against zeros, it writes a new
// file's data and leaves holes for the rest.
func writeDiffering(f *os.File, want, have []byte, off int64) (int64, error) {
	var written int64
	start := -1
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		n, err := f.WriteAt(want[start:end], off+int64(start))
		written += int64(n)
		start = -1
		return err
	}
	for i := 0; i < len(want); i += holeBlock {
		end := min(i+holeBlock, len(want))
		if bytes.Equal(want[i:end], have[i:end]) {
			if err := flush(i); err != nil {
				return written, err
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return written, flush(len(want))
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// exportCommand writes one disk of a recovery point to a file, for use
// outside Lifeboat (another hypervisor, an Azure upload, a copy kept
// aside), from a directory target or an Azure Blob container:
//
//	lifeboat-agent export --target-dir DIR --vm VM-ID --disk DISK --out FILE [--point ID|latest] [--format raw|vhd|qcow2]
//	lifeboat-agent export --container-url URL ...   (SAS in LIFEBOAT_AZURE_SAS)
//
// It only reads the replica, and never overwrites a file. On a directory
// target, run it while no cycle writes the replica (see openReplicaStore).
func exportCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("target-dir", "", "a directory target's path")
	containerURL := fs.String("container-url", "", "an Azure Blob target: the VM's container URL; a SAS that may read and list it goes in LIFEBOAT_AZURE_SAS")
	vm := fs.String("vm", "", "the VM's id in the vault (vm_…, as the portal and the API show it; the directory name under the target)")
	point := fs.String("point", "latest", `the recovery point's id, or "latest" for the newest`)
	disk := fs.String("disk", "", "the disk's id (disks[].id in GET /api/v1/vms/{id}); may be left out when the point has one disk")
	format := fs.String("format", "raw", "raw (sparse), vhd (fixed, as Azure takes it) or qcow2 (needs qemu-img)")
	out := fs.String("out", "", "the file to write; it must not exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*dir == "") == (*containerURL == "") || *vm == "" || *out == "" {
		return errors.New("export needs --vm, --out and one of --target-dir or --container-url")
	}
	if *format != "raw" && *format != "vhd" && *format != "qcow2" {
		return fmt.Errorf("--format %q is not raw, vhd or qcow2", *format)
	}
	// Checked before a disk of many GiB is read, not after.
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s exists; export never overwrites a file: remove it or choose another --out", *out)
	}
	qemuImg := ""
	if *format == "qcow2" {
		var err error
		if qemuImg, err = exec.LookPath("qemu-img"); err != nil {
			return errors.New("--format qcow2 needs qemu-img (Debian and Ubuntu: apt install qemu-utils); or export raw and convert it elsewhere")
		}
	}
	r, where, err := openReplicaStore(ctx, *dir, *containerURL, *vm, getenv)
	if err != nil {
		return err
	}
	defer r.Close()
	pt, err := choosePoint(r, *vm, where, *point)
	if err != nil {
		return err
	}
	diskID, err := chooseDisk(pt, *disk)
	if err != nil {
		return err
	}
	pr, size, err := r.OpenPoint(pt.ID, diskID)
	if err != nil {
		return fmt.Errorf("open disk %s of recovery point %s: %w", diskID, pt.ID, err)
	}
	defer pr.Close()
	switch *format {
	case "raw":
		err = exportRaw(ctx, *out, pr, size, false)
	case "vhd":
		err = exportRaw(ctx, *out, pr, size, true)
	case "qcow2":
		err = exportQcow2(ctx, qemuImg, *out, pr, size)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Disk %s of VM %s at recovery point %s (%s, %d bytes) written to %s as %s.\n",
		diskID, *vm, pt.ID, pt.Time.UTC().Format(time.RFC3339), size, *out, *format)
	return nil
}

// openReplicaStore opens the VM's replica for `export` and `verify`,
// without the agent's lock (which is in the agent's state directory, keyed by the
// target as the vault names it). A directory target's points are read
// through its live replica and undo logs, so a cycle that writes meanwhile
// can tear the export: export while protection is paused, or between
// cycles. Azure points are blob snapshots, which do not change.
func openReplicaStore(ctx context.Context, dir, containerURL, vm string, getenv func(string) string) (replica.Store, string, error) {
	if dir != "" {
		r, err := dirtarget.OpenExisting(dir, vm)
		if err != nil {
			return nil, "", fmt.Errorf("the replica of VM %s in %s: %w", vm, dir, err)
		}
		return r, dir, nil
	}
	token := strings.TrimPrefix(getenv("LIFEBOAT_AZURE_SAS"), "?")
	if token == "" {
		return nil, "", errors.New("--container-url needs a SAS token in LIFEBOAT_AZURE_SAS (an account or container SAS that may read and list; it is not taken as a flag, so it stays out of the shell history and process list)")
	}
	r, err := blobtarget.Open(ctx, vm, givenSAS{url: strings.TrimRight(containerURL, "/"), token: token}, blobtarget.Options{})
	if err != nil {
		return nil, "", err
	}
	return r, containerURL, nil
}

// choosePoint is the point of that id, or the newest for "latest".
func choosePoint(r replica.Store, vm, where, id string) (replica.Point, error) {
	points, err := r.Points()
	if err != nil {
		return replica.Point{}, err
	}
	if len(points) == 0 {
		return replica.Point{}, fmt.Errorf("VM %s has no recovery point in %s", vm, where)
	}
	if id == "" || id == "latest" {
		return points[len(points)-1], nil
	}
	ids := make([]string, 0, len(points))
	for _, pt := range points {
		if pt.ID == id {
			return pt, nil
		}
		ids = append(ids, pt.ID)
	}
	return replica.Point{}, fmt.Errorf("VM %s has no recovery point %s in %s (retention may have deleted it); its points, oldest first: %s",
		vm, id, where, strings.Join(ids, ", "))
}

// chooseDisk is the disk asked for, or the point's only disk.
func chooseDisk(pt replica.Point, disk string) (string, error) {
	ids := make([]string, 0, len(pt.Disks))
	for id := range pt.Disks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	switch {
	case disk == "" && len(ids) == 1:
		return ids[0], nil
	case disk == "":
		return "", fmt.Errorf("recovery point %s holds %d disks; name one with --disk: %s", pt.ID, len(ids), strings.Join(ids, ", "))
	case !pt.Holds(disk):
		return "", fmt.Errorf("recovery point %s holds no disk %s; its disks: %s", pt.ID, disk, strings.Join(ids, ", "))
	}
	return disk, nil
}

// exportRaw writes the disk to a new file, and removes it if that fails.
func exportRaw(ctx context.Context, path string, r io.ReaderAt, size int64, withFooter bool) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err = writeImage(ctx, f, r, size, withFooter); err != nil {
		os.Remove(path)
	}
	return err
}

// exportQcow2 writes the disk raw to a hidden file beside path, then has
// qemu-img convert it. path is created empty first, so that no other file
// can take its name meanwhile and be overwritten by the conversion.
func exportQcow2(ctx context.Context, qemuImg, path string, r io.ReaderAt, size int64) (err error) {
	placeholder, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	placeholder.Close()
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".raw-")
	if err != nil {
		return fmt.Errorf("create a temporary raw image beside %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := writeImage(ctx, tmp, r, size, false); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-f", "raw", "-O", "qcow2", tmp.Name(), path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img convert to qcow2: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeImage writes the disk into f, sparse, and closes it. A VHD is
// padded to a whole MiB (as Azure wants) and ends with its fixed footer.
func writeImage(ctx context.Context, f *os.File, r io.ReaderAt, size int64, withFooter bool) error {
	err := writeImageData(ctx, f, r, size, withFooter)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", f.Name(), cerr)
	}
	return err
}

func writeImageData(ctx context.Context, f *os.File, r io.ReaderAt, size int64, withFooter bool) error {
	if err := copySparse(ctx, f, r, size); err != nil {
		return err
	}
	end := size
	if withFooter {
		footer := vhd.Footer{DataSize: vhd.DataSize(size), Created: time.Now()}
		_, _ = rand.Read(footer.UniqueID[:])
		b, err := footer.Marshal()
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(b, footer.DataSize); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
		end = footer.DataSize + vhd.FooterSize
	}
	if err := f.Truncate(end); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// copySparse copies size bytes of r into f, leaving holes for its all-zero
// 64 KiB runs.
func copySparse(ctx context.Context, f *os.File, r io.ReaderAt, size int64) error {
	const chunk, hole = 4 << 20, 64 << 10
	buf := make([]byte, chunk)
	zeros := make([]byte, hole)
	for off := int64(0); off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(chunk, size-off)]
		if n, err := r.ReadAt(b, off); n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("the disk's data ends at %d of %d bytes", off+int64(n), size)
			}
			return fmt.Errorf("read the recovery point: %w", err)
		}
		for i := 0; i < len(b); i += hole {
			part := b[i:min(i+hole, len(b))]
			if bytes.Equal(part, zeros[:len(part)]) {
				continue
			}
			if _, err := f.WriteAt(part, off+int64(i)); err != nil {
				return fmt.Errorf("write %s: %w", f.Name(), err)
			}
		}
	}
	return nil
}

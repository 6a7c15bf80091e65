package filedisk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// runningMarker is the file whose presence says a VM runs.
const runningMarker = "running"

// materializePrefix names the hidden directory under the VM root where a
// VM is written before it appears whole, by rename.
const materializePrefix = ".lifeboat-materialize-"

// PowerState implements driver.Driver: the running marker.
func (d *Driver) PowerState(_ context.Context, vmID string) (string, error) {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return agentproto.PowerUnknown, err
	}
	if _, err := os.Stat(filepath.Join(dir, runningMarker)); err == nil {
		return agentproto.PowerRunning, nil
	}
	return agentproto.PowerOff, nil
}

// Shutdown implements driver.Driver: the stop command (when configured)
// stops the VM, then the marker goes. A stop command that fails leaves the
// VM running, and says so.
func (d *Driver) Shutdown(ctx context.Context, vmID string, timeout time.Duration) error {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return err
	}
	if state, _ := d.PowerState(ctx, vmID); state == agentproto.PowerOff {
		return nil
	}
	if d.StopCommand != "" {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := runHook(ctx, d.StopCommand, vmID, dir); err != nil {
			return fmt.Errorf("the stop command did not stop VM %s within %v; it may still run: %w", vmID, timeout, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, runningMarker)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Start implements driver.Driver: the start command (when configured),
// with LIFEBOAT_ISOLATED=1 for an isolated start, then the marker.
func (d *Driver) Start(ctx context.Context, vmID string, opts driver.StartOptions) error {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return err
	}
	if d.StartCommand != "" {
		isolated := "LIFEBOAT_ISOLATED=0"
		if opts.Isolated {
			isolated = "LIFEBOAT_ISOLATED=1"
		}
		if err := runHook(ctx, d.StartCommand, vmID, dir, isolated); err != nil {
			return fmt.Errorf("start VM %s: %w", vmID, err)
		}
	}
	return os.WriteFile(filepath.Join(dir, runningMarker), nil, 0o644)
}

// Materialize implements driver.Driver: the VM's directory is written
// under a hidden name (disks sparse, vm.json with its id, all fsynced)
// and appears by rename, whole or not at all.
func (d *Driver) Materialize(ctx context.Context, spec driver.MaterializeSpec) (agentproto.VM, error) {
	if !safeName(spec.Name) || strings.TrimSpace(spec.ID) == "" {
		return agentproto.VM{}, fmt.Errorf("VM name %q or id %q cannot be a VM directory", spec.Name, spec.ID)
	}
	final := filepath.Join(d.Root, spec.Name)
	if _, err := os.Stat(final); err == nil {
		if !spec.Replace {
			return agentproto.VM{}, fmt.Errorf("%s exists already; choose another name or replace it", final)
		}
		if id := d.stableID(final, spec.Name); id != spec.ID {
			return agentproto.VM{}, fmt.Errorf("%s holds VM %s, not %s; it is not replaced", final, id, spec.ID)
		}
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	tmp := filepath.Join(d.Root, materializePrefix+hex.EncodeToString(nonce))
	if err := os.Mkdir(tmp, 0o750); err != nil {
		return agentproto.VM{}, err
	}
	defer os.RemoveAll(tmp)
	for _, disk := range spec.Disks {
		if !safeName(disk.Name) {
			return agentproto.VM{}, fmt.Errorf("disk name %q cannot be a file name", disk.Name)
		}
		if err := writeSparse(ctx, filepath.Join(tmp, disk.Name+".img"), disk.Data, disk.SizeBytes); err != nil {
			return agentproto.VM{}, fmt.Errorf("write disk %s: %w", disk.Name, err)
		}
	}
	meta, _ := json.Marshal(map[string]string{"id": spec.ID})
	if err := writeSynced(filepath.Join(tmp, "vm.json"), meta); err != nil {
		return agentproto.VM{}, err
	}
	if err := syncDir(tmp); err != nil {
		return agentproto.VM{}, err
	}
	if _, err := os.Stat(final); err == nil {
		old := filepath.Join(d.Root, materializePrefix+"old-"+hex.EncodeToString(nonce))
		if err := os.Rename(final, old); err != nil {
			return agentproto.VM{}, err
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmp, final); err != nil {
		return agentproto.VM{}, err
	}
	if err := syncDir(d.Root); err != nil {
		return agentproto.VM{}, err
	}
	return d.readVMWithID(final, spec.Name)
}

func (d *Driver) readVMWithID(dir, name string) (agentproto.VM, error) {
	vm, err := d.readVM(dir, name)
	if err != nil {
		return vm, err
	}
	vm.ID = d.stableID(dir, name)
	return vm, nil
}

// writeSparse writes size bytes read from r to a new file, leaving holes
// where r holds zeros.
func writeSparse(ctx context.Context, path string, r io.ReaderAt, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	zeros := make([]byte, len(buf))
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(int64(len(buf)), size-off)]
		if n, err := r.ReadAt(b, off); n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				err = fmt.Errorf("the image ends at %d of %d bytes", off+int64(n), size)
			}
			return err
		}
		if bytes.Equal(b, zeros[:len(b)]) {
			continue
		}
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// safeName is a name that is one path element and not hidden.
func safeName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`) && !strings.HasPrefix(name, ".")
}

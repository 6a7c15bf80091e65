package filedisk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/internal/diskfile"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// removePrefix names the hidden directory a VM being removed is renamed
// to before its files are deleted: a removal cut short leaves it hidden,
// not a VM with half its disks, and Recover or the next Remove deletes it.
const removePrefix = ".lifeboat-remove-"

// Remove implements driver.Driver: only a VM whose vm.json has the
// "lifeboat" record that Materialize writes is stopped and deleted.
func (d *Driver) Remove(ctx context.Context, vmID string, timeout time.Duration) error {
	d.sweepRemoved()
	dir, err := d.VMDir(vmID)
	if errors.Is(err, driver.ErrVMNotFound) {
		return nil // removed before: a rerun, or someone did it on the host
	}
	if err != nil {
		return err
	}
	if _, why := readOrigin(dir); why != nil {
		return &agentproto.TaskError{Code: agentproto.CodeVMNotMaterialized, Message: fmt.Sprintf(
			"VM %s in %s was not made by a Lifeboat failover (%v), so Lifeboat does not delete it; delete it on the host yourself if it is no longer needed",
			vmID, dir, why)}
	}
	if err := d.shutdownDir(ctx, vmID, dir, timeout); err != nil {
		return diskfile.Prefixed("VM "+vmID+" is not removed", err)
	}
	doomed := filepath.Join(d.Root, removePrefix+diskfile.Nonce())
	if err := os.Rename(dir, doomed); err != nil {
		return fmt.Errorf("remove VM %s: %w", vmID, err)
	}
	// The rename must be on disk before the files go: after a crash the VM
	// is either whole or hidden.
	if err := diskfile.SyncDir(d.Root); err != nil {
		return fmt.Errorf("remove VM %s: %w", vmID, err)
	}
	if err := os.RemoveAll(doomed); err != nil {
		return fmt.Errorf("remove VM %s: its directory is hidden as %s but its files could not all be deleted: %w", vmID, doomed, err)
	}
	return diskfile.SyncDir(d.Root)
}

// sweepRemoved deletes what removals cut short left. A failure is only
// logged: the VMs are gone, and it is no reason to fail another removal.
func (d *Driver) sweepRemoved() {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), removePrefix) {
			if err := os.RemoveAll(filepath.Join(d.Root, e.Name())); err != nil {
				d.logger().Warn("a removed VM's directory could not be deleted", "dir", filepath.Join(d.Root, e.Name()), slog.Any("error", err))
			}
		}
	}
}

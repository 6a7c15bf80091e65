package filedisk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// runningMarker is the file whose presence says a VM runs.
const runningMarker = "running"

// PowerState implements driver.Driver: the running marker.
func (d *Driver) PowerState(_ context.Context, vmID string) (string, error) {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return agentproto.PowerUnknown, err
	}
	if running(dir) {
		return agentproto.PowerRunning, nil
	}
	return agentproto.PowerOff, nil
}

// running says whether the VM in dir runs: its marker is there.
func running(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, runningMarker))
	return err == nil
}

// Shutdown implements driver.Driver: the stop command (when configured)
// stops the VM, then the marker goes. A stop command that fails leaves the
// VM running, and says so.
func (d *Driver) Shutdown(ctx context.Context, vmID string, timeout time.Duration) error {
	dir, err := d.VMDir(vmID)
	if err != nil {
		return err
	}
	return d.shutdownDir(ctx, vmID, dir, timeout)
}

// shutdownDir is Shutdown of the VM vmID, whose directory is dir.
func (d *Driver) shutdownDir(ctx context.Context, vmID, dir string, timeout time.Duration) error {
	if _, err := os.Stat(filepath.Join(dir, runningMarker)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if d.StopCommand != "" {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := runHook(ctx, d.StopCommand, vmID, dir); err != nil {
			// The marker stays: as far as anyone can tell, the VM runs.
			return &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
				"the stop command did not stop VM %s within %v; it may still run: %v. Shut it down on the host, then restart the job", vmID, timeout, err)}
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

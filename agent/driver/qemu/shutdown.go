package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// keepAfterPowerOff makes the guest's power-off leave its QEMU in state
// shutdown (Off, its disks still open) instead of exiting, as
// -no-shutdown does (QMP set-action shutdown=pause, QEMU 6.0 and later).
// A planned failover shuts the source down and then replicates its last
// changes: a QEMU that exited would take its monitor, and with it the
// final cycle's capture, away; and nothing (a service manager that
// restarts a QEMU that exits) boots the guest again behind the failover.
// Start boots it again (system_reset, cont). A QEMU without set-action
// is logged: its operator must give it -no-shutdown.
func (d *Driver) keepAfterPowerOff(ctx context.Context, vmID string, m *qmp.Monitor) {
	err := m.Execute(ctx, "set-action", map[string]any{"shutdown": "pause"}, nil)
	if err != nil {
		d.logger().Warn("QEMU may exit when the guest powers off, and a planned failover's final cycle would then find no VM: start it with -no-shutdown",
			"vm", vmID, slog.Any("error", err))
	}
}

// resetAfterPowerOff resets a VM whose guest powered off (state
// shutdown), so that cont boots it again. The reset happens in QEMU's
// main loop after system_reset returns, so it waits for the state to
// leave shutdown. A QEMU whose reboot action is shutdown (-no-reboot)
// turns the reset into another shutdown: its reboot action becomes reset
// for the rest of its life (the firmware resets the machine again as the
// guest boots, so it cannot be put back at once), which is logged.
func (d *Driver) resetAfterPowerOff(ctx context.Context, vmID string, m *qmp.Monitor) error {
	if ok, err := reset(ctx, m, resetTimeout/5); ok || err != nil {
		return err
	}
	if err := m.Execute(ctx, "set-action", map[string]any{"reboot": "reset"}, nil); err != nil {
		return err
	}
	d.logger().Warn("the VM's QEMU turns resets into power-offs (-no-reboot); to boot its guest again its reboot action is now reset, until QEMU restarts", "vm", vmID)
	ok, err := reset(ctx, m, resetTimeout)
	if err == nil && !ok {
		err = fmt.Errorf("the VM is still in state shutdown %v after system_reset", resetTimeout)
	}
	return err
}

// reset asks for a reset and says whether the state left shutdown
// within timeout.
func reset(ctx context.Context, m *qmp.Monitor, timeout time.Duration) (bool, error) {
	if err := m.Execute(ctx, "system_reset", nil, nil); err != nil {
		return false, err
	}
	deadline := time.Now().Add(timeout)
	for {
		st, err := Status(ctx, m)
		if err != nil {
			return false, err
		}
		if st.Status != "shutdown" {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const resetTimeout = 10 * time.Second

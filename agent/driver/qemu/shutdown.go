package qemu

import (
	"context"
	"log/slog"

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

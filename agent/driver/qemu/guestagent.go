package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qga"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// GuestAgentSuffix ends the name of a VM's guest agent socket: NAME.qga
// beside NAME.qmp (see Driver).
const GuestAgentSuffix = ".qga"

// How long the guest agent gets: to answer a ping (a guest without one
// running must not hold a capture up for long), to freeze the guest's
// filesystems (each is flushed first), and to thaw them.
const (
	agentAnswerTimeout = 2 * time.Second
	agentFreezeTimeout = 10 * time.Second
	agentThawTimeout   = 5 * time.Second
	agentThawTries     = 3
)

func (d *Driver) guestAgentSocket(vmID string) string {
	return filepath.Join(d.QMPDir, vmID+GuestAgentSuffix)
}

// guestAgent connects to the VM's guest agent and checks that it answers,
// within agentAnswerTimeout. Without one, it says why in words for the
// operator.
func (d *Driver) guestAgent(ctx context.Context, vmID string) (*qga.Client, error) {
	sock := d.guestAgentSocket(vmID)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("VM %s has no guest agent socket %s (give its QEMU a virtio-serial port named org.qemu.guest_agent.0 on that socket, and run qemu-guest-agent in the guest)", vmID, sock)
	}
	actx, cancel := context.WithTimeout(ctx, agentAnswerTimeout)
	defer cancel()
	c, err := qga.Dial(actx, sock)
	if err == nil {
		if err = c.Ping(actx); err != nil {
			c.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the guest agent of VM %s did not answer within %v (is qemu-guest-agent running in the guest?): %w", vmID, agentAnswerTimeout, err)
	}
	return c, nil
}

// quiesced is a guest whose filesystems the guest agent froze for a
// capture.
type quiesced struct {
	d    *Driver
	vmID string
	c    *qga.Client
	n    int // filesystems frozen
	once sync.Once
	err  error
}

// quiesce freezes the guest's filesystems through its guest agent. When
// it cannot, it returns nil and why, for the capture's Note; the guest is
// not left frozen (the agent thaws what it froze when a freeze fails, and
// a freeze that timed out is thawed here).
func (d *Driver) quiesce(ctx context.Context, vmID string) (*quiesced, string) {
	c, err := d.guestAgent(ctx, vmID)
	if err != nil {
		return nil, err.Error() + ": the point is crash-consistent"
	}
	fctx, cancel := context.WithTimeout(ctx, agentFreezeTimeout)
	n, err := c.FSFreeze(fctx)
	cancel()
	if err != nil {
		c.Close()
		// A freeze without an answer may have frozen some filesystems.
		q := &quiesced{d: d, vmID: vmID}
		if thawErr := q.thaw(); thawErr != nil {
			d.logger().Error("guest filesystems may be left frozen after a failed freeze", "vm", vmID, slog.Any("error", thawErr))
		}
		return nil, fmt.Sprintf("the guest agent of VM %s could not freeze the guest's filesystems (guest-fsfreeze-freeze: %v): the point is crash-consistent", vmID, err)
	}
	d.logger().Info("guest filesystems frozen for a capture", "vm", vmID, "filesystems", n)
	return &quiesced{d: d, vmID: vmID, c: c, n: n}, ""
}

// thaw thaws the guest's filesystems once, trying agentThawTries times,
// each time on a new connection after the first (a call that timed out
// closes its client). It may be called on nil.
func (q *quiesced) thaw() error {
	if q == nil {
		return nil
	}
	q.once.Do(func() {
		for try := 1; try <= agentThawTries; try++ {
			if q.err = q.thawOnce(); q.err == nil {
				return
			}
			q.d.logger().Warn("guest filesystems not thawed; trying again", "vm", q.vmID, "try", try, slog.Any("error", q.err))
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		q.err = fmt.Errorf("VM %s: the guest's filesystems could not be thawed through its guest agent (they are thawed when the agent next connects to the VM's monitor): %w", q.vmID, q.err)
	})
	return q.err
}

func (q *quiesced) thawOnce() error {
	ctx, cancel := context.WithTimeout(context.Background(), agentThawTimeout)
	defer cancel()
	c := q.c
	q.c = nil
	if c == nil {
		var err error
		if c, err = qga.Dial(ctx, q.d.guestAgentSocket(q.vmID)); err != nil {
			return err
		}
	}
	defer c.Close()
	_, err := c.FSThaw(ctx)
	return err
}

// thawLeftFrozen thaws a guest whose filesystems are frozen while no
// capture of this agent holds them: an agent that stopped between the
// freeze and the thaw left it so, and its applications hang until
// thawed. A guest without an answering agent is left as it is.
func (d *Driver) thawLeftFrozen(ctx context.Context, vmID string) {
	if _, err := os.Stat(d.guestAgentSocket(vmID)); err != nil {
		return
	}
	c, err := d.guestAgent(ctx, vmID)
	if err != nil {
		d.logger().Info("guest freeze state not checked", "vm", vmID, slog.Any("error", err))
		return
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, agentThawTimeout)
	defer cancel()
	st, err := c.FSFreezeStatus(sctx)
	if err != nil || st != qga.Frozen {
		if err != nil {
			d.logger().Warn("guest freeze state unknown", "vm", vmID, slog.Any("error", err))
		}
		return
	}
	n, err := c.FSThaw(sctx)
	if err != nil {
		d.logger().Error("the guest's filesystems are frozen and could not be thawed: thaw them in the guest (fsfreeze -u) or restart the agent", "vm", vmID, slog.Any("error", err))
		return
	}
	d.logger().Warn("thawed the guest's filesystems, left frozen by an earlier capture", "vm", vmID, "filesystems", n)
}

// powerdown asks the guest to power off: through its guest agent
// (guest-shutdown) when the agent answers, else by ACPI
// (system_powerdown). It says which, for the error of a guest that did
// not stop.
func (d *Driver) powerdown(ctx context.Context, vmID string, m *qmp.Monitor) (string, error) {
	if c, err := d.guestAgent(ctx, vmID); err == nil {
		sctx, cancel := context.WithTimeout(ctx, agentAnswerTimeout)
		err = c.Shutdown(sctx)
		cancel()
		c.Close()
		if err == nil {
			return "a shutdown through its guest agent (guest-shutdown)", nil
		}
		d.logger().Warn("the guest agent did not take the shutdown: trying ACPI", "vm", vmID, slog.Any("error", err))
	}
	if err := m.Execute(ctx, "system_powerdown", nil, nil); err != nil {
		return "", fmt.Errorf("VM %s: %w", vmID, err)
	}
	return "an ACPI power-down (system_powerdown)", nil
}

// quiesced runs a capture's transaction with the guest's filesystems
// frozen (see quiesce), and thaws them as soon as it returns, before
// any read: the disks are held as at the transaction. The capture is
// app-consistent when the transaction ran frozen.
func (c *capture) quiesced(ctx context.Context, transaction func() error) error {
	q, note := c.d.quiesce(ctx, c.vmID)
	c.note = note
	defer q.thaw() // whatever happens, the guest is not left frozen
	err := transaction()
	if thawErr := q.thaw(); thawErr != nil {
		c.thawFailed = true
		c.d.logger().Error("guest left frozen after a capture", "vm", c.vmID, slog.Any("error", thawErr))
	}
	c.app = q != nil && err == nil
	return err
}

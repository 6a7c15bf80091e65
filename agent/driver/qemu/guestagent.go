package qemu

import (
	"context"
	"errors"
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

// How long the driver goes on thawing a guest in the background after a
// freeze or a thaw that got no answer: qemu-ga does one command at a time,
// so a slow freeze holds every later command until it is done.
const (
	agentThawRetry    = 2 * time.Second
	agentThawDeadline = 10 * time.Minute
)

// frozenMarker is a file that exists while a freeze of this agent may
// hold the guest: only such a freeze is thawed at the next connection
// (thawLeftFrozen). Another tool's freeze is left alone.
func (d *Driver) frozenMarker(vmID string) string {
	return filepath.Join(d.StateDir, "qemu-frozen", vmID)
}

func (d *Driver) markFrozen(vmID string, on bool) {
	p := d.frozenMarker(vmID)
	if !on {
		os.Remove(p)
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
		os.WriteFile(p, nil, 0o600) // without it, a dead agent's freeze is not thawed at restart: logged there
	}
}

// quiesce freezes the guest's filesystems through its guest agent. When
// it cannot, it returns nil and why, for the capture's Note; the guest is
// not left frozen by this agent: a freeze that failed was undone by the
// guest agent itself, and one that got no answer (it may still complete)
// is thawed in the background until the guest says it is thawed.
func (d *Driver) quiesce(ctx context.Context, vmID string) (*quiesced, string) {
	c, err := d.guestAgent(ctx, vmID)
	if err != nil {
		return nil, err.Error() + ": the point is crash-consistent"
	}
	d.markFrozen(vmID, true)
	fctx, cancel := context.WithTimeout(ctx, agentFreezeTimeout)
	n, err := c.FSFreeze(fctx)
	cancel()
	var qe *qga.Error
	switch {
	case errors.As(err, &qe):
		// The guest agent answered: nothing of this freeze holds (qemu-ga
		// thaws what it froze when a freeze fails; a guest frozen by
		// someone else is theirs to thaw).
		c.Close()
		d.markFrozen(vmID, false)
		return nil, fmt.Sprintf("the guest agent of VM %s did not freeze the guest's filesystems (guest-fsfreeze-freeze: %v): the point is crash-consistent", vmID, err)
	case err != nil:
		c.Close()
		go d.thawUntilThawed(vmID)
		return nil, fmt.Sprintf("the guest agent of VM %s did not answer the freeze of the guest's filesystems within %v (%v): the point is crash-consistent, and the guest is thawed as soon as its agent answers", vmID, agentFreezeTimeout, err)
	case n == 0:
		c.Close()
		d.markFrozen(vmID, false)
		return nil, fmt.Sprintf("the guest agent of VM %s froze no filesystem (the guest has none it can freeze mounted): the point is crash-consistent", vmID)
	}
	d.logger().Info("guest filesystems frozen for a capture", "vm", vmID, "filesystems", n)
	return &quiesced{d: d, vmID: vmID, c: c, n: n}, ""
}

// thaw thaws the guest's filesystems once and says whether all those
// frozen were thawed: only then did the freeze hold from the freeze to the
// thaw (a guest agent that gave up holding them, as Windows' VSS does
// after 10 s, or someone else's thaw, shows as an error or a smaller
// count). A thaw that fails goes on in the background. It may be called
// on nil.
func (q *quiesced) thaw() error {
	if q == nil {
		return nil
	}
	q.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), agentThawTimeout)
		defer cancel()
		n, err := q.c.FSThaw(ctx)
		q.c.Close()
		var qe *qga.Error
		switch {
		case err == nil && n == q.n:
			q.d.markFrozen(q.vmID, false)
			return
		case err == nil:
			q.d.markFrozen(q.vmID, false)
			q.err = fmt.Errorf("VM %s: the guest agent thawed %d filesystems of the %d it froze: the others were thawed during the capture", q.vmID, n, q.n)
		case errors.As(err, &qe):
			q.d.markFrozen(q.vmID, false)
			q.err = fmt.Errorf("VM %s: the guest agent's thaw failed (%v): the filesystems may not have stayed frozen through the capture", q.vmID, err)
		default:
			go q.d.thawUntilThawed(q.vmID)
			q.err = fmt.Errorf("VM %s: the guest agent did not answer the thaw (%v): it is thawed in the background as soon as it answers", q.vmID, err)
		}
	})
	return q.err
}

// thawUntilThawed asks the guest agent, every agentThawRetry and for at
// most agentThawDeadline, whether the guest is frozen, and thaws it, until
// it answers thawed.
func (d *Driver) thawUntilThawed(vmID string) {
	deadline := time.Now().Add(agentThawDeadline)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), agentThawTimeout)
		st, err := d.thawIfFrozen(ctx, vmID)
		cancel()
		if err == nil && st == qga.Thawed {
			d.markFrozen(vmID, false)
			return
		}
		time.Sleep(agentThawRetry)
	}
	d.logger().Error("the guest's filesystems may be frozen and its guest agent does not answer: thaw them in the guest (fsfreeze -u); the agent tries again when it next connects to the VM", "vm", vmID)
}

// thawIfFrozen thaws the guest if its agent says it is frozen, and
// returns the state it ends in.
func (d *Driver) thawIfFrozen(ctx context.Context, vmID string) (string, error) {
	c, err := qga.Dial(ctx, d.guestAgentSocket(vmID))
	if err != nil {
		return "", err
	}
	defer c.Close()
	st, err := c.FSFreezeStatus(ctx)
	if err != nil || st != qga.Frozen {
		return st, err
	}
	n, err := c.FSThaw(ctx)
	if err != nil {
		return qga.Frozen, err
	}
	d.logger().Warn("thawed the guest's filesystems, left frozen by a capture whose freeze or thaw got no answer", "vm", vmID, "filesystems", n)
	return qga.Thawed, nil
}

// thawLeftFrozen thaws a guest that a freeze of this agent may still
// hold (its marker is there): an agent that stopped between the freeze
// and the thaw left it so, and its applications hang until thawed. A
// freeze of another tool (no marker) is left alone.
func (d *Driver) thawLeftFrozen(ctx context.Context, vmID string) {
	if _, err := os.Stat(d.frozenMarker(vmID)); err != nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, agentThawTimeout)
	defer cancel()
	st, err := d.thawIfFrozen(sctx, vmID)
	if err != nil {
		d.logger().Warn("a freeze of this agent may still hold the guest and its agent does not answer: thawing in the background", "vm", vmID, slog.Any("error", err))
		go d.thawUntilThawed(vmID)
		return
	}
	if st == qga.Thawed {
		d.markFrozen(vmID, false)
	}
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
// app-consistent only when the freeze held from before the transaction
// to the thaw after it.
func (c *capture) quiesced(ctx context.Context, transaction func() error) error {
	q, note := c.d.quiesce(ctx, c.vmID)
	c.note = note
	defer q.thaw() // whatever happens, the guest is not left frozen
	err := transaction()
	if thawErr := q.thaw(); thawErr != nil {
		c.d.logger().Error("the guest's freeze did not hold through the capture: the point is crash-consistent", "vm", c.vmID, slog.Any("error", thawErr))
		c.note = thawErr.Error() + ": the point is crash-consistent"
		return err
	}
	c.app = q != nil && err == nil
	return err
}

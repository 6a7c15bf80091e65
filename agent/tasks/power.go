package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// defaultShutdownTimeout is how long a graceful shutdown may take when
// the payload does not say.
const defaultShutdownTimeout = 5 * time.Minute

func powerPayload(t agentproto.Task) (agentproto.PowerPayload, time.Duration, error) {
	var p agentproto.PowerPayload
	if err := json.Unmarshal(t.Payload, &p); err != nil {
		return p, 0, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task's payload cannot be read: " + err.Error()}
	}
	if p.VMID == "" {
		return p, 0, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task names no VM; upgrade the agent to the vault's version"}
	}
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = defaultShutdownTimeout
	}
	return p, timeout, nil
}

// shutdownVM stops a VM gracefully: a planned failover's first step, on
// the source host. Run again it finds the VM off, which is success.
func (ts *Tasks) shutdownVM(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, timeout, err := powerPayload(t)
	if err != nil {
		return nil, err
	}
	before, err := ts.d.Driver.PowerState(ctx, p.VMID)
	if err != nil {
		return nil, vmError(p.VMID, err)
	}
	rep.Set(agentproto.Progress{Step: "shut down VM " + p.VMID, Message: fmt.Sprintf("waiting at most %v for it to stop", timeout)})
	if err := ts.d.Driver.Shutdown(ctx, p.VMID, timeout); err != nil {
		return nil, willNotStop(p.VMID, timeout, err)
	}
	return ts.powerResult(ctx, p.VMID, before == agentproto.PowerRunning), nil
}

// startVM powers a VM on: the source VM again, after a failover that did
// not go ahead. Run again it finds the VM running, and does not start it
// twice.
func (ts *Tasks) startVM(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, _, err := powerPayload(t)
	if err != nil {
		return nil, err
	}
	rep.Set(agentproto.Progress{Step: "start VM " + p.VMID})
	wasRunning, err := ts.powerOn(ctx, p.VMID, false, "VM "+p.VMID)
	if err != nil {
		return nil, err
	}
	return ts.powerResult(ctx, p.VMID, wasRunning), nil
}

// removeVM stops and deletes a VM that a materialize made: a test
// failover's cleanup. Run again it finds the VM gone, which is success.
func (ts *Tasks) removeVM(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, timeout, err := powerPayload(t)
	if err != nil {
		return nil, err
	}
	before, err := ts.d.Driver.PowerState(ctx, p.VMID)
	if errors.Is(err, driver.ErrVMNotFound) {
		return agentproto.PowerResult{PowerState: agentproto.PowerOff}, nil
	}
	if err != nil {
		return nil, vmError(p.VMID, err)
	}
	rep.Set(agentproto.Progress{Step: "remove VM " + p.VMID})
	if err := ts.d.Driver.Remove(ctx, p.VMID, timeout); err != nil {
		return nil, vmError(p.VMID, err)
	}
	// Gone, so off.
	return agentproto.PowerResult{WasRunning: before == agentproto.PowerRunning, PowerState: agentproto.PowerOff}, nil
}

// powerOn starts a VM unless it runs already: a start command run twice
// could boot a second instance of its guest. what begins the error's
// message ("VM x", or what was done before the start).
func (ts *Tasks) powerOn(ctx context.Context, vmID string, isolated bool, what string) (wasRunning bool, err error) {
	state, err := ts.d.Driver.PowerState(ctx, vmID)
	if err != nil {
		return false, vmError(vmID, err)
	}
	if state == agentproto.PowerRunning {
		return true, nil
	}
	if err := ts.d.Driver.Start(ctx, vmID, driver.StartOptions{Isolated: isolated}); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"%s did not start: %v. Fix the start command or the hypervisor on this host, then restart the job", what, err)}
	}
	return false, nil
}

func (ts *Tasks) powerResult(ctx context.Context, vmID string, wasRunning bool) agentproto.PowerResult {
	state, err := ts.d.Driver.PowerState(ctx, vmID)
	if err != nil {
		state = agentproto.PowerUnknown
	}
	return agentproto.PowerResult{WasRunning: wasRunning, PowerState: state}
}

// vmError says so when the VM is not on the host.
func vmError(vmID string, err error) error {
	if errors.Is(err, driver.ErrVMNotFound) {
		return &agentproto.TaskError{Code: agentproto.CodeVMNotFound, Message: fmt.Sprintf(
			"VM %s is not on this host (%v); check it on the host", vmID, err)}
	}
	return err
}

// willNotStop makes any failure of a stop a vm_will_not_stop: whatever
// went wrong, the VM may still run, and a planned failover must not go on.
func willNotStop(vmID string, timeout time.Duration, err error) error {
	var te *agentproto.TaskError
	switch {
	case errors.As(err, &te):
		return err
	case errors.Is(err, driver.ErrVMNotFound):
		return vmError(vmID, err)
	}
	return &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
		"VM %s did not shut down within %v and may still run: %v. Shut it down on its host, then restart the job", vmID, timeout, err)}
}

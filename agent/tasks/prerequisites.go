package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// checkPrerequisites checks what protection will need on this host. A
// check that fails is a result, not an error: the job shows every check.
func (ts *Tasks) checkPrerequisites(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	var payload agentproto.PrerequisitesPayload
	if len(t.Payload) > 0 {
		if err := json.Unmarshal(t.Payload, &payload); err != nil {
			return nil, &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: "the task's payload cannot be read: " + err.Error()}
		}
	}
	if payload.MinFreeBytes <= 0 {
		payload.MinFreeBytes = defaultMinFreeBytes
	}
	steps := []struct {
		name string
		run  func() agentproto.Check
	}{
		{"Agent and protocol versions", func() agentproto.Check {
			return agentproto.Check{OK: true, Message: fmt.Sprintf("agent %s, protocol %d", ts.d.Version, agentproto.ProtocolVersion)}
		}},
		{"Free space in the state directory", func() agentproto.Check { return freeSpace(ts.d.State.Path, payload.MinFreeBytes) }},
		{"Free space in the VM root", func() agentproto.Check { return freeSpace(ts.d.Driver.DataDir(), payload.MinFreeBytes) }},
		{"Driver " + ts.d.Driver.Name(), func() agentproto.Check {
			msg, err := ts.d.Driver.Check(ctx)
			if err != nil {
				return agentproto.Check{Message: err.Error()}
			}
			return agentproto.Check{OK: true, Message: msg}
		}},
		{"Clock against the vault", func() agentproto.Check { return ts.checkClock(ctx) }},
	}
	result := &agentproto.PrerequisitesResult{}
	for i, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.Set(agentproto.Progress{Step: s.name, Percent: i * 100 / len(steps), Message: "checking"})
		c := s.run()
		c.Name = s.name
		result.Checks = append(result.Checks, c)
	}
	rep.Set(agentproto.Progress{Step: "done", Percent: 100, Message: "all checks ran"})
	return result, nil
}

// defaultMinFreeBytes is the free space a host needs when the task does not say.
const defaultMinFreeBytes = 1 << 30

func freeSpace(path string, want int64) agentproto.Check {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return agentproto.Check{Message: fmt.Sprintf("cannot read the free space of %s: %v", path, err)}
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	msg := fmt.Sprintf("%.1f GiB free in %s (needs %.1f GiB)", float64(free)/(1<<30), path, float64(want)/(1<<30))
	return agentproto.Check{OK: free >= want, Message: msg}
}

// maxClockSkew is the largest difference with the vault's clock that
// recovery point times can live with.
const maxClockSkew = 60 * time.Second

func (ts *Tasks) checkClock(ctx context.Context) agentproto.Check {
	skew, err := ts.d.Clock.ClockSkew(ctx)
	if err != nil {
		return agentproto.Check{Message: fmt.Sprintf("the vault's clock could not be read (no heartbeat answered yet): %v", err)}
	}
	abs := max(skew, -skew).Round(time.Millisecond)
	return agentproto.Check{OK: abs <= maxClockSkew, Message: fmt.Sprintf("%v from the vault's clock (at most %v allowed); keep the host on NTP", abs, maxClockSkew)}
}

package models

import (
	"context"
	"math"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// speedWindow is how far back a run's speed looks: an average of the
// speeds between reports, each weighed by how recent it is, so one slow or
// fast stretch moves it little and a lasting change shows in a few.
// Agents count bytes in batches (16 MiB or more), so most reports of a
// slow copy repeat the last count: only a report that moves it measures.
const speedWindow = 30 * time.Second

// nextRate is the task's byte count and speed after a report. The count
// starts again with another run, or when the bytes go back or their total
// changes.
func nextRate(t *Task, p TaskProgress, now time.Time) map[string]any {
	attempt := p.Attempt
	if attempt == 0 {
		attempt = t.Attempts // an agent that does not say: the run leased now
	}
	restart := t.BytesAt == nil || attempt != t.ProgressAttempt || p.BytesDone < t.BytesDone || p.BytesTotal != t.BytesTotal
	switch {
	case restart || p.BytesTotal <= 0:
		return map[string]any{"progress_attempt": attempt, "bytes_done": p.BytesDone, "bytes_total": p.BytesTotal, "bytes_at": now,
			"speed_samples": 0, "bytes_per_second": 0.0}
	case p.BytesDone == t.BytesDone || !now.After(*t.BytesAt):
		return nil
	}
	dt := now.Sub(*t.BytesAt).Seconds()
	speed := float64(p.BytesDone-t.BytesDone) / dt
	if t.SpeedSamples > 0 {
		weight := 1 - math.Exp(-dt/speedWindow.Seconds())
		speed = t.BytesPerSecond + weight*(speed-t.BytesPerSecond)
	}
	return map[string]any{"bytes_done": p.BytesDone, "bytes_at": now, "speed_samples": t.SpeedSamples + 1, "bytes_per_second": speed}
}

// Estimate is how fast a run goes through its bytes and how long the rest
// takes at that speed; ok is false until two reports of the run have
// counted different bytes.
func (t Task) Estimate() (bytesPerSecond float64, remaining time.Duration, ok bool) {
	if t.SpeedSamples < 1 || t.BytesPerSecond <= 0 || t.BytesTotal <= 0 {
		return 0, 0, false
	}
	left := float64(max(t.BytesTotal-t.BytesDone, 0)) / t.BytesPerSecond
	return t.BytesPerSecond, time.Duration(left * float64(time.Second)), true
}

// RunningCopy is the replication or resynchronization of a VM that an
// agent runs now, or ErrNotFound.
func (s *Store) RunningCopy(ctx context.Context, vmID string) (*Task, error) {
	var t Task
	db := s.db.WithContext(ctx)
	err := db.Where("protection_id IN (?) AND state = ? AND kind IN ?", db.Model(&Protection{}).Select("id").Where("vm_id = ?", vmID),
		TaskLeased, []string{agentproto.TaskReplicate, agentproto.TaskResync}).Order("created_at DESC").First(&t).Error
	if err != nil {
		return nil, translateError(err)
	}
	return &t, nil
}

package models

import (
	"context"
	"math"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// rateWindow is how far back the speed of a run looks: an average over
// the reports, each weighed by how recent it is, so one slow or fast
// report moves it little and a lasting change of speed shows in a few.
const rateWindow = 15 * time.Second

// staleProgress is how old a last report can be before its speed says
// nothing about now (agents report every few seconds while they run).
const staleProgress = 30 * time.Second

// nextRate is the task's byte count and speed after a report. The count
// starts again when the bytes go back or their total changes (another run
// of the task) or the last report is stale; a speed needs two reports of
// the same count.
func nextRate(t *Task, p TaskProgress, now time.Time) map[string]any {
	restart := t.ProgressAt == nil || p.BytesDone < t.BytesDone || p.BytesTotal != t.BytesTotal || now.Sub(*t.ProgressAt) > staleProgress
	out := map[string]any{"bytes_done": p.BytesDone, "bytes_total": p.BytesTotal, "progress_at": now}
	if restart || p.BytesTotal <= 0 {
		out["progress_reports"], out["bytes_per_second"] = 1, 0.0
		return out
	}
	dt := now.Sub(*t.ProgressAt).Seconds()
	if dt <= 0 {
		out["progress_at"] = *t.ProgressAt // the same instant: add the bytes, not a speed
		return out
	}
	speed := float64(p.BytesDone-t.BytesDone) / dt
	if t.ProgressReports >= 2 {
		weight := 1 - math.Exp(-dt/rateWindow.Seconds())
		speed = t.BytesPerSecond + weight*(speed-t.BytesPerSecond)
	}
	out["progress_reports"], out["bytes_per_second"] = t.ProgressReports+1, speed
	return out
}

// Estimate is how fast a run goes through its bytes and how long the rest
// takes at that speed; ok is false until two reports of the run have come,
// when the last is stale, or when nothing moves.
func (t Task) Estimate(now time.Time) (bytesPerSecond float64, remaining time.Duration, ok bool) {
	if t.ProgressReports < 2 || t.ProgressAt == nil || now.Sub(*t.ProgressAt) > staleProgress || t.BytesPerSecond <= 0 || t.BytesTotal <= 0 {
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

package models

import (
	"context"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// FinishedCycleRetention is how long the task row of a scheduled cycle
// that ended is kept. A VM at a 30 s copy frequency makes 2,880 a day;
// what they said lives on where it is read: the recovery points, the
// protection's last cycle, the RPO history. Tasks of jobs stay with their
// jobs.
const FinishedCycleRetention = 24 * time.Hour

// pruneBatch bounds one delete, so a backlog of millions never holds the
// writer for long.
const pruneBatch = 5000

// PruneFinishedCycles deletes the task rows of scheduled cycles (tasks of
// no job) that ended more than FinishedCycleRetention ago, and returns how
// many went.
func (s *Store) PruneFinishedCycles(ctx context.Context) (int64, error) {
	cutoff := s.Now().Add(-FinishedCycleRetention)
	var total int64
	for ctx.Err() == nil {
		var ids []string
		err := s.db.WithContext(ctx).Model(&Task{}).
			Where("(job_id IS NULL OR job_id = '') AND kind = ? AND state IN ? AND updated_at < ?", agentproto.TaskReplicate,
				[]string{TaskSucceeded, TaskFailed, TaskCancelled}, cutoff).
			Limit(pruneBatch).Pluck("id", &ids).Error
		if err != nil || len(ids) == 0 {
			return total, translateError(err)
		}
		var n int64
		err = s.tx(ctx, func(tx *gorm.DB) error {
			// The state is checked again: a row changed since the search stays.
			res := tx.Where("id IN ? AND state IN ? AND updated_at < ?", ids, []string{TaskSucceeded, TaskFailed, TaskCancelled}, cutoff).Delete(&Task{})
			n = res.RowsAffected
			return res.Error
		})
		if err != nil {
			return total, err
		}
		total += n
		if len(ids) < pruneBatch {
			break
		}
	}
	return total, ctx.Err()
}

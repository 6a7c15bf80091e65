package models

import (
	"context"
	"strings"
	"time"

	"gorm.io/gorm"
)

// JobFilter selects jobs. Since and Until bound the creation time.
type JobFilter struct {
	State    string
	Type     string
	TargetID string
	Parent   string // the jobs a recovery plan's job started
	Since    *time.Time
	Until    *time.Time
}

// ListJobs lists jobs, newest first, with their steps.
func (s *Store) ListJobs(ctx context.Context, f JobFilter, p Page) ([]Job, string, error) {
	q := s.db.WithContext(ctx).Model(&Job{}).Preload("Steps", func(db *gorm.DB) *gorm.DB { return db.Order("seq") })
	if f.State != "" {
		q = q.Where("state = ?", f.State)
	}
	if f.Type != "" {
		q = q.Where("type = ?", f.Type)
	}
	if f.TargetID != "" {
		q = q.Where("target_id = ?", f.TargetID)
	}
	if f.Parent != "" {
		q = q.Where("parent_job_id = ?", f.Parent)
	}
	if f.Since != nil {
		q = q.Where("created_at >= ?", f.Since.UTC())
	}
	if f.Until != nil {
		q = q.Where("created_at < ?", f.Until.UTC())
	}
	var out []Job
	next, err := paginate(q, p, true, &out)
	return out, next, err
}

// JobTypes lists the distinct job types seen, for the Jobs tab's filter.
func (s *Store) JobTypes(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.WithContext(ctx).Model(&Job{}).Distinct("type").Order("type").Pluck("type", &out).Error
	return out, translateError(err)
}

// GetJob returns one job with its steps, or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, id string) (*Job, error) {
	var j Job
	err := s.db.WithContext(ctx).Preload("Steps", func(db *gorm.DB) *gorm.DB { return db.Order("seq") }).First(&j, "id = ?", id).Error
	if err != nil {
		return nil, translateError(err)
	}
	return &j, nil
}

// CreateJob stores a new job with its steps, all NotStarted unless set.
func (s *Store) CreateJob(ctx context.Context, a Actor, j *Job) error {
	v := &ValidationError{}
	j.Type = strings.TrimSpace(j.Type)
	if j.Type == "" {
		v.Add("type", "is required")
	}
	for i, st := range j.Steps {
		if strings.TrimSpace(st.Name) == "" {
			v.Add("steps", "step %d has no name", i+1)
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	j.ID = NewID(prefixJob)
	if j.State == "" {
		j.State = JobNotStarted
	}
	j.CreatedBy = a.Username
	for i := range j.Steps {
		j.Steps[i].ID = NewID(prefixJobStep)
		j.Steps[i].JobID = j.ID
		j.Steps[i].Seq = i + 1
		if j.Steps[i].State == "" {
			j.Steps[i].State = JobNotStarted
		}
	}
	return s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(j).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "job.create", "job", j.ID, j.Type, map[string]string{"target": j.TargetName})
	})
}

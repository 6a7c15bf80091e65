package models

import "context"

// AlertFilter selects alerts.
type AlertFilter struct {
	State string
}

// ListAlerts lists alerts, newest first.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter, p Page) ([]Alert, string, error) {
	q := s.db.WithContext(ctx).Model(&Alert{})
	if f.State != "" {
		q = q.Where("state = ?", f.State)
	}
	var out []Alert
	next, err := paginate(q, p, true, &out)
	return out, next, err
}

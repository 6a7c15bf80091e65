package models

import (
	"context"
	"encoding/json"

	"gorm.io/gorm"
)

// Actor is who makes a change: a user through the portal or the API, or the
// vault itself ("system"). Every change is audited under its actor.
type Actor struct {
	UserID     string
	Username   string
	RequestID  string
	RemoteAddr string
}

// SystemActor is the vault acting on its own (start-up, scheduler).
var SystemActor = Actor{Username: "system"}

// audit writes one audit event inside tx, so the event and the change commit
// or roll back together. details must never hold a secret.
func (s *Store) audit(tx *gorm.DB, a Actor, action, kind, id, name string, details any) error {
	ev := AuditEvent{
		ID: NewID(prefixAudit), Time: s.Now(), ActorID: a.UserID, Actor: a.Username,
		Action: action, ObjectKind: kind, ObjectID: id, ObjectName: name,
		RequestID: a.RequestID, RemoteAddr: a.RemoteAddr,
	}
	if ev.Actor == "" {
		ev.Actor = "system"
	}
	if details != nil {
		b, err := json.Marshal(details)
		if err != nil {
			return err
		}
		ev.Details = string(b)
	}
	return tx.Create(&ev).Error
}

// AuditFilter selects audit events; empty fields select all.
type AuditFilter struct {
	ObjectID   string
	ObjectKind string
	Action     string
	Actor      string // the user name, or "system"
}

// ListAudit lists audit events, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter, p Page) ([]AuditEvent, string, error) {
	q := s.db.WithContext(ctx).Model(&AuditEvent{})
	if f.ObjectID != "" {
		q = q.Where("object_id = ?", f.ObjectID)
	}
	if f.ObjectKind != "" {
		q = q.Where("object_kind = ?", f.ObjectKind)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	var out []AuditEvent
	next, err := paginate(q, p, true, &out)
	return out, next, err
}

// AuditChoices are the values the audit log's filters can take: the users,
// actions and object kinds that occur in it.
type AuditChoices struct {
	Actors, Actions, Kinds []string
}

// ListAuditChoices reads the filters' choices from the log.
func (s *Store) ListAuditChoices(ctx context.Context) (AuditChoices, error) {
	var c AuditChoices
	db := s.db.WithContext(ctx).Model(&AuditEvent{})
	for _, col := range []struct {
		name string
		out  *[]string
	}{{"actor", &c.Actors}, {"action", &c.Actions}, {"object_kind", &c.Kinds}} {
		if err := db.Session(&gorm.Session{}).Distinct(col.name).Order(col.name).Limit(500).Pluck(col.name, col.out).Error; err != nil {
			return c, err
		}
	}
	return c, nil
}

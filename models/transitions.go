package models

import (
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Every change of a protection's state passes the transition table
// (rules.go), however the code writes it: a callback on the database
// checks each update of protections.state against the state of the rows it
// touches, and each new protection's first state. A write the table
// forbids fails, and its transaction rolls back.

// registerTransitionGuard installs the checks on db.
func registerTransitionGuard(db *gorm.DB) error {
	if err := db.Callback().Update().Before("gorm:update").Register("lifeboat:protection_transitions", checkStateUpdate); err != nil {
		return err
	}
	return db.Callback().Create().Before("gorm:create").Register("lifeboat:protection_first_state", checkStateCreate)
}

func isProtections(db *gorm.DB) bool {
	return db.Statement.Schema != nil && db.Statement.Schema.Table == "protections"
}

// checkStateUpdate refuses an update of protections.state that the table
// forbids for any row it touches.
func checkStateUpdate(db *gorm.DB) {
	if db.Error != nil || !isProtections(db) {
		return
	}
	to, ok := newState(db.Statement)
	if !ok {
		return
	}
	q := db.Session(&gorm.Session{NewDB: true, SkipHooks: true}).Table("protections").Select("id, state")
	if where, ok := db.Statement.Clauses["WHERE"]; ok {
		q = q.Clauses(where.Expression)
	} else if p, ok := db.Statement.Dest.(*Protection); ok && p.ID != "" {
		q = q.Where("id = ?", p.ID) // Save: gorm adds the key's WHERE after this check
	} else {
		db.AddError(fmt.Errorf("protection state change to %s without a WHERE clause", to))
		return
	}
	var rows []struct{ ID, State string }
	if err := q.Find(&rows).Error; err != nil {
		db.AddError(err)
		return
	}
	for _, r := range rows {
		if r.State == to {
			continue
		}
		if err := CheckTransition(r.State, to); err != nil {
			db.AddError(fmt.Errorf("protection %s: %w", r.ID, err))
			return
		}
	}
}

// newState is the state an update writes, if it writes one.
func newState(stmt *gorm.Statement) (string, bool) {
	switch d := stmt.Dest.(type) {
	case map[string]any:
		v, ok := d["state"]
		if !ok {
			return "", false
		}
		s, ok := v.(string)
		return s, ok
	case map[string]string:
		v, ok := d["state"]
		return v, ok
	}
	// Update("state", x) arrives as a map; a struct (Save/Updates with a
	// struct) carries its State field.
	if set, ok := stmt.Clauses["SET"]; ok {
		if s, ok := set.Expression.(clause.Set); ok {
			for _, a := range s {
				if a.Column.Name == "state" {
					v, ok := a.Value.(string)
					return v, ok
				}
			}
		}
	}
	if p, ok := stmt.Dest.(*Protection); ok && p.State != "" {
		return p.State, true
	}
	return "", false
}

// checkStateCreate refuses a protection that starts anywhere but where
// protection starts.
func checkStateCreate(db *gorm.DB) {
	if db.Error != nil || !isProtections(db) {
		return
	}
	if p, ok := db.Statement.Dest.(*Protection); ok {
		if err := CheckTransition(StateUnprotected, p.State); err != nil {
			db.AddError(err)
		}
	}
}

// setState moves a protection to another state; the transition guard
// refuses a move the table forbids. Moving to the state it is in already
// does nothing.
func setState(tx *gorm.DB, protectionID, to string) error {
	return tx.Model(&Protection{}).Where("id = ? AND state <> ?", protectionID, to).Update("state", to).Error
}

// setStateFrom moves a protection to a state only while it is still in
// from: a task's end that arrives after another operation moved the VM on
// (a resync's result after a failover began) leaves the VM where it is.
func setStateFrom(tx *gorm.DB, protectionID, from, to string) error {
	return tx.Model(&Protection{}).Where("id = ? AND state = ?", protectionID, from).Update("state", to).Error
}

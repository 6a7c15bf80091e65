package models

import (
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// ErrNotFound is returned by Store methods when the object asked for does not
// exist. Callers match it with errors.Is.
var ErrNotFound = errors.New("not found")

// ConflictError says a write was refused because it clashes with what is
// stored: a duplicate name, or an object still in use.
type ConflictError struct {
	Code    string // stable, e.g. "name_taken"
	Message string
}

func (e *ConflictError) Error() string { return e.Message }

// FieldError names one invalid input field and why it is invalid.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError collects every invalid field of one input, so a form or an
// API client learns about all of them at once.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.Fields))
	for _, f := range e.Fields {
		parts = append(parts, f.Field+": "+f.Reason)
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Add records a problem with a field.
func (e *ValidationError) Add(field, format string, args ...any) {
	e.Fields = append(e.Fields, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Map returns field → reason (the first reason per field), for forms.
func (e *ValidationError) Map() map[string]string {
	m := make(map[string]string, len(e.Fields))
	for _, f := range e.Fields {
		if _, ok := m[f.Field]; !ok {
			m[f.Field] = f.Reason
		}
	}
	return m
}

// Err returns e when it holds at least one problem, else nil.
func (e *ValidationError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// Invalid builds a ValidationError for a single field.
func Invalid(field, format string, args ...any) error {
	v := &ValidationError{}
	v.Add(field, format, args...)
	return v
}

// translateError maps database errors to the package's errors so that no
// driver message (and no SQL) travels further up.
func translateError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return &ConflictError{Code: "conflict", Message: "an object with the same unique value already exists"}
	}
	return err
}

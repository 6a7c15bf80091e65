// Package handlers holds the vault's HTTP handlers: the portal's pages, the
// JSON API under /api/v1 and (later) the agent endpoint. Handlers are thin:
// bind, validate, call the store, convert to a view model, render.
package handlers

import (
	"log/slog"
	"time"

	"github.com/lifeboat-dr/lifeboat/models"
)

// Version is the vault's version, shown in the portal and the API.
const Version = "0.1.0-dev"

// Handlers serves every route. Its dependencies are explicit.
type Handlers struct {
	store *models.Store
	log   *slog.Logger
	now   func() time.Time
	// secureCookies is false only in tests over plain HTTP.
	secureCookies bool
	logins        *loginThrottle
}

// Deps are what New needs.
type Deps struct {
	Store         *models.Store
	Logger        *slog.Logger
	Now           func() time.Time
	SecureCookies bool
}

// New makes the handlers.
func New(d Deps) *Handlers {
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Handlers{store: d.Store, log: d.Logger, now: d.Now, secureCookies: d.SecureCookies, logins: newLoginThrottle(d.Now)}
}

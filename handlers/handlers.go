// Package handlers holds the vault's HTTP handlers: the portal's pages, the
// JSON API under /api/v1 and (later) the agent endpoint. Handlers are thin:
// bind, validate, call the store, convert to a view model, render.
package handlers

import (
	"log/slog"
	"time"

	"github.com/lifeboat-dr/lifeboat/metrics"
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
	streams       *liveStreams // open live pages per session (events.go)

	// The agent endpoint and registration keys.
	ca            AgentCA
	agent         AgentSettings
	wakeups       *wakeups
	vaultURL      string // what agents connect to
	caFingerprint string // what agents pin

	metrics       *metrics.Metrics
	metricsAccess MetricsAccess
}

// Deps are what New needs.
type Deps struct {
	Store         *models.Store
	Logger        *slog.Logger
	Now           func() time.Time
	SecureCookies bool
	// CA signs hosts' certificates; nil disables the agent endpoint's
	// registration (tests of the portal alone).
	CA            AgentCA
	Agent         AgentSettings
	VaultURL      string
	CAFingerprint string
	// Metrics is who may scrape /metrics; the zero value is loopback only.
	Metrics MetricsAccess
}

// New makes the handlers.
func New(d Deps) *Handlers {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Agent == (AgentSettings{}) {
		d.Agent = DefaultAgentSettings
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handlers{store: d.Store, log: d.Logger, now: d.Now, secureCookies: d.SecureCookies, logins: newLoginThrottle(d.Now),
		ca: d.CA, agent: d.Agent, wakeups: newWakeups(), vaultURL: d.VaultURL, caFingerprint: d.CAFingerprint,
		metrics: metrics.New(d.Store, d.Logger), metricsAccess: d.Metrics}
	h.streams = newLiveStreams()
	return h
}

// SetVaultURL sets the address written into registration keys, when it is
// known only once the listener is open. Call it before serving.
func (h *Handlers) SetVaultURL(url string) { h.vaultURL = url }

// WakeHost ends the wait of the host's long poll: new work is queued for it.
func (h *Handlers) WakeHost(hostID string) { h.wakeups.wake(hostID) }

// RelayWakeups passes every wake-up of a host to publish (the other vaults
// of the database); call it before serving.
func (h *Handlers) RelayWakeups(publish func(hostID string)) { h.wakeups.relay = publish }

// WakeHostHere releases the polls of a host that this vault holds: for a
// wake-up another vault relayed.
func (h *Handlers) WakeHostHere(hostID string) { h.wakeups.wakeHere(hostID) }

// SchedulerPass records how long a scheduler pass took, for /metrics.
func (h *Handlers) SchedulerPass(d time.Duration) { h.metrics.SchedulerPass(d) }

package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// vault is the running program: its store, its handler and its listener.
type vault struct {
	cfg    *config
	log    *slog.Logger
	store  *models.Store
	echo   *echo.Echo
	tls    *tls.Config
	stdout io.Writer

	agentSettings handlers.AgentSettings
	handlers      *handlers.Handlers
	relay         *models.WakeRelay // wake-ups to and from the other vaults of the database

	// leader: whether this process runs the scheduler and the watch loop
	// (one vault of several on PostgreSQL; always on SQLite).
	leadership *models.Leadership
	leading    atomic.Bool
	leadKnown  atomic.Bool // the first answer is logged, whichever it is
}

// lead says whether this process leads now, taking the lead when the
// vault that had it is gone, and logs each change.
func (v *vault) lead(ctx context.Context) bool {
	ok, err := v.leadership.Lead(ctx)
	if err != nil && ctx.Err() == nil {
		v.log.Warn("leadership", slog.Any("error", err))
	}
	if was := v.leading.Swap(ok); was != ok || !v.leadKnown.Swap(true) {
		if ok {
			v.log.Info("this vault leads: it runs the scheduler and the watch loop")
		} else {
			v.log.Info("another vault leads the scheduler; this one serves requests")
		}
	}
	return ok
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openVault prepares everything that can fail before the listener opens:
// data directory, vault key, database, first user, TLS.
func openVault(ctx context.Context, cfg *config, stdout, stderr io.Writer) (*vault, error) {
	log := newLogger(cfg, stderr)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, &configError{"data-dir", "LIFEBOAT_DATA_DIR", fmt.Sprintf("cannot create %s: %v", cfg.DataDir, errors.Unwrap(err))}
	}
	key, err := pki.LoadOrCreateKey(filepath.Join(cfg.DataDir, "vault.key"))
	if err != nil {
		return nil, err
	}
	sealer, err := models.NewSealer(key)
	if err != nil {
		return nil, err
	}
	store, err := models.Open(ctx, models.Options{DSN: cfg.DB, Sealer: sealer, Logger: log, Location: cfg.TimeZone})
	if se := (*models.SchemaError)(nil); errors.As(err, &se) {
		return nil, err // the database is reachable, but not one this vault runs on: the error says why and what to do
	}
	if err != nil {
		return nil, fmt.Errorf("setting --db (LIFEBOAT_DB): %w", err)
	}
	v := &vault{cfg: cfg, log: log, store: store, stdout: stdout}
	if err := v.bootstrapAdmin(ctx); err != nil {
		store.Close()
		return nil, err
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "tls"))
	if err != nil {
		store.Close()
		return nil, err
	}
	var served tls.Certificate
	if v.tls, served, err = tlsConfig(cfg, ca); err != nil {
		store.Close()
		return nil, err
	}
	fingerprint, err := pinnedFingerprint(served)
	if err != nil {
		store.Close()
		return nil, err
	}
	v.agentSettings = handlers.AgentSettings{Heartbeat: cfg.AgentHeartbeat, PollWait: cfg.AgentPollWait,
		Progress: handlers.DefaultAgentSettings.Progress, Lease: cfg.TaskLease}
	h := handlers.New(handlers.Deps{Store: store, Logger: log, SecureCookies: true, CA: agentCA{ca},
		Agent: v.agentSettings, VaultURL: cfg.PublicURL, CAFingerprint: fingerprint,
		Metrics: handlers.MetricsAccess{Mode: cfg.Metrics, TokenSHA256: cfg.MetricsTokenSHA256}})
	v.handlers = h
	// Several vaults on one PostgreSQL database: work queued by one wakes
	// the polls another holds (LISTEN/NOTIFY); nothing on SQLite.
	v.relay = store.NewWakeRelay()
	h.RelayWakeups(v.relay.Publish)
	v.echo = newEcho(h, log)
	return v, nil
}

// bootstrapAdmin creates the first Owner, "admin", when there are no users.
// A generated password is printed once, to stdout, never to the log.
func (v *vault) bootstrapAdmin(ctx context.Context) error {
	n, err := v.store.CountUsers(ctx)
	if err != nil || n > 0 {
		return err
	}
	password, generated := v.cfg.AdminPassword, false
	if password == "" {
		password, generated = randomPassword(), true
	}
	if _, err := v.store.CreateUser(ctx, models.SystemActor, models.UserInput{Username: "admin", Password: password, Role: models.RoleOwner}); err != nil {
		return fmt.Errorf("create the first user: %w", err)
	}
	if generated {
		fmt.Fprintf(v.stdout, "Created the first Owner: user \"admin\" with password %s\nIt is shown only this once; change it under Users after logging in.\n", password)
	} else {
		fmt.Fprintln(v.stdout, "Created the first Owner: user \"admin\" with the password from --admin-password.")
	}
	return nil
}

func randomPassword() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// tlsConfig uses the operator's certificate, or one from the vault CA, and
// asks agents for their client certificates, verified against the vault CA.
// The served chain ends with the certificate agents pin.
func tlsConfig(cfg *config, ca *pki.CA) (*tls.Config, tls.Certificate, error) {
	var cert tls.Certificate
	var err error
	if cfg.TLSCert != "" {
		cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, cert, &configError{"tls-cert", "LIFEBOAT_TLS_CERT", fmt.Sprintf("cannot load the certificate and key: %v", err)}
		}
	} else {
		hosts := []string{"localhost", "127.0.0.1", "::1"}
		if h, _, _ := net.SplitHostPort(cfg.Listen); h != "" && h != "localhost" && h != "127.0.0.1" && h != "::1" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
		if name, err := os.Hostname(); err == nil && name != "" && name != "localhost" {
			hosts = append(hosts, name)
		}
		hosts = append(hosts, cfg.TLSSANs...)
		if cert, err = ca.ServerCertificate(filepath.Join(cfg.DataDir, "tls"), hosts); err != nil {
			return nil, cert, fmt.Errorf("issue the vault's HTTPS certificate: %w", err)
		}
		cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// Browsers and API clients send no certificate; agents must, and
		// the agent endpoint refuses calls without one.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  ca.Pool(),
	}, cert, nil
}

// Serve listens until ctx ends, then shuts down gracefully: requests in
// flight get up to 15 seconds to finish.
func (v *vault) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", v.cfg.Listen)
	if err != nil {
		return &configError{"listen", "LIFEBOAT_LISTEN", fmt.Sprintf("cannot listen on %s: %v", v.cfg.Listen, errors.Unwrap(err))}
	}
	srv := &http.Server{
		Handler:           v.echo,
		TLSConfig:         v.tls,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // above the agents' 30 s long-poll
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(v.log.Handler(), slog.LevelWarn),
	}
	url := "https://" + ln.Addr().String()
	if v.cfg.PublicURL == "" {
		// Known only now when the port was 0; set before the first request.
		v.handlers.SetVaultURL(publicURL(ln.Addr().(*net.TCPAddr)))
	}
	fmt.Fprintf(v.stdout, "Lifeboat vault is serving %s (log in as an Owner; health at %s/healthz)\n", url, url)
	v.log.Info("vault started", "url", url, "database", v.store.Kind(), "data_dir", v.cfg.DataDir, "metrics", v.cfg.Metrics)
	v.leadership = v.store.Leadership()
	defer v.leadership.Release()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	go v.housekeeping(ctx)
	go v.watchAgents(ctx)
	go v.relay.Run(ctx, v.handlers.WakeHostHere)
	go v.store.FlushHeartbeatsEvery(ctx)
	if v.cfg.Alerts.configured() {
		sender := &alertSender{store: v.store, channels: v.cfg.Alerts, client: &http.Client{Timeout: 20 * time.Second}, log: v.log, vaultURL: url,
			leads: v.leading.Load}
		go sender.run(ctx, 5*time.Second)
		v.log.Info("alerts are delivered", "webhook", v.cfg.Alerts.Webhook != "", "email", v.cfg.Alerts.SMTPAddr != "")
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	v.log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// publicURL is the default address agents use: the listener's, with a
// wildcard address replaced by the host's name.
func publicURL(addr *net.TCPAddr) string {
	if addr.IP.IsUnspecified() {
		if name, err := os.Hostname(); err == nil && name != "" {
			return "https://" + net.JoinHostPort(name, fmt.Sprint(addr.Port))
		}
	}
	return "https://" + addr.String()
}

// housekeeping purges expired sessions and tokens every hour, deletes the
// tasks of cycles that ended a day ago, and folds and prunes the RPO
// history.
func (v *vault) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if !v.lead(ctx) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second): // not leading: look again soon
				continue
			}
		}
		if err := v.store.PurgeExpired(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("purge expired sessions", slog.Any("error", err))
		}
		if n, err := v.store.PruneFinishedCycles(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("delete the tasks of cycles that ended a day ago", slog.Any("error", err))
		} else if n > 0 {
			v.log.Debug("tasks of cycles that ended a day ago deleted", "tasks", n)
		}
		if folded, deleted, err := v.store.CompactRPOHistory(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("fold and prune the RPO history", slog.Any("error", err))
		} else if folded+deleted > 0 {
			v.log.Debug("RPO history folded by the hour and pruned", "folded", folded, "deleted", deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchAgents queues the replication cycles that are due, every second
// (a cycle starts within about a second of its time); and, every few
// seconds, returns the tasks of agents that stopped reporting to the
// queue, brings VMs' health up to date, samples the RPO history, moves
// recovery plans on, and marks hosts that stopped sending heartbeats
// Disconnected (with an alert). Three missed heartbeats make a host
// Disconnected.
func (v *vault) watchAgents(ctx context.Context) {
	every := min(v.agentSettings.Heartbeat, 5*time.Second)
	t := time.NewTicker(min(every, time.Second))
	defer t.Stop()
	var sampled, watched time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !v.lead(ctx) {
			continue // another vault runs this loop; take over when it is gone
		}
		if time.Since(watched) >= every {
			watched = time.Now()
			v.watch(ctx, &sampled)
		}
		passStart := time.Now()
		queued, err := v.store.QueueDueCycles(ctx)
		v.handlers.SchedulerPass(time.Since(passStart))
		if err != nil && ctx.Err() == nil {
			v.log.Warn("schedule replication cycles", slog.Any("error", err))
		}
		hosts := make([]string, len(queued))
		for i, t := range queued {
			hosts[i] = t.HostID
		}
		go wakeSpread(ctx, hosts, v.handlers.WakeHost)
	}
}

// wakeSpreadOver is the span over which the hosts of a pass's cycles are
// woken.
const wakeSpreadOver = 900 * time.Millisecond

// wakeSpread wakes the hosts of the cycles one pass queued, spread evenly
// over wakeSpreadOver rather than all at once: a thousand agents woken
// together would queue their lease, progress and result behind SQLite's
// one writer and each wait for all the others. A cycle starts at most
// that much later (an agent whose poll begins meanwhile takes it at once).
func wakeSpread(ctx context.Context, hosts []string, wake func(string)) {
	if len(hosts) == 0 {
		return
	}
	gap := wakeSpreadOver / time.Duration(len(hosts))
	for i, h := range hosts {
		if i > 0 && gap >= time.Millisecond {
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap):
			}
		}
		wake(h)
	}
}

// watch is the slower part of the watch loop (watchAgents).
func (v *vault) watch(ctx context.Context, sampled *time.Time) {
	if n, err := v.store.ReapExpiredLeases(ctx); err != nil && ctx.Err() == nil {
		v.log.Warn("return expired task leases", slog.Any("error", err))
	} else if n > 0 {
		v.log.Info("task leases expired; tasks returned to the queue", "tasks", n)
	}
	if err := v.store.RefreshHealth(ctx); err != nil && ctx.Err() == nil {
		v.log.Warn("bring VMs' health up to date", slog.Any("error", err))
	}
	if time.Since(*sampled) >= time.Minute {
		// Samples are 5 minutes apart; looking once a minute is enough.
		*sampled = time.Now()
		if _, err := v.store.SampleRPO(ctx); err != nil && ctx.Err() == nil {
			v.log.Warn("sample the RPO history", slog.Any("error", err))
		}
	}
	woken, err := v.store.AdvancePlans(ctx)
	if err != nil && ctx.Err() == nil {
		v.log.Warn("move recovery plans on", slog.Any("error", err))
	}
	for _, id := range woken {
		v.handlers.WakeHost(id)
	}
	if n, err := v.store.CleanUpContainers(ctx); err != nil && ctx.Err() == nil {
		v.log.Warn("delete emptied Azure containers; retried later", slog.Any("error", err))
	} else if n > 0 {
		v.log.Info("deleted emptied Azure containers of unprotected VMs", "containers", n)
	}
	hosts, err := v.store.MarkSilentHostsDisconnected(ctx, 3*v.agentSettings.Heartbeat)
	if err != nil && ctx.Err() == nil {
		v.log.Warn("check host heartbeats", slog.Any("error", err))
	}
	for _, h := range hosts {
		v.log.Warn("host disconnected: no heartbeat", "host_id", h.ID, "host", h.Name)
	}
}

// Close releases the database.
func (v *vault) Close() error { return v.store.Close() }

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// envDuration reads a duration from the environment; a malformed one is
// left to the flag parser to refuse, by giving it the raw text.
func envDuration(getenv func(string) string, name string, def time.Duration) time.Duration {
	if v := getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		return -1 // refused by validate, naming the setting
	}
	return def
}

// config is the vault's configuration, from flags with environment fallbacks.
type config struct {
	DataDir        string
	Listen         string
	DB             string
	TLSCert        string
	TLSKey         string
	TLSSANs        []string
	AdminPassword  string
	LogFormat      string
	LogLevel       string
	PublicURL      string
	TimeZone       *time.Location
	AgentHeartbeat time.Duration
	AgentPollWait  time.Duration
	TaskLease      time.Duration
	Alerts         alertChannels
	// Metrics is who may scrape /metrics: loopback (default), token, off.
	Metrics            string
	MetricsTokenSHA256 []byte
}

// configError names the setting that is wrong and what is wrong with it.
type configError struct {
	Flag, Env, Problem string
}

func (e *configError) Error() string {
	return fmt.Sprintf("setting --%s (%s): %s", e.Flag, e.Env, e.Problem)
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("lifeboat-vault", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	var sans string
	fs.StringVar(&c.DataDir, "data-dir", env("LIFEBOAT_DATA_DIR", "./data"), "directory for the database, the vault CA and the vault key (LIFEBOAT_DATA_DIR)")
	fs.StringVar(&c.Listen, "listen", env("LIFEBOAT_LISTEN", "127.0.0.1:8443"), "host:port for HTTPS (LIFEBOAT_LISTEN)")
	fs.StringVar(&c.DB, "db", env("LIFEBOAT_DB", ""), "database: a SQLite file path, or a postgres:// URL; default DATA_DIR/lifeboat.db (LIFEBOAT_DB)")
	fs.StringVar(&c.TLSCert, "tls-cert", env("LIFEBOAT_TLS_CERT", ""), "PEM certificate for HTTPS; default: one signed by the vault CA (LIFEBOAT_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", env("LIFEBOAT_TLS_KEY", ""), "PEM private key of --tls-cert (LIFEBOAT_TLS_KEY)")
	fs.StringVar(&sans, "tls-san", env("LIFEBOAT_TLS_SANS", ""), "extra comma-separated host names or IPs for the generated certificate (LIFEBOAT_TLS_SANS)")
	fs.StringVar(&c.AdminPassword, "admin-password", env("LIFEBOAT_ADMIN_PASSWORD", ""), "password of the first Owner, 'admin', created on first start; default: a random one printed once (LIFEBOAT_ADMIN_PASSWORD)")
	fs.StringVar(&c.LogFormat, "log-format", env("LIFEBOAT_LOG_FORMAT", "text"), "log format: text or json (LIFEBOAT_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("LIFEBOAT_LOG_LEVEL", "info"), "log level: debug, info, warn or error (LIFEBOAT_LOG_LEVEL)")
	var zone string
	fs.StringVar(&zone, "time-zone", env("LIFEBOAT_TIME_ZONE", "Local"), "the zone in which policies' work hours and resync windows are read, such as Europe/Paris (LIFEBOAT_TIME_ZONE)")
	fs.StringVar(&c.PublicURL, "public-url", env("LIFEBOAT_PUBLIC_URL", ""), "the https URL agents reach the vault at, written into registration keys; default https://LISTEN (LIFEBOAT_PUBLIC_URL)")
	fs.DurationVar(&c.AgentHeartbeat, "agent-heartbeat", envDuration(getenv, "LIFEBOAT_AGENT_HEARTBEAT", 15*time.Second), "how often agents send heartbeats; three missed make a host Disconnected (LIFEBOAT_AGENT_HEARTBEAT)")
	fs.DurationVar(&c.AgentPollWait, "agent-poll-wait", envDuration(getenv, "LIFEBOAT_AGENT_POLL_WAIT", 25*time.Second), "longest the vault holds an agent's poll when there is no work (LIFEBOAT_AGENT_POLL_WAIT)")
	fs.DurationVar(&c.TaskLease, "task-lease", envDuration(getenv, "LIFEBOAT_TASK_LEASE", 60*time.Second), "how long a task stays with an agent that stops reporting before it is queued again (LIFEBOAT_TASK_LEASE)")
	fs.StringVar(&c.Alerts.Webhook, "alert-webhook", env("LIFEBOAT_ALERT_WEBHOOK", ""), "an http(s) URL that gets each new alert as a JSON POST (LIFEBOAT_ALERT_WEBHOOK)")
	fs.StringVar(&c.Alerts.SMTPAddr, "smtp-addr", env("LIFEBOAT_SMTP_ADDR", ""), "host:port of the mail server that sends alerts by email; empty: no email (LIFEBOAT_SMTP_ADDR)")
	fs.StringVar(&c.Alerts.SMTPFrom, "smtp-from", env("LIFEBOAT_SMTP_FROM", ""), "the sender address of alert emails (LIFEBOAT_SMTP_FROM)")
	var smtpTo string
	fs.StringVar(&smtpTo, "smtp-to", env("LIFEBOAT_SMTP_TO", ""), "comma-separated addresses that get alert emails (LIFEBOAT_SMTP_TO)")
	fs.StringVar(&c.Alerts.SMTPUsername, "smtp-username", env("LIFEBOAT_SMTP_USERNAME", ""), "user for SMTP authentication, if the server wants it (LIFEBOAT_SMTP_USERNAME); the password only from LIFEBOAT_SMTP_PASSWORD")
	c.Alerts.SMTPPassword = getenv("LIFEBOAT_SMTP_PASSWORD")
	fs.StringVar(&c.Metrics, "metrics", env("LIFEBOAT_METRICS", "loopback"), "who may scrape /metrics: loopback (clients on this machine, no token), token (any client sending the scrape token) or off (LIFEBOAT_METRICS)")
	var tokenHash string
	fs.StringVar(&tokenHash, "metrics-token-sha256", env("LIFEBOAT_METRICS_TOKEN_SHA256", ""), "hex SHA-256 of the scrape token for --metrics=token, e.g. from: printf %s \"$TOKEN\" | sha256sum (LIFEBOAT_METRICS_TOKEN_SHA256)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: the vault takes only flags (see --help)", fs.Arg(0))
	}
	for _, s := range strings.Split(sans, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.TLSSANs = append(c.TLSSANs, s)
		}
	}
	for _, s := range strings.Split(smtpTo, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Alerts.SMTPTo = append(c.Alerts.SMTPTo, s)
		}
	}
	if c.DB == "" {
		c.DB = filepath.Join(c.DataDir, "lifeboat.db")
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, &configError{"time-zone", "LIFEBOAT_TIME_ZONE", fmt.Sprintf("%q is not a time zone name such as Europe/Paris or UTC", zone)}
	}
	c.TimeZone = loc
	if tokenHash != "" {
		b, err := hex.DecodeString(strings.TrimSpace(tokenHash))
		if err != nil || len(b) != sha256.Size {
			return nil, &configError{"metrics-token-sha256", "LIFEBOAT_METRICS_TOKEN_SHA256", "is not a SHA-256 in hex (64 characters); make it with: printf %s \"$TOKEN\" | sha256sum"}
		}
		c.MetricsTokenSHA256 = b
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) validate() error {
	if c.DataDir == "" {
		return &configError{"data-dir", "LIFEBOAT_DATA_DIR", "must not be empty"}
	}
	if fi, err := os.Stat(c.DataDir); err == nil && !fi.IsDir() {
		return &configError{"data-dir", "LIFEBOAT_DATA_DIR", fmt.Sprintf("%s exists and is not a directory", c.DataDir)}
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return &configError{"listen", "LIFEBOAT_LISTEN", fmt.Sprintf("%q is not host:port, e.g. 127.0.0.1:8443 or :8443", c.Listen)}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return &configError{"listen", "LIFEBOAT_LISTEN", fmt.Sprintf("port %q is not a number from 0 to 65535", port)}
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		if _, err := net.LookupHost(host); err != nil {
			return &configError{"listen", "LIFEBOAT_LISTEN", fmt.Sprintf("host %q is neither an IP address nor a resolvable name", host)}
		}
	}
	if strings.Contains(c.DB, "://") {
		u, err := url.Parse(c.DB)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			return &configError{"db", "LIFEBOAT_DB", "must be a SQLite file path or a URL like postgres://USER@HOST:5432/DBNAME"}
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return &configError{"tls-cert", "LIFEBOAT_TLS_CERT", "give both --tls-cert and --tls-key, or neither to use the vault CA"}
	}
	for _, f := range []struct{ flag, env, path string }{{"tls-cert", "LIFEBOAT_TLS_CERT", c.TLSCert}, {"tls-key", "LIFEBOAT_TLS_KEY", c.TLSKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return &configError{f.flag, f.env, fmt.Sprintf("cannot read %s: %v", f.path, errors.Unwrap(err))}
		}
	}
	if c.AdminPassword != "" && (utf8.RuneCountInString(c.AdminPassword) < 12 || len(c.AdminPassword) > 72) {
		return &configError{"admin-password", "LIFEBOAT_ADMIN_PASSWORD", "must be 12 to 72 characters long"}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return &configError{"log-format", "LIFEBOAT_LOG_FORMAT", fmt.Sprintf("%q is not text or json", c.LogFormat)}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return &configError{"public-url", "LIFEBOAT_PUBLIC_URL", fmt.Sprintf("%q is not an https URL of a host, such as https://vault.example.net:8443", c.PublicURL)}
		}
		c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	}
	if err := c.Alerts.validate(); err != nil {
		return err
	}
	if c.AgentHeartbeat < time.Second || c.AgentHeartbeat > 10*time.Minute {
		return &configError{"agent-heartbeat", "LIFEBOAT_AGENT_HEARTBEAT", "must be between 1s and 10m"}
	}
	if c.AgentPollWait < time.Second || c.AgentPollWait > 50*time.Second {
		return &configError{"agent-poll-wait", "LIFEBOAT_AGENT_POLL_WAIT", "must be between 1s and 50s (the server's write timeout is 60s)"}
	}
	if c.TaskLease < 2*time.Second || c.TaskLease > time.Hour {
		return &configError{"task-lease", "LIFEBOAT_TASK_LEASE", "must be between 2s and 1h"}
	}
	switch c.Metrics {
	case "loopback", "off":
		if c.MetricsTokenSHA256 != nil {
			return &configError{"metrics-token-sha256", "LIFEBOAT_METRICS_TOKEN_SHA256", fmt.Sprintf("a scrape token is only used with --metrics=token, not %s; set both, or neither", c.Metrics)}
		}
	case "token":
		if c.MetricsTokenSHA256 == nil {
			return &configError{"metrics", "LIFEBOAT_METRICS", "token needs --metrics-token-sha256, the SHA-256 of the scrape token"}
		}
	default:
		return &configError{"metrics", "LIFEBOAT_METRICS", fmt.Sprintf("%q is not loopback, token or off", c.Metrics)}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return &configError{"log-level", "LIFEBOAT_LOG_LEVEL", fmt.Sprintf("%q is not debug, info, warn or error", c.LogLevel)}
	}
	return nil
}

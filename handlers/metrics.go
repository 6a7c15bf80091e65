package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// Who may scrape /metrics.
const (
	// MetricsLoopback serves clients on the vault's own machine only, with
	// no token: the default, safe on any network.
	MetricsLoopback = "loopback"
	// MetricsToken serves any client that sends the scrape token as a
	// bearer token, loopback included.
	MetricsToken = "token"
	// MetricsOff answers 404.
	MetricsOff = "off"
)

// MetricsAccess is the rule for /metrics. The zero value is loopback only.
type MetricsAccess struct {
	Mode string
	// TokenSHA256 is the SHA-256 of the scrape token (MetricsToken): the
	// token itself is never held, nor logged.
	TokenSHA256 []byte
}

// ObserveRequests times every request for the HTTP duration histogram.
func (h *Handlers) ObserveRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return h.metrics.Middleware(next)
}

// Metrics serves the Prometheus metrics to the clients the access rule
// lets through. A refusal says why and what to change, in plain text, as
// a scraper shows it.
func (h *Handlers) Metrics(c echo.Context) error {
	switch h.metricsAccess.Mode {
	case MetricsOff:
		return c.String(http.StatusNotFound, "metrics are turned off (--metrics=off); start the vault with --metrics=loopback or --metrics=token to serve them\n")
	case MetricsToken:
		if !h.scrapeTokenValid(c.Request()) {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="lifeboat-metrics"`)
			return c.String(http.StatusUnauthorized, "the scrape token is missing or wrong: send it as Authorization: Bearer TOKEN (the token whose SHA-256 is --metrics-token-sha256)\n")
		}
	default:
		if !fromLoopback(c.Request()) {
			return c.String(http.StatusForbidden, "metrics are served only to clients on the vault's machine (--metrics=loopback); scrape from there, or start the vault with --metrics=token and a --metrics-token-sha256 to scrape from elsewhere\n")
		}
	}
	h.metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

func (h *Handlers) scrapeTokenValid(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" || len(h.metricsAccess.TokenSHA256) != sha256.Size {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], h.metricsAccess.TokenSHA256) == 1
}

// fromLoopback reads the connection's own address: no forwarding header
// is trusted (a proxy on the vault's machine makes every client look
// local: use a token behind one).
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/lifeboat-dr/lifeboat/handlers"
)

// maxBodyBytes caps every request body; the largest legitimate one (a
// recovery plan of 100 VMs) is far below it.
const maxBodyBytes = 1 << 20

// newEcho builds the server: one middleware stack, one error handler, and
// every route in routes.go.
func newEcho(h *handlers.Handlers, log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = h.ErrorHandler
	e.IPExtractor = echo.ExtractIPDirect() // no proxy is trusted unless configured
	e.Use(
		middleware.RequestID(),
		requestLogger(log),
		h.ObserveRequests,
		recoverer(log),
		middleware.SecureWithConfig(middleware.SecureConfig{
			XSSProtection:         "0",
			ContentTypeNosniff:    "nosniff",
			XFrameOptions:         "DENY",
			HSTSMaxAge:            31536000,
			ContentSecurityPolicy: "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
			ReferrerPolicy:        "same-origin",
		}),
		middleware.BodyLimit(fmt.Sprint(maxBodyBytes)),
		middleware.ContextTimeoutWithConfig(middleware.ContextTimeoutConfig{Timeout: 45 * time.Second}),
		h.LoadUser,
	)
	csrf := middleware.CSRFWithConfig(middleware.CSRFConfig{
		TokenLookup:    "form:csrf,header:X-CSRF-Token",
		CookieName:     "lifeboat_csrf",
		CookiePath:     "/",
		CookieHTTPOnly: true,
		CookieSecure:   true,
		CookieSameSite: http.SameSiteStrictMode,
	})
	addRoutes(e, h, csrf)
	return e
}

// requestLogger logs each request once, with its id, at a level that
// follows its status.
func requestLogger(log *slog.Logger) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURIPath: true, LogMethod: true, LogLatency: true, LogRequestID: true, LogRemoteIP: true,
		HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelInfo
			switch {
			case v.Status >= 500:
				level = slog.LevelError
			case v.Status >= 400:
				level = slog.LevelWarn
			case v.URIPath == "/healthz" || strings.HasPrefix(v.URIPath, "/static/") || strings.HasPrefix(v.URIPath, "/agent/"),
				strings.HasPrefix(v.URIPath, "/events/"):
				// Agents call every few seconds, and a live page's stream
				// connects again every 40 s: their successes are noise.
				level = slog.LevelDebug
			}
			attrs := []slog.Attr{
				slog.String("request_id", v.RequestID), slog.String("method", v.Method), slog.String("path", v.URIPath),
				slog.Int("status", v.Status), slog.Duration("latency", v.Latency), slog.String("remote_ip", v.RemoteIP),
			}
			if u := handlers.CurrentUser(c); u != nil {
				attrs = append(attrs, slog.String("user", u.Username))
			}
			log.LogAttrs(c.Request().Context(), level, "request", attrs...)
			return nil
		},
	})
}

// recoverer turns a panic into a logged 500 with the stack in the log only.
func recoverer(log *slog.Logger) echo.MiddlewareFunc {
	return middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisablePrintStack: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			log.ErrorContext(c.Request().Context(), "panic in handler", "request_id", c.Response().Header().Get(echo.HeaderXRequestID),
				"path", c.Request().URL.Path, slog.Any("error", err), "stack", string(stack))
			return err
		},
	})
}

package handlers

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// Live pages. A page whose data changes while it is open (a job, a VM, and
// their lists) has an event stream at /events followed by the page's own
// address. The stream renders the page again, with the page's own handler,
// whenever the store signals a change, and every liveTick for what changes
// with time alone (the RPO), and sends the page when it differs from the
// last it sent. The page's script (static/js/live.js) puts the elements
// marked data-live into the open page, so nothing reloads and a form being
// filled in keeps its input. Without JavaScript nothing connects, and the
// pages work as before.
//
// Every render reads the database, so a stream is right whatever process
// wrote; only the change signal is in-process. With several vault processes
// a write by another one shows at the next tick instead of at once.
const (
	liveTick      = 5 * time.Second
	liveMinGap    = time.Second      // at most one render a second, however many changes
	liveHeartbeat = 15 * time.Second // a comment, so proxies keep the stream open
	// A stream ends before the request timeout (45 s) and the server's
	// write timeout; the browser connects again after liveRetry, which also
	// checks again that the session is still valid.
	liveLifetime = 40 * time.Second
	liveRetry    = 2 * time.Second
	// maxLiveStreams bounds one session's open streams (its open tabs).
	maxLiveStreams = 8
)

// liveStreams counts each session's open streams.
type liveStreams struct {
	mu   sync.Mutex
	open map[[32]byte]int
}

func newLiveStreams() *liveStreams { return &liveStreams{open: map[[32]byte]int{}} }

func (l *liveStreams) acquire(session [32]byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[session] >= maxLiveStreams {
		return false
	}
	l.open[session]++
	return true
}

func (l *liveStreams) release(session [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[session]--; l.open[session] <= 0 {
		delete(l.open, session)
	}
}

// Live serves the event stream of the page that the handler page renders.
func (h *Handlers) Live(page echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		session := liveSession(c)
		if !h.streams.acquire(session) {
			return &Problem{Status: http.StatusTooManyRequests, Code: "too_many_live_pages",
				Message: fmt.Sprintf("this session has %d live pages open, the most it may; close some of the portal's tabs (a page without live updates still shows what it showed when it loaded)", maxLiveStreams)}
		}
		defer h.streams.release(session)
		changes, stop := h.store.Changes().Subscribe()
		defer stop()
		body, err := capturePage(c, page)
		if err != nil {
			return err // before the stream starts: an ordinary error answer
		}
		w := c.Response()
		w.Header().Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
		w.Header().Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
		w.WriteHeader(http.StatusOK)
		if _, err := fmt.Fprintf(w, "retry: %d\n\n", liveRetry.Milliseconds()); err != nil {
			return nil
		}
		last := sha256.Sum256(body)
		if writeEvent(w, "page", body) != nil {
			return nil
		}
		return h.liveLoop(c, page, changes, last)
	}
}

// liveLoop sends the page again after each change or tick, when it
// differs from the last sent, until the client goes or the stream's time
// is up.
func (h *Handlers) liveLoop(c echo.Context, page echo.HandlerFunc, changes <-chan struct{}, last [32]byte) error {
	ctx, w := c.Request().Context(), c.Response()
	tick, heartbeat, end := time.NewTicker(liveTick), time.NewTicker(liveHeartbeat), time.NewTimer(liveLifetime)
	defer tick.Stop()
	defer heartbeat.Stop()
	defer end.Stop()
	var rendered time.Time
	var later <-chan time.Time // a render put off by liveMinGap
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end.C:
			return nil
		case <-heartbeat.C:
			if _, err := io.WriteString(w, ": still here\n\n"); err != nil {
				return nil
			}
			w.Flush()
			continue
		case <-changes:
		case <-tick.C:
		case <-later:
			later = nil
		}
		if wait := liveMinGap - time.Since(rendered); wait > 0 {
			if later == nil {
				later = time.After(wait)
			}
			continue
		}
		rendered = time.Now()
		body, err := capturePage(c, page)
		if ctx.Err() != nil {
			return nil // the client went during the render
		}
		if err != nil {
			// Gone (deleted) or failing: the script stops following, and
			// says so. The cause stays in the log.
			level := slog.LevelWarn
			if errors.Is(err, models.ErrNotFound) {
				level = slog.LevelDebug
			}
			h.log.Log(ctx, level, "live page ends", "path", c.Request().URL.Path, slog.Any("error", err))
			_ = writeEvent(w, "end", []byte("the page cannot be shown any more"))
			return nil
		}
		if sum := sha256.Sum256(body); sum != last {
			last = sum
			if writeEvent(w, "page", body) != nil {
				return nil
			}
		}
	}
}

// writeEvent sends one server-sent event; data's lines each become a
// data field, which the browser joins again with newlines.
func writeEvent(w *echo.Response, event string, data []byte) error {
	var b bytes.Buffer
	b.WriteString("event: " + event + "\n")
	for line := range bytes.Lines(data) {
		b.WriteString("data: ")
		b.Write(bytes.TrimRight(line, "\r\n"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	w.Flush()
	return nil
}

// liveSession names the caller's session, for the bound on its streams.
func liveSession(c echo.Context) [32]byte {
	if cookie, err := c.Cookie(SessionCookie); err == nil && cookie.Value != "" {
		return sha256.Sum256([]byte("session:" + cookie.Value))
	}
	u := CurrentUser(c)
	return sha256.Sum256([]byte("user:" + u.ID))
}

// capturePage runs a page's handler into a buffer instead of the response:
// the stream's page is exactly what a reload would show.
func capturePage(c echo.Context, page echo.HandlerFunc) ([]byte, error) {
	rec := &pageRecorder{header: http.Header{}}
	orig := c.Response()
	c.SetResponse(echo.NewResponse(rec, c.Echo()))
	defer c.SetResponse(orig)
	if err := page(c); err != nil {
		return nil, err
	}
	if rec.status != http.StatusOK {
		return nil, fmt.Errorf("the page answers %d", rec.status)
	}
	return rec.body.Bytes(), nil
}

// pageRecorder is the response a captured page writes into.
type pageRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *pageRecorder) Header() http.Header { return r.header }

func (r *pageRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *pageRecorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

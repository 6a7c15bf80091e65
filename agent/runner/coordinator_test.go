package runner

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/internal/testvault"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// coordinator is a fake vault: the agent endpoint's paths over mutual TLS,
// with a record of what the agent sent.
type coordinator struct {
	t  *testing.T
	ca *testvault.CA

	mu    sync.Mutex
	tasks []agentproto.Task // handed out at the next poll
	// leaseByFree: a poll gets no more tasks than it has free slots, as
	// the vault's; otherwise it gets all of them.
	leaseByFree bool
	pollHold    time.Duration // how long a poll with no task is held (200 ms if 0)
	cutPolls    int           // held polls the agent cancelled
	heartbeats  []agentproto.HeartbeatRequest
	polls       []agentproto.PollRequest
	inventory   []agentproto.Inventory
	progress    map[string][]agentproto.Progress
	cancelAt    int                          // answer Cancel after this many progress reports of a task (0: never)
	results     map[string]agentproto.Result // acknowledged, by task id
	resultLog   []taskResult                 // every result posted, in order of arrival
	// resultHook, if set, sees each result before it is recorded (without
	// c.mu held); it may block, and false leaves the result unrecorded and
	// unanswered.
	resultHook func(r *http.Request, id string, res agentproto.Result) bool
	renewed    []byte
	clockSkew  time.Duration               // added to the vault's clock in heartbeat answers
	refuse     func(w http.ResponseWriter) // if set, answers every call
	resultC    chan string
}

// taskResult is a result as posted for task ID.
type taskResult struct {
	ID string
	agentproto.Result
}

func newCoordinator(t *testing.T) *coordinator {
	return &coordinator{t: t, ca: testvault.NewCA(t), progress: map[string][]agentproto.Progress{},
		results: map[string]agentproto.Result{}, resultC: make(chan string, 16)}
}

// intervals are short so that tests run in a second or two.
var testIntervals = agentproto.Intervals{HeartbeatSeconds: 1, PollWaitSeconds: 1, ProgressSeconds: 1}

func (c *coordinator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(agentproto.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		in := testvault.Decode[agentproto.HeartbeatRequest](r)
		c.mu.Lock()
		c.heartbeats = append(c.heartbeats, in)
		skew := c.clockSkew
		c.mu.Unlock()
		testvault.Reply(w, agentproto.HeartbeatResponse{ServerTime: time.Now().Add(skew), Intervals: testIntervals})
	})
	mux.HandleFunc(agentproto.PathInventory, func(w http.ResponseWriter, r *http.Request) {
		in := testvault.Decode[agentproto.Inventory](r)
		c.mu.Lock()
		c.inventory = append(c.inventory, in)
		c.mu.Unlock()
		testvault.Reply(w, struct{}{})
	})
	mux.HandleFunc(agentproto.PathPoll, func(w http.ResponseWriter, r *http.Request) {
		in := testvault.Decode[agentproto.PollRequest](r)
		c.mu.Lock()
		c.polls = append(c.polls, in)
		n := len(c.tasks)
		if c.leaseByFree {
			n = min(n, in.Free)
		}
		tasks := slices.Clone(c.tasks[:n])
		c.tasks = c.tasks[n:]
		hold := c.pollHold
		c.mu.Unlock()
		if hold == 0 {
			hold = 200 * time.Millisecond // the vault holds longer
		}
		if len(tasks) == 0 {
			select {
			case <-time.After(hold):
			case <-r.Context().Done():
				c.mu.Lock()
				c.cutPolls++
				c.mu.Unlock()
				return
			}
		}
		testvault.Reply(w, agentproto.PollResponse{Tasks: tasks, Cancel: []string{}, Intervals: testIntervals})
	})
	mux.HandleFunc(agentproto.PathRenew, func(w http.ResponseWriter, r *http.Request) {
		in := testvault.Decode[agentproto.RenewRequest](r)
		block, _ := pem.Decode([]byte(in.CSR))
		if block == nil {
			http.Error(w, "no CSR", http.StatusBadRequest)
			return
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cert := c.ca.Sign(c.t, csr.PublicKey, time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour))
		c.mu.Lock()
		c.renewed = cert
		c.mu.Unlock()
		testvault.Reply(w, agentproto.RenewResponse{Certificate: string(cert)})
	})
	mux.HandleFunc(agentproto.PathTaskPrefix, func(w http.ResponseWriter, r *http.Request) {
		id, what, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, agentproto.PathTaskPrefix), "/")
		switch what {
		case "progress":
			p := testvault.Decode[agentproto.Progress](r)
			c.mu.Lock()
			c.progress[id] = append(c.progress[id], p)
			cancel := c.cancelAt > 0 && len(c.progress[id]) >= c.cancelAt
			c.mu.Unlock()
			testvault.Reply(w, agentproto.ProgressResponse{Cancel: cancel, LeaseExpiresAt: time.Now().Add(time.Minute)})
		case "result":
			res := testvault.Decode[agentproto.Result](r)
			c.mu.Lock()
			c.resultLog = append(c.resultLog, taskResult{ID: id, Result: res})
			hook := c.resultHook
			c.mu.Unlock()
			if hook != nil && !hook(r, id, res) {
				return
			}
			c.mu.Lock()
			c.results[id] = res
			c.mu.Unlock()
			testvault.Reply(w, struct{}{})
			select {
			case c.resultC <- id:
			default:
			}
		default:
			http.NotFound(w, r)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		refuse := c.refuse
		c.mu.Unlock()
		if refuse != nil {
			refuse(w)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// serve starts the fake vault on addr ("" for any port) over mutual TLS:
// the server presents a certificate of the test CA for 127.0.0.1 and
// requires a client certificate of the same CA.
func (c *coordinator) serve(t *testing.T, addr string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(c.handler())
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen again on %s: %v", addr, err)
		}
		srv.Listener.Close()
		srv.Listener = l
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.ca.Cert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		Certificates: []tls.Certificate{c.ca.ServerCert(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes cut by the tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// registeredDir is a state directory as `register` leaves it, for the fake
// vault at url, with a host certificate valid from notBefore to notAfter.
func (c *coordinator) registeredDir(t *testing.T, url string, notBefore, notAfter time.Time) *state.Dir {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	err = dir.SaveRegistration(state.Identity{VaultURL: url, HostID: "host_t", SiteID: "site_t", Name: "hv-test"},
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), c.ca.Sign(t, &key.PublicKey, notBefore, notAfter), c.ca.PEM())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// startCoordinator serves a fake vault and registers a state directory
// with it.
func startCoordinator(t *testing.T, notBefore, notAfter time.Time) (*coordinator, *state.Dir) {
	c := newCoordinator(t)
	srv := c.serve(t, "")
	return c, c.registeredDir(t, srv.URL, notBefore, notAfter)
}

// testOptions are short intervals for tests.
var testOptions = Options{MaxTasks: 2, Intervals: testIntervals, InventoryEvery: 200 * time.Millisecond,
	RenewCheckEvery: 200 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}

// testAgent is an agent over a fresh VM root, with two test-only task
// kinds: "slow" works until cancelled, reporting a new step every 50 ms;
// "gate" waits until release is closed.
func testAgent(t *testing.T, dir *state.Dir, vmRoot string, release <-chan struct{}) *Runner {
	t.Helper()
	return testAgentWith(t, dir, vmRoot, release, testOptions)
}

// testAgentWith is testAgent with other options.
func testAgentWith(t *testing.T, dir *state.Dir, vmRoot string, release <-chan struct{}, opts Options) *Runner {
	t.Helper()
	if vmRoot == "" {
		vmRoot = t.TempDir()
	}
	drv := &filedisk.Driver{Root: vmRoot}
	a, err := New(dir, drv, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	a.Register(tasks.New(tasks.Deps{Driver: drv, State: dir, Vault: a.Vault(), Clock: a, Version: Version}).Kinds())
	a.kinds["slow"] = func(ctx context.Context, _ agentproto.Task, rep tasks.Reporter) (any, error) {
		for i := 0; ; i++ {
			rep.Set(agentproto.Progress{Step: "step " + string(rune('a'+i%26)), Percent: i % 100})
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	a.kinds["gate"] = func(ctx context.Context, _ agentproto.Task, rep tasks.Reporter) (any, error) {
		rep.Set(agentproto.Progress{Step: "waiting"})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return map[string]string{"gate": "passed"}, nil
		}
	}
	return a
}

// testLogger writes warnings and errors to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

// runAgent runs a in the background; stop ends it and returns Run's error.
func runAgent(t *testing.T, a *Runner) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Error("the agent did not stop within 10 s of its context ending")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// result waits for the result of task id.
func (c *coordinator) result(t *testing.T, id string) agentproto.Result {
	t.Helper()
	var res agentproto.Result
	waitFor(t, "the result of "+id, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		r, ok := c.results[id]
		res = r
		return ok
	})
	return res
}

// lease hands tasks out at the next poll.
func (c *coordinator) lease(tasks ...agentproto.Task) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tasks = append(c.tasks, tasks...)
}

// pollCount is how many polls have arrived.
func (c *coordinator) pollCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.polls)
}

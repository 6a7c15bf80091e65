package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// testCA signs host certificates for a fake coordinator.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// sign issues a client certificate for pub, valid from notBefore to notAfter.
func (ca *testCA) sign(t *testing.T, pub any, notBefore, notAfter time.Time) []byte {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "host_t"}, NotBefore: notBefore, NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// coordinator is a fake vault: mutual TLS, the agent endpoint's paths, and a
// record of what the agent sent.
type coordinator struct {
	mu        sync.Mutex
	tasks     []agentproto.Task // handed out at the next poll
	progress  []agentproto.Progress
	cancelAt  int // answer Cancel after this many progress reports (0: never)
	results   map[string]agentproto.Result
	resultC   chan string
	renewed   []byte
	heartbeat func(w http.ResponseWriter)
	ca        *testCA
	t         *testing.T
}

func (c *coordinator) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	iv := agentproto.Intervals{HeartbeatSeconds: 1, PollWaitSeconds: 1, ProgressSeconds: 1}
	mux.HandleFunc(agentproto.PathHeartbeat, func(w http.ResponseWriter, r *http.Request) {
		if c.heartbeat != nil {
			c.heartbeat(w)
			return
		}
		reply(w, agentproto.HeartbeatResponse{ServerTime: time.Now(), Intervals: iv})
	})
	mux.HandleFunc(agentproto.PathInventory, func(w http.ResponseWriter, r *http.Request) { reply(w, map[string]int{}) })
	mux.HandleFunc(agentproto.PathPoll, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		tasks := c.tasks
		c.tasks = nil
		c.mu.Unlock()
		if len(tasks) == 0 {
			time.Sleep(200 * time.Millisecond)
		}
		reply(w, agentproto.PollResponse{Tasks: tasks, Cancel: []string{}, Intervals: iv})
	})
	mux.HandleFunc(agentproto.PathRenew, func(w http.ResponseWriter, r *http.Request) {
		var in agentproto.RenewRequest
		json.NewDecoder(r.Body).Decode(&in)
		block, _ := pem.Decode([]byte(in.CSR))
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		cert := c.ca.sign(c.t, csr.PublicKey, time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour))
		c.mu.Lock()
		c.renewed = cert
		c.mu.Unlock()
		reply(w, agentproto.RenewResponse{Certificate: string(cert)})
	})
	mux.HandleFunc(agentproto.PathTaskPrefix, func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, agentproto.PathTaskPrefix)
		id, what, _ := strings.Cut(rest, "/")
		c.mu.Lock()
		defer c.mu.Unlock()
		switch what {
		case "progress":
			var p agentproto.Progress
			json.NewDecoder(r.Body).Decode(&p)
			c.progress = append(c.progress, p)
			reply(w, agentproto.ProgressResponse{Cancel: c.cancelAt > 0 && len(c.progress) >= c.cancelAt, LeaseExpiresAt: time.Now().Add(time.Minute)})
		case "result":
			var res agentproto.Result
			json.NewDecoder(r.Body).Decode(&res)
			c.results[id] = res
			reply(w, map[string]string{})
			select {
			case c.resultC <- id:
			default:
			}
		}
	})
	return mux
}

// startCoordinator serves the fake vault and registers a state directory
// with it, the certificate valid from notBefore to notAfter.
func startCoordinator(t *testing.T, notBefore, notAfter time.Time) (*coordinator, *state.Dir) {
	ca := newTestCA(t)
	c := &coordinator{results: map[string]agentproto.Result{}, resultC: make(chan string, 4), ca: ca, t: t}
	srv := httptest.NewUnstartedServer(c.handler())
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	err = dir.SaveRegistration(state.Identity{VaultURL: srv.URL, HostID: "host_t", Name: "hv-test"},
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), ca.sign(t, &key.PublicKey, notBefore, notAfter), serverCA)
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func testAgent(t *testing.T, dir *state.Dir) *agent {
	a, err := newAgent(dir, &filedisk.Driver{Root: t.TempDir()}, 2, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	// A task that works until cancelled, reporting a new step each 100 ms.
	a.kinds["slow"] = func(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
		for i := 0; ; i++ {
			rep.set(agentproto.Progress{Step: "step " + string(rune('a'+i%26)), Percent: i % 100})
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return a
}

func TestAgentReportsProgressAndStopsATaskTheVaultCancels(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.tasks = []agentproto.Task{{ID: "task_slow", Kind: "slow", Attempt: 1}}
	c.cancelAt = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := testAgent(t, dir)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-c.resultC:
	case <-time.After(20 * time.Second):
		t.Fatal("no result within 20 s")
	}
	c.mu.Lock()
	res, progress := c.results["task_slow"], len(c.progress)
	c.mu.Unlock()
	if res.Error == nil || res.Error.Code != "cancelled" || progress < 2 {
		t.Fatalf("result %+v after %d progress reports", res.Error, progress)
	}
	// Once the vault acknowledged it, the result leaves the state directory.
	deadline := time.Now().Add(10 * time.Second)
	for recs, _ := dir.Tasks(); len(recs) != 0; recs, _ = dir.Tasks() {
		if time.Now().After(deadline) {
			t.Fatalf("a delivered result stayed in the state directory: %+v", recs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestAgentStopsWhenTheVaultNoLongerKnowsTheHost(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	c.heartbeat = func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":{"code":"unauthenticated","message":"the host was removed"}}`))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := testAgent(t, dir).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "register again") {
		t.Fatalf("run: %v", err)
	}
}

func TestAgentRenewsItsCertificateWhenAThirdOfItsLifeRemains(t *testing.T) {
	c, dir := startCoordinator(t, time.Now().Add(-80*24*time.Hour), time.Now().Add(10*24*time.Hour))
	before, _ := os.ReadFile(filepath.Join(dir.Path, "host.crt"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- testAgent(t, dir).Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		renewed := c.renewed
		c.mu.Unlock()
		after, _ := os.ReadFile(filepath.Join(dir.Path, "host.crt"))
		if renewed != nil && string(after) == string(renewed) && string(after) != string(before) {
			if _, err := dir.Certificate(); err != nil {
				t.Fatalf("the renewed certificate does not match the stored key: %v", err)
			}
			cancel()
			<-done
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	t.Fatal("the certificate was not renewed")
}

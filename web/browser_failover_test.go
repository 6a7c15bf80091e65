package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// waitJobPage waits on a job's page, which follows the job live (its
// event stream), until it shows the job ended, and returns the state it
// shows.
func waitJobPage(t *testing.T, ctx context.Context, agent *proc) string {
	t.Helper()
	const ended = `(() => {
		const s = document.querySelector('[data-testid="job-state"]');
		const v = s ? s.textContent.trim() : "";
		return ["Succeeded", "Failed", "Cancelled"].includes(v) ? v : "";
	})()`
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		// An error is the page changing under the script: look again.
		if state, err := chromedp.Run(ctx, chromedp.Evaluate[string](ended)); err == nil && state != "" {
			return state
		}
		time.Sleep(300 * time.Millisecond)
	}
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
	t.Fatalf("the job page does not show the job ended within 90 s:\n%s\n%s", html, agent.out.String())
	return ""
}

// The VM page runs a test failover and its cleanup in real headless
// Chromium, against the real vault and a real agent: Test failover leads
// to the job's page, which follows the job to Succeeded, and the test VM
// is on the host with the point's disk; Cleanup test failover with notes
// deletes it, and the VM page shows the notes as the last drill's.
func TestBrowserRunsATestFailoverAndItsCleanupFromTheVMPage(t *testing.T) {
	exe := chromiumPath(t)
	t.Parallel() // mostly waits for jobs on the agent

	// One host with one VM, protected to a directory target.
	_, agentBin := binaries(t)
	disk := make([]byte, 4<<20)
	rand.Read(disk[1<<20 : 2<<20])
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "app"), 0o755)
	replaceFile(t, filepath.Join(vmRoot, "app", "disk0.img"), disk)
	// Not written for longer than a file's times can be trusted to show a
	// write: the first point is crash-consistent.
	time.Sleep(replica.QuietFor + 500*time.Millisecond)
	s := &recoverySite{v: newE2EVault(t), srcRoot: vmRoot, drRoot: vmRoot, dir: t.TempDir()}
	stateDir, _ := registerHost(t, s.v, "Primary", "hv-browser")
	s.src = startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	s.dr = s.src // the VM's own host is its recovery host
	var hosts struct{ Items []struct{ ID, State string } }
	eventually(t, "the host is connected", func() bool {
		s.v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
		return len(hosts.Items) == 1 && hosts.Items[0].State == "Connected"
	}, s.v.proc, s.src)
	s.srcHostID, s.drHostID = hosts.Items[0].ID, hosts.Items[0].ID
	var policy, target struct{ ID string }
	s.v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"fast","copy_frequency_seconds":30,"retention_hours":24,"app_consistent_frequency_hours":0,`+closedResyncWindow()+`}`), &policy)
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": s.dir})
	s.v.do(http.MethodPost, "/api/v1/targets", body, &target)
	s.policyID, s.targetID = policy.ID, target.ID
	vm := s.protect(t, "app")
	point := s.points(t, vm.ID).Items[0].ID

	ctx := openBrowser(t, exe, 4*time.Minute)

	vmPage := s.v.url() + "/vms/" + vm.ID
	err := chromedp.Do(ctx,
		chromedp.Navigate(vmPage), // not logged in: sent to the login page
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "end-to-end-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="test-failover-form"]`), // back on the VM page
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	drill, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="last-drill"]`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(drill, "never") {
		t.Errorf("before any drill, the last drill shows %q", drill)
	}

	// Test failover on the VM's own host, from the newest processed point.
	err = chromedp.Do(ctx,
		chromedp.SetValue(`[data-testid="test-failover-point"]`, "latest_processed"),
		chromedp.SetValue(`[data-testid="test-failover-host"]`, s.srcHostID),
		chromedp.Click(`[data-testid="test-failover"]`),
		chromedp.WaitVisible(`[data-testid="job-title"]`),
	)
	if err != nil {
		t.Fatalf("start the test failover: %v", err)
	}
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.Contains(loc, "/jobs/") {
		t.Fatalf("Test failover led to %s, not to its job", loc)
	}
	if state := waitJobPage(t, ctx, s.src); state != "Succeeded" {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
		t.Fatalf("the test failover job %s:\n%s\n%s", state, html, s.src.out.String())
	}
	testDisk := filepath.Join(vmRoot, "app-test", "disk0.img")
	if got := fileBytes(t, testDisk); !bytes.Equal(got, disk) || !bytes.Equal(got, readReplicaPoint(t, s.dir, vm.ID, point, vm.DiskID)) {
		t.Fatal("the test VM's disk differs from the source and its recovery point")
	}

	// Back to the VM page by the job's link; Cleanup test failover with
	// notes.
	const notes = "booted from the browser; the service answered"
	err = chromedp.Do(ctx,
		chromedp.Click(`[data-testid="job-props"] a[href="/vms/`+vm.ID+`"]`),
		chromedp.WaitVisible(`[data-testid="cleanup-form"]`),
		chromedp.SendKeys(`[data-testid="cleanup-notes"]`, notes),
	)
	if err != nil {
		t.Fatalf("back to the VM page: %v", err)
	}
	pending, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="test-failover"]`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pending, "app-test") || !strings.Contains(pending, "hv-browser") || !strings.Contains(pending, point) {
		t.Errorf("the pending test failover shows as %q", pending)
	}
	// One look at the Recovery section as an Operator sees it here: its
	// heading, its properties and its forms. Kept with -artifacts (go test
	// -artifacts -outputdir DIR), to be looked at after a layout change.
	shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSSAll(`main h2:has(+ [data-testid="recovery-props"]), [data-testid="recovery-props"], .recovery-actions`)))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shotFile := filepath.Join(t.ArtifactDir(), "recovery-section.png")
	if err := os.WriteFile(shotFile, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("the Recovery section: %s", shotFile)

	err = chromedp.Do(ctx,
		chromedp.Click(`[data-testid="cleanup-test-failover"]`),
		chromedp.WaitVisible(`[data-testid="job-title"]`),
	)
	if err != nil {
		t.Fatalf("start the cleanup: %v", err)
	}
	if state := waitJobPage(t, ctx, s.src); state != "Succeeded" {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
		t.Fatalf("the cleanup job %s:\n%s\n%s", state, html, s.src.out.String())
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(vmPage),
		chromedp.WaitVisible(`[data-testid="last-drill-notes"]`),
		chromedp.WaitVisible(`[data-testid="test-failover-form"]`), // a new drill can start
	)
	if err != nil {
		t.Fatalf("the VM page after the cleanup: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="last-drill-notes"]`))
	if err != nil {
		t.Fatal(err)
	}
	if shown != notes {
		t.Errorf("the last drill's notes show as %q, want %q", shown, notes)
	}
	if _, err := os.Stat(filepath.Join(vmRoot, "app-test")); !os.IsNotExist(err) {
		t.Errorf("the test VM is still on the host after the cleanup: %v", err)
	}
	if st := s.vm(t, vm.ID); st.Recovery.TestFailover != nil || st.Recovery.LastDrill == nil || st.Recovery.LastDrill.Notes != notes {
		t.Errorf("the vault after the cleanup: %+v", st)
	}
}

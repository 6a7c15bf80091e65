package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
)

// liveText is a script that reads the text of the element with a
// data-testid, or "" when there is none.
func liveText(testid string) string {
	return `(() => { const e = document.querySelector('[data-testid="` + testid + `"]'); return e ? e.textContent.trim() : ""; })()`
}

// stillLoaded is a script that says whether the page is the document the
// test marked: a reload or a navigation would have dropped the mark.
const stillLoaded = `window.__liveMark === 1`

// markLoaded marks the open document (see stillLoaded).
var markLoaded = chromedp.Evaluate[chromedp.Void](`window.__liveMark = 1`)

// waitText polls a tab until the element's text satisfies ok, and returns
// it; the tab must stay the same document all along.
func waitText(t *testing.T, ctx context.Context, testid, what string, within time.Duration, ok func(string) bool, logs ...*proc) string {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for time.Now().Before(deadline) {
		marked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](stillLoaded))
		if err != nil || !marked {
			t.Fatalf("%s: the page reloaded or navigated (mark %v, %v)", what, marked, err)
		}
		if last, err = chromedp.Run(ctx, chromedp.Evaluate[string](liveText(testid))); err == nil && ok(last) {
			return last
		}
		time.Sleep(200 * time.Millisecond)
	}
	html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
	var out strings.Builder
	for _, p := range logs {
		out.WriteString(p.out.String())
	}
	t.Fatalf("%s: not within %v (last %q)\n%s\n%s", what, within, last, html, out.String())
	return ""
}

// A job page and a VM page, open in real headless Chromium while a VM's
// initial replication runs on a real agent, follow it without reloading:
// the job page shows the copy's progress, then its speed and time left,
// then Succeeded; the VM page (open since before protection was enabled)
// shows the protection state change, the running copy, the first recovery
// point, and an RPO that moves with time.
func TestBrowserJobAndVMPagesUpdateLiveWithoutReloading(t *testing.T) {
	exe := chromiumPath(t)
	t.Parallel() // mostly waits for the copy

	// 48 MiB that do not compress, at 16 Mbit/s: a copy of about 25 s,
	// with a progress report every 3 s.
	_, agentBin := binaries(t)
	disk := make([]byte, 48<<20)
	rand.Read(disk)
	vmRoot := t.TempDir()
	os.MkdirAll(filepath.Join(vmRoot, "app"), 0o755)
	replaceFile(t, filepath.Join(vmRoot, "app", "disk0.img"), disk)
	time.Sleep(replica.QuietFor + 500*time.Millisecond) // a crash-consistent first point
	v := newE2EVault(t)
	stateDir, _ := registerHost(t, v, "Primary", "hv-live")
	agent := startProc(t, agentBin, "run", "--state-dir", stateDir, "--vm-root", vmRoot)
	var vms struct{ Items []struct{ ID string } }
	eventually(t, "the VM is listed", func() bool {
		v.do(http.MethodGet, "/api/v1/vms", nil, &vms)
		return len(vms.Items) == 1
	}, v.proc, agent)
	vmID := vms.Items[0].ID
	var policy, target struct{ ID string }
	v.do(http.MethodPost, "/api/v1/policies", []byte(`{"name":"slow","copy_frequency_seconds":900,"retention_hours":24,"app_consistent_frequency_hours":0,
		`+closedResyncWindow()+`,"bandwidth":{"work_hours":{"start":"08:00","end":"18:00"},"work_hours_mbps":16,"off_hours_mbps":16}}`), &policy)
	body, _ := json.Marshal(map[string]string{"name": "nas", "kind": "directory", "path": t.TempDir()})
	v.do(http.MethodPost, "/api/v1/targets", body, &target)
	if policy.ID == "" || target.ID == "" {
		t.Fatalf("policy %q, target %q", policy.ID, target.ID)
	}

	vmTab := openBrowser(t, exe, 4*time.Minute)

	vmPage := v.url() + "/vms/" + vmID
	err := chromedp.Do(vmTab,
		chromedp.Navigate(vmPage),
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "end-to-end-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="protect-form"]`), // back on the VM page, not protected yet
		markLoaded,
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}

	body, _ = json.Marshal(map[string]string{"policy_id": policy.ID, "target_id": target.ID})
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/vms/"+vmID+"/protection", body, &accepted); status != http.StatusAccepted {
		t.Fatalf("enable protection: %d", status)
	}
	// The VM page, loaded before: the protection's state, then the copy
	// with its speed.
	waitText(t, vmTab, "vm-protection", "the VM page shows the protection starting", 20*time.Second,
		func(s string) bool { return s != "Unprotected" }, v.proc, agent)
	copying := waitText(t, vmTab, "vm-copy", "the VM page shows the copy's speed", 40*time.Second,
		func(s string) bool { return strings.Contains(s, "/s") && strings.Contains(s, "left") }, v.proc, agent)
	t.Logf("VM page: copying now %q", copying)

	// The job's page, in a second tab of the same session.
	jobTab, cancelJob := chromedp.NewContext(vmTab)
	defer cancelJob()
	if err := chromedp.Do(jobTab, chromedp.Navigate(v.url()+"/jobs/"+accepted.JobID), chromedp.WaitVisible(`[data-testid="job-title"]`), markLoaded); err != nil {
		t.Fatalf("open the job page: %v", err)
	}
	first, err := chromedp.Run(jobTab, chromedp.Evaluate[string](liveText("job-progress")))
	if err != nil {
		t.Fatal(err)
	}
	speed := waitText(t, jobTab, "job-copy", "the job page shows the copy's speed and time left", 20*time.Second,
		func(s string) bool { return strings.Contains(s, "/s") && strings.Contains(s, "left") }, v.proc, agent)
	waitText(t, jobTab, "job-progress", "the job's progress moves", 20*time.Second, func(s string) bool { return s != first }, v.proc, agent)
	waitText(t, jobTab, "job-state", "the job page shows the job succeeded", 90*time.Second,
		func(s string) bool { return s == "Succeeded" || s == "Failed" }, v.proc, agent)
	if state, _ := chromedp.Run(jobTab, chromedp.Evaluate[string](liveText("job-state"))); state != "Succeeded" {
		html, _ := chromedp.Run(jobTab, chromedp.OuterHTML("main"))
		t.Fatalf("the job %s:\n%s\n%s", state, html, agent.out.String())
	}
	if left, _ := chromedp.Run(jobTab, chromedp.Evaluate[string](liveText("job-copy"))); left != "" {
		t.Errorf("an ended job still shows a copy: %q", left)
	}
	t.Logf("job page: the copy went at %q", speed)

	// Back on the VM page: protected, its first point, and an RPO that
	// ages while the page stays open.
	waitText(t, vmTab, "vm-protection", "the VM page shows the VM protected", 20*time.Second,
		func(s string) bool { return s == "Protected" }, v.proc, agent)
	waitText(t, vmTab, "point-consistency", "the VM page shows the first point", 20*time.Second,
		func(s string) bool { return s != "" }, v.proc, agent)
	rpo := waitText(t, vmTab, "vm-rpo", "the VM page shows an RPO", 20*time.Second, func(s string) bool { return s != "" && s != "—" })
	waitText(t, vmTab, "vm-rpo", "the RPO moves with time", 20*time.Second, func(s string) bool { return s != rpo && s != "" }, v.proc, agent)
	if now, _ := chromedp.Run(vmTab, chromedp.Evaluate[string](liveText("vm-copy"))); now != "" {
		t.Errorf("the VM page still shows a copy after it ended: %q", now)
	}
}

// A running job's page reloads itself only where JavaScript cannot update
// it: in a tab with scripts off it is fetched again every few seconds (the
// meta refresh in noscript), in a tab with them on it stays the document
// it was and follows its stream. The vault's request log counts the
// fetches.
func TestBrowserJobPageReloadsItselfOnlyWithoutJavaScript(t *testing.T) {
	exe := chromiumPath(t)
	t.Parallel()
	v := newE2EVault(t)
	registerHost(t, v, "Primary", "hv-quiet") // no agent runs: the host's check stays in progress
	var hosts struct{ Items []struct{ ID string } }
	v.do(http.MethodGet, "/api/v1/hosts", nil, &hosts)
	if len(hosts.Items) != 1 {
		t.Fatalf("hosts: %+v", hosts)
	}
	var accepted struct {
		JobID string `json:"job_id"`
	}
	if status := v.do(http.MethodPost, "/api/v1/hosts/"+hosts.Items[0].ID+"/check", nil, &accepted); status != http.StatusAccepted {
		t.Fatalf("start a host check: %d", status)
	}
	jobPage := v.url() + "/jobs/" + accepted.JobID
	fetches := func() int { return strings.Count(v.proc.out.String(), "path=/jobs/"+accepted.JobID+" ") }

	withJS := openBrowser(t, exe, 2*time.Minute)
	err := chromedp.Do(withJS,
		chromedp.Navigate(jobPage),
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "end-to-end-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="job-title"]`),
		markLoaded,
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	before := fetches()
	time.Sleep(7 * time.Second) // two refresh periods
	if marked, err := chromedp.Run(withJS, chromedp.Evaluate[bool](stillLoaded)); err != nil || !marked {
		t.Fatalf("the job page reloaded although JavaScript runs (mark %v, %v)", marked, err)
	}
	if n := fetches() - before; n != 0 {
		t.Fatalf("the job page was fetched %d more times while JavaScript ran", n)
	}

	noJS, cancelNoJS := chromedp.NewContext(withJS) // a tab of the same session
	defer cancelNoJS()
	if _, err := chromedp.Call(noJS, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(noJS, chromedp.Navigate(jobPage), chromedp.WaitVisible(`[data-testid="job-title"]`)); err != nil {
		t.Fatalf("open the job page without JavaScript: %v", err)
	}
	before = fetches()
	time.Sleep(7 * time.Second)
	if n := fetches() - before; n < 2 {
		t.Fatalf("without JavaScript the running job's page was fetched %d times in 7 s, want a reload every 3 s\n%s", n, v.proc.out.String())
	}
}

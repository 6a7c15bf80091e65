package main

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/PuerkitoBio/goquery"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// liveStream is a live page's event stream, read as a browser's
// EventSource reads it.
type liveStream struct {
	t      *testing.T
	resp   *http.Response
	lines  *bufio.Scanner
	cancel context.CancelFunc
}

// openLive opens the stream at path (GET, the portal's cookies) and
// returns it with the answer's status.
func openLive(t *testing.T, p *portal, path string) *liveStream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.tv.URL+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	client := *p.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", path, err)
	}
	s := &liveStream{t: t, resp: resp, lines: bufio.NewScanner(resp.Body), cancel: cancel}
	s.lines.Buffer(make([]byte, 1<<20), 1<<20)
	t.Cleanup(s.close)
	return s
}

func (s *liveStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next reads the next event that is not a comment, within wait.
func (s *liveStream) next(wait time.Duration) (event, data string) {
	s.t.Helper()
	timer := time.AfterFunc(wait, s.cancel)
	defer timer.Stop()
	var lines []string
	for s.lines.Scan() {
		line := s.lines.Text()
		switch {
		case line == "" && event != "":
			return event, strings.Join(lines, "\n")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			lines = append(lines, strings.TrimPrefix(line, "data: "))
		}
	}
	s.t.Fatalf("no event within %v: %v", wait, s.lines.Err())
	return "", ""
}

// nextPage reads events until a page event, and parses it.
func (s *liveStream) nextPage(wait time.Duration) *goquery.Document {
	s.t.Helper()
	event, data := s.next(wait)
	if event != "page" {
		s.t.Fatalf("event %q (%s), want a page", event, data)
	}
	doc, err := goquery.NewDocumentFromReader(strings.NewReader(data))
	if err != nil {
		s.t.Fatal(err)
	}
	return doc
}

// A job page's stream is an event stream, never cached, that sends the
// page at once and again as soon as the agent reports progress and ends
// the task: sooner than the periodic refresh, so the change itself woke
// it. Each page sent is the job page, with its live parts marked.
func TestLiveJobStreamSendsThePageAgainWhenTheAgentReports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		siteID, token := newAgentSite(t, tv)
		a := tv.mustRegister(token, siteID, "hv1")
		var accepted struct {
			JobID string `json:"job_id"`
		}
		if status := tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, &accepted); status != http.StatusAccepted {
			t.Fatalf("start check: %d", status)
		}
		s := openLive(t, tv.login("Reader"), "/events/jobs/"+accepted.JobID)
		if s.resp.StatusCode != http.StatusOK || !strings.HasPrefix(s.resp.Header.Get("Content-Type"), "text/event-stream") ||
			s.resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("stream answer: %d %v", s.resp.StatusCode, s.resp.Header)
		}
		doc := s.nextPage(5 * time.Second)
		if got := testid(doc, "job-state").Text(); !strings.Contains(got, "In progress") || doc.Find(`[data-live="steps-table"]`).Length() != 1 {
			t.Fatalf("the first page: state %q, live steps %d", got, doc.Find(`[data-live="steps-table"]`).Length())
		}

		task := a.poll(1).Tasks[0]
		reported := time.Now()
		a.call(agentproto.TaskProgressPath(task.ID), agentproto.Progress{Step: "free space", Percent: 40, Message: "state dir ok"}, nil)
		for {
			// The lease (the task leased by the poll) may come first.
			doc = s.nextPage(4 * time.Second)
			if strings.Contains(testid(doc, "step-message").Text(), "state dir ok") {
				break
			}
		}
		if took := time.Since(reported); took > 4*time.Second {
			t.Fatalf("the progress showed after %v: the periodic refresh, not the change", took)
		}
		if got := testid(doc, "step-progress").Text(); !strings.Contains(got, "40 %") {
			t.Errorf("step progress %q", got)
		}
		a.call(agentproto.TaskResultPath(task.ID), agentproto.Result{Result: []byte(`{"checks":[]}`)}, nil)
		doc = s.nextPage(4 * time.Second)
		if got := testid(doc, "job-state").Text(); !strings.Contains(got, "Succeeded") {
			t.Fatalf("after the result: %q", got)
		}
	})
}

// A live stream is for a logged-in user: anonymous callers are sent to
// the login page, an unknown job is a 404 and no stream, and one session
// may keep only so many streams open; closing one frees its place.
func TestLiveStreamsNeedALoginAKnownObjectAndAFreePlace(t *testing.T) {
	tv := newTestVault(t, "")
	anonymous := openLive(t, tv.newPortal(), "/events/vms")
	if anonymous.resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(anonymous.resp.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous: %d %s", anonymous.resp.StatusCode, anonymous.resp.Header.Get("Location"))
	}
	reader := tv.login("Reader")
	if s := openLive(t, reader, "/events/jobs/job_unknown"); s.resp.StatusCode != http.StatusNotFound || strings.Contains(s.resp.Header.Get("Content-Type"), "event-stream") {
		t.Fatalf("unknown job: %d %s", s.resp.StatusCode, s.resp.Header.Get("Content-Type"))
	}
	var open []*liveStream
	for range 8 {
		s := openLive(t, reader, "/events/jobs")
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", len(open)+1, s.resp.StatusCode)
		}
		s.nextPage(5 * time.Second)
		open = append(open, s)
	}
	refused := openLive(t, reader, "/events/vms")
	if refused.resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a ninth stream: %d", refused.resp.StatusCode)
	}
	if s := openLive(t, tv.login("Reader"), "/events/vms"); s.resp.StatusCode != http.StatusOK {
		t.Fatalf("another session's stream: %d", s.resp.StatusCode)
	}
	open[0].close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := openLive(t, reader, "/events/vms")
		if s.resp.StatusCode == http.StatusOK {
			break
		}
		s.close()
		if time.Now().After(deadline) {
			t.Fatalf("a closed stream's place is not freed: %d", s.resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A VM page's stream shows what the host's inventory changes (the power
// state) as soon as it is reported, sooner than the periodic refresh.
func TestLiveVMStreamShowsAPowerChangeAsSoonAsTheHostReportsIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, tv *testVault) {
		siteID, token := newAgentSite(t, tv)
		a := tv.mustRegister(token, siteID, "hv1")
		report := func(power string) {
			t.Helper()
			inv := agentproto.Inventory{VMs: []agentproto.VM{{ID: "web", Name: "web", PowerState: power,
				Disks: []agentproto.Disk{{Path: "/vms/web/disk0.img", SizeBytes: 1 << 20, Format: "raw"}}}}}
			if status, problem := a.call(agentproto.PathInventory, inv, nil); status != http.StatusOK {
				t.Fatalf("inventory: %d %+v", status, problem)
			}
		}
		report("Running")
		var vms struct{ Items []struct{ ID string } }
		tv.api(http.MethodGet, "/api/v1/vms?host_id="+a.HostID, token, nil, &vms)
		if len(vms.Items) != 1 {
			t.Fatalf("VMs: %+v", vms)
		}
		s := openLive(t, tv.login("Reader"), "/events/vms/"+vms.Items[0].ID)
		if got := testid(s.nextPage(5*time.Second), "vm-power").Text(); got != "Running" {
			t.Fatalf("the first page: power %q", got)
		}
		reported := time.Now()
		report("Off")
		doc := s.nextPage(4 * time.Second)
		if got := testid(doc, "vm-power").Text(); got != "Off" {
			t.Fatalf("after the host reported the VM off: power %q", got)
		}
		if took := time.Since(reported); took > 4*time.Second {
			t.Fatalf("the change showed after %v: the periodic refresh, not the change", took)
		}
	})
}

// The dashboard's stream counts a new job as soon as it starts.
func TestLiveDashboardCountsANewJobAsSoonAsItStarts(t *testing.T) {
	tv := newTestVault(t, "")
	siteID, token := newAgentSite(t, tv)
	a := tv.mustRegister(token, siteID, "hv1")
	s := openLive(t, tv.login("Reader"), "/events/")
	if got := testid(s.nextPage(5*time.Second), "jobs-in-progress").Text(); got != "0" {
		t.Fatalf("the first page: %q jobs in progress", got)
	}
	if status := tv.api(http.MethodPost, "/api/v1/hosts/"+a.HostID+"/check", token, nil, nil); status != http.StatusAccepted {
		t.Fatalf("start check: %d", status)
	}
	doc := s.nextPage(4 * time.Second) // before the periodic refresh
	if got := testid(doc, "jobs-in-progress").Text(); got != "1" {
		t.Fatalf("after a job started: %q jobs in progress", got)
	}
}

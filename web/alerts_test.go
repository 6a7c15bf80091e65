package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

// mailbox is a real SMTP server on loopback (go-smtp) that keeps what it
// receives.
type mailbox struct {
	mu   sync.Mutex
	mail []string // "from → to: data"
}

type mailSession struct {
	box      *mailbox
	from, to string
}

func (b *mailbox) NewSession(*gosmtp.Conn) (gosmtp.Session, error)   { return &mailSession{box: b}, nil }
func (s *mailSession) Reset()                                        {}
func (s *mailSession) Logout() error                                 { return nil }
func (s *mailSession) Mail(from string, _ *gosmtp.MailOptions) error { s.from = from; return nil }
func (s *mailSession) Rcpt(to string, _ *gosmtp.RcptOptions) error   { s.to += to + " "; return nil }
func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.box.mu.Lock()
	s.box.mail = append(s.box.mail, s.from+" → "+s.to+": "+string(b))
	s.box.mu.Unlock()
	return err
}

func TestNewAlertsReachTheWebhookAndTheMailboxAndFailuresAreRetried(t *testing.T) {
	clock := storetest.NewClock()
	store := storetest.Open(t, storetest.SQLiteDSN(t), clock)
	ctx := t.Context()

	// The webhook fails once, then accepts.
	var mu sync.Mutex
	var posts []map[string]any
	fail := true
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		posts = append(posts, body)
	}))
	defer hook.Close()
	box := &mailbox{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gosmtp.NewServer(box)
	srv.Domain = "localhost"
	go srv.Serve(ln)
	defer srv.Close()

	channels := alertChannels{Webhook: hook.URL, SMTPAddr: ln.Addr().String(), SMTPFrom: "vault@example.net", SMTPTo: []string{"ops@example.net"}}
	if err := channels.validate(); err != nil {
		t.Fatal(err)
	}
	sender := &alertSender{store: store, channels: channels, client: hook.Client(), log: slog.New(slog.DiscardHandler), vaultURL: "https://vault.example.net"}

	site := &models.Site{Name: "s"}
	if err := store.CreateSite(ctx, models.Actor{Username: "t"}, site); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateHost(ctx, models.Actor{Username: "t"}, &models.Host{SiteID: site.ID, Name: "hv", State: models.HostConnected}); err != nil {
		t.Fatal(err)
	}
	clock.T = clock.T.Add(time.Hour)
	if _, err := store.MarkSilentHostsDisconnected(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	sender.pass(ctx) // the webhook answers 503: not delivered
	mu.Lock()
	if len(posts) != 0 {
		t.Fatalf("posts after a failure: %v", posts)
	}
	mu.Unlock()
	alerts, _, _ := store.ListAlerts(ctx, models.AlertFilter{}, models.Page{Limit: 10})
	if len(alerts) != 1 || alerts[0].DeliveredAt != nil || alerts[0].DeliveryAttempts != 1 || !strings.Contains(alerts[0].DeliveryError, "503") {
		t.Fatalf("after a failed delivery: %+v", alerts)
	}
	sender.pass(ctx) // too early for the retry
	clock.T = clock.T.Add(time.Minute)
	sender.pass(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 1 || posts[0]["kind"] != models.AlertHostDisconnected || posts[0]["id"] != alerts[0].ID || posts[0]["state"] != "Active" {
		t.Fatalf("webhook posts: %v", posts)
	}
	box.mu.Lock()
	defer box.mu.Unlock()
	// Email went out on both attempts: a duplicate beats a loss.
	if len(box.mail) != 2 || !strings.Contains(box.mail[1], "vault@example.net → ops@example.net") ||
		!strings.Contains(box.mail[1], "Subject: [Lifeboat] Warning: HostDisconnected") || !strings.Contains(box.mail[1], "https://vault.example.net/alerts") {
		t.Fatalf("mail: %q", box.mail)
	}
	if alerts, _, _ = store.ListAlerts(ctx, models.AlertFilter{}, models.Page{Limit: 10}); alerts[0].DeliveredAt == nil {
		t.Fatal("the alert is not marked delivered")
	}
}

func TestAlertChannelSettingsAreChecked(t *testing.T) {
	for _, c := range []alertChannels{
		{Webhook: "ftp://x"},
		{SMTPAddr: "mail.example.net"},
		{SMTPAddr: "mail:25", SMTPFrom: "not an address", SMTPTo: []string{"a@b.c"}},
		{SMTPAddr: "mail:25", SMTPFrom: "v@b.c"},
		{SMTPAddr: "mail:25", SMTPFrom: "v@b.c", SMTPTo: []string{"a@b.c"}, SMTPUsername: "u"},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
}

func TestOperatorsAcknowledgeAndResolveAlertsInTheAPIAndThePortal(t *testing.T) {
	tv := newTestVault(t, "")
	ctx := t.Context()
	site := &models.Site{Name: "s"}
	tv.Store.CreateSite(ctx, models.Actor{Username: "t"}, site)
	for _, name := range []string{"hv1", "hv2"} {
		if err := tv.Store.CreateHost(ctx, models.Actor{Username: "t"}, &models.Host{SiteID: site.ID, Name: name, State: models.HostConnected}); err != nil {
			t.Fatal(err)
		}
	}
	tv.Clock.T = tv.Clock.T.Add(time.Hour)
	tv.Store.MarkSilentHostsDisconnected(ctx, time.Minute)
	alerts, _, _ := tv.Store.ListAlerts(ctx, models.AlertFilter{}, models.Page{Limit: 10})
	if len(alerts) != 2 {
		t.Fatalf("alerts: %+v", alerts)
	}
	reader, operator := tv.apiToken(models.RoleReader), tv.apiToken(models.RoleOperator)
	if status := tv.api(http.MethodPost, "/api/v1/alerts/"+alerts[0].ID+"/acknowledge", reader, nil, nil); status != http.StatusForbidden {
		t.Fatalf("a reader acknowledged: %d", status)
	}
	var got map[string]any
	if status := tv.api(http.MethodPost, "/api/v1/alerts/"+alerts[0].ID+"/acknowledge", operator, nil, &got); status != http.StatusOK ||
		got["state"] != models.AlertAcknowledged || got["acknowledged_by"] == "" {
		t.Fatalf("acknowledge: %d %v", status, got)
	}
	var problem struct{ Error struct{ Code string } }
	if status := tv.api(http.MethodPost, "/api/v1/alerts/"+alerts[0].ID+"/acknowledge", operator, nil, &problem); status != http.StatusConflict || problem.Error.Code != "alert_not_active" {
		t.Fatalf("acknowledge twice: %d %+v", status, problem)
	}
	if status := tv.api(http.MethodPost, "/api/v1/alerts/"+alerts[0].ID+"/resolve", operator, nil, &got); status != http.StatusOK || got["state"] != models.AlertResolved ||
		got["resolved_by"] == "" || got["resolved_by"] == models.ResolvedBySystem {
		t.Fatalf("resolve: %d %v", status, got)
	}
	// The portal: the other alert is listed as active, and resolved there.
	p := tv.login(models.RoleOperator)
	_, doc := p.get("/alerts?state=Active")
	if testid(doc, "alert-row").Length() != 1 || testid(doc, "alert-kind").Text() != models.AlertHostDisconnected {
		html, _ := doc.Find("main").Html()
		t.Fatalf("alerts page:\n%s", html)
	}
	action, _ := testid(doc, "alert-resolve").Parent().Attr("action")
	if resp, _ := p.post(action, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("resolve from the portal: %d", resp.StatusCode)
	}
	_, doc = p.get("/alerts?state=Active")
	if testid(doc, "alerts-empty").Length() != 1 {
		t.Fatal("the resolved alert is still listed as active")
	}
}

// An alert the vault resolved (its condition ended) says so, in the API
// and the portal, and does not read as resolved by whoever acknowledged it.
func TestAnAlertWhoseConditionEndedReadsAsResolvedByTheVault(t *testing.T) {
	tv := newTestVault(t, "")
	ctx := t.Context()
	site := &models.Site{Name: "s"}
	tv.Store.CreateSite(ctx, models.Actor{Username: "t"}, site)
	host := &models.Host{SiteID: site.ID, Name: "hv1", State: models.HostConnected}
	if err := tv.Store.CreateHost(ctx, models.Actor{Username: "t"}, host); err != nil {
		t.Fatal(err)
	}
	tv.Clock.T = tv.Clock.T.Add(time.Hour)
	tv.Store.MarkSilentHostsDisconnected(ctx, time.Minute)
	alerts, _, _ := tv.Store.ListAlerts(ctx, models.AlertFilter{}, models.Page{Limit: 10})
	if len(alerts) != 1 {
		t.Fatalf("alerts: %+v", alerts)
	}
	if _, err := tv.Store.AcknowledgeAlert(ctx, models.Actor{Username: "admin"}, alerts[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := tv.Store.Heartbeat(ctx, host.ID, "test", agentproto.ProtocolVersion, "filedisk", nil); err != nil { // the host is back
		t.Fatal(err)
	}
	var list struct{ Items []map[string]any }
	if status := tv.api(http.MethodGet, "/api/v1/alerts", tv.apiToken(models.RoleReader), nil, &list); status != http.StatusOK ||
		len(list.Items) != 1 || list.Items[0]["state"] != models.AlertResolved || list.Items[0]["resolved_by"] != models.ResolvedBySystem {
		t.Fatalf("the alert after the host came back: %d %v", status, list.Items)
	}
	_, doc := tv.login(models.RoleReader).get("/alerts?state=Resolved")
	if by := testid(doc, "alert-resolved-by").Text(); !strings.Contains(by, "resolved by the vault") || strings.Contains(by, "admin") {
		t.Fatalf("the alerts page says %q", by)
	}
}

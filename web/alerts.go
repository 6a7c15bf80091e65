package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
)

// alertChannels are where new alerts are sent besides the portal and the
// API: a webhook, and email through an SMTP server.
type alertChannels struct {
	Webhook      string
	SMTPAddr     string
	SMTPFrom     string
	SMTPTo       []string
	SMTPUsername string
	SMTPPassword string // from the environment only; never logged
}

func (a alertChannels) configured() bool { return a.Webhook != "" || a.SMTPAddr != "" }

func (a alertChannels) validate() error {
	if a.Webhook != "" {
		u, err := url.Parse(a.Webhook)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return &configError{"alert-webhook", "LIFEBOAT_ALERT_WEBHOOK", fmt.Sprintf("%q is not an http(s) URL", a.Webhook)}
		}
	}
	if a.SMTPAddr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(a.SMTPAddr); err != nil {
		return &configError{"smtp-addr", "LIFEBOAT_SMTP_ADDR", fmt.Sprintf("%q is not host:port, such as mail.example.net:587", a.SMTPAddr)}
	}
	if _, err := mail.ParseAddress(a.SMTPFrom); err != nil {
		return &configError{"smtp-from", "LIFEBOAT_SMTP_FROM", fmt.Sprintf("%q is not an email address", a.SMTPFrom)}
	}
	if len(a.SMTPTo) == 0 {
		return &configError{"smtp-to", "LIFEBOAT_SMTP_TO", "give at least one address that gets the alert emails"}
	}
	for _, to := range a.SMTPTo {
		if _, err := mail.ParseAddress(to); err != nil {
			return &configError{"smtp-to", "LIFEBOAT_SMTP_TO", fmt.Sprintf("%q is not an email address", to)}
		}
	}
	if (a.SMTPUsername == "") != (a.SMTPPassword == "") {
		return &configError{"smtp-username", "LIFEBOAT_SMTP_USERNAME", "give the user and LIFEBOAT_SMTP_PASSWORD together, or neither"}
	}
	return nil
}

// alertSender delivers new alerts to the channels, retrying failed ones
// with the store's back-off.
type alertSender struct {
	store    *models.Store
	channels alertChannels
	client   *http.Client
	log      *slog.Logger
	vaultURL string
	leads    func() bool // whether this vault leads (only the leader delivers); nil: always
}

// run delivers alerts every few seconds until ctx ends.
func (s *alertSender) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.leads != nil && !s.leads() {
			continue // the leading vault delivers alerts
		}
		s.pass(ctx)
	}
}

// pass delivers every alert that is due.
func (s *alertSender) pass(ctx context.Context) {
	due, err := s.store.AlertsToDeliver(ctx, 50)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("list alerts to deliver", slog.Any("error", err))
		}
		return
	}
	for _, a := range due {
		err := s.deliver(ctx, a)
		if err != nil {
			s.log.Warn("alert not delivered; it is retried", "alert_id", a.ID, "kind", a.Kind, slog.Any("error", err))
		}
		if rerr := s.store.RecordAlertDelivery(ctx, a.ID, err); rerr != nil && ctx.Err() == nil {
			s.log.Warn("record alert delivery", slog.Any("error", rerr))
		}
	}
}

// deliver sends one alert to every channel; it fails if any fails (the
// retry then sends it to all again: a duplicate beats a loss).
func (s *alertSender) deliver(ctx context.Context, a models.Alert) error {
	var errs []error
	if s.channels.Webhook != "" {
		errs = append(errs, s.postWebhook(ctx, a))
	}
	if s.channels.SMTPAddr != "" {
		errs = append(errs, s.sendEmail(a))
	}
	return errors.Join(errs...)
}

func (s *alertSender) postWebhook(ctx context.Context, a models.Alert) error {
	body, _ := json.Marshal(handlers.AlertToJSON(a))
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.channels.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "lifeboat-vault")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func (s *alertSender) sendEmail(a models.Alert) error {
	c := s.channels
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: [Lifeboat] %s: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		c.SMTPFrom, strings.Join(c.SMTPTo, ", "), a.Severity, a.Kind, a.CreatedAt.Format(time.RFC1123Z))
	fmt.Fprintf(&msg, "%s\r\n\r\nAlert %s, %s %s, raised %s.\r\n", a.Message, a.ID, a.ObjectKind, a.ObjectID, a.CreatedAt.Format(time.RFC3339))
	if s.vaultURL != "" {
		fmt.Fprintf(&msg, "Acknowledge or resolve it at %s/alerts\r\n", s.vaultURL)
	}
	var auth smtp.Auth
	if c.SMTPUsername != "" {
		host, _, _ := net.SplitHostPort(c.SMTPAddr)
		auth = smtp.PlainAuth("", c.SMTPUsername, c.SMTPPassword, host)
	}
	if err := smtp.SendMail(c.SMTPAddr, auth, c.SMTPFrom, c.SMTPTo, msg.Bytes()); err != nil {
		return fmt.Errorf("email: %w", err)
	}
	return nil
}

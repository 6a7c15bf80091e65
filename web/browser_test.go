package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds the Debian Chromium the tests install (make test-deps).
// Without it the test skips on a developer machine, but fails in CI, where
// LIFEBOAT_REQUIRE_BROWSER is set, so the browser test can never be skipped
// silently.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("LIFEBOAT_REQUIRE_BROWSER") != "" {
		t.Fatal("Chromium is not installed, and LIFEBOAT_REQUIRE_BROWSER is set; run make test-deps")
	}
	t.Skip("Chromium is not installed; `make test` installs it (scripts/install-test-deps.sh)")
	return ""
}

// TestBrowserLogsInCreatesAPolicyAndFindsItInTheList drives real headless
// Chromium against the real vault program over HTTPS.
func TestBrowserLogsInCreatesAPolicyAndFindsItInTheList(t *testing.T) {
	exe := chromiumPath(t)
	v := startVault(t, t.TempDir(), "--admin-password", "browser-test-password")

	ctx := openBrowser(t, exe, 90*time.Second)

	err := chromedp.Do(ctx,
		chromedp.Navigate(v.URL+"/policies"), // not logged in: sent to the login page
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "browser-test-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="policies-empty"]`), // back where we were going
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	whoami, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="whoami"]`))
	if err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(`[data-testid="new-policy"]`),
		chromedp.WaitVisible(`[data-testid="policy-form"]`),
		chromedp.SendKeys(`input[name="name"]`, "Gold from the browser"),
		chromedp.SetValue(`select[name="copy_frequency_seconds"]`, "30"),
		chromedp.SetValue(`input[name="retention_hours"]`, "12"),
		chromedp.SetValue(`input[name="app_consistent_frequency_hours"]`, "2"),
		chromedp.Click(`[data-testid="policy-save"]`),
		chromedp.WaitVisible(`[data-testid="policies-table"]`),
	)
	if err != nil {
		t.Fatalf("create a policy: %v", err)
	}
	listed, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="policy-name"]`))
	if err != nil {
		t.Fatal(err)
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="flash"]`))
	if err != nil {
		t.Fatalf("browser session: %v", err)
	}
	if !strings.Contains(whoami, "admin") {
		t.Errorf("logged-in user shown as %q", whoami)
	}
	if listed != "Gold from the browser" {
		t.Errorf("policy list shows %q", listed)
	}
	if !strings.Contains(flash, "created") {
		t.Errorf("no confirmation, flash %q", flash)
	}
}

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// runJS runs a statement in the page, for its effect.
func runJS(statement string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void]("(() => { " + statement + "; return {}; })()")
}

// The target form shows only the fields of the chosen kind, and switching
// the kind switches them in place (no reload); a path typed before the
// switch is not kept with an Azure target.
func TestBrowserTargetFormShowsTheFieldsOfTheChosenKind(t *testing.T) {
	exe := chromiumPath(t)
	v := startVault(t, t.TempDir(), "--admin-password", "browser-test-password")
	ctx := openBrowser(t, exe, 90*time.Second)

	visible := func(testid string) string {
		return `(() => { const e = document.querySelector('[data-testid="` + testid + `"]'); return !!e && e.offsetParent !== null; })()`
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(v.URL+"/targets/new"),
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "browser-test-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="target-form"]`),
	)
	if err != nil {
		t.Fatal(err)
	}
	dirShown, err1 := chromedp.Run(ctx, chromedp.Evaluate[bool](visible("directory-fields")))
	azureShown, err2 := chromedp.Run(ctx, chromedp.Evaluate[bool](visible("azure-fields")))
	linksShown, err3 := chromedp.Run(ctx, chromedp.Evaluate[bool](visible("target-kind-links")))
	if err1 != nil || err2 != nil || err3 != nil || !dirShown || azureShown || linksShown {
		t.Fatalf("new target form (directory by default): directory fields shown %v, Azure fields shown %v, no-script kind links shown %v (%v %v %v)", dirShown, azureShown, linksShown, err1, err2, err3)
	}
	// Choose Azure as a user does: the page stays (the marker survives),
	// the fields switch.
	err = chromedp.Do(ctx,
		runJS(`window.__stay = true`),
		chromedp.SetValue(`select[name="kind"]`, "azure_blob"),
		runJS(`document.querySelector('select[name="kind"]').dispatchEvent(new Event("change", {bubbles: true}))`),
		chromedp.WaitVisible(`[data-testid="azure-fields"]`),
		chromedp.WaitNotVisible(`[data-testid="directory-fields"]`),
	)
	if err != nil {
		t.Fatalf("switching to Azure: %v", err)
	}
	if stayed, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__stay === true`)); err != nil || !stayed {
		t.Fatalf("the page reloaded to switch the fields (%v)", err)
	}
	// A path typed before the switch is not sent with an Azure target.
	err = chromedp.Do(ctx,
		chromedp.SetValue(`select[name="kind"]`, "directory"),
		runJS(`document.querySelector('select[name="kind"]').dispatchEvent(new Event("change", {bubbles: true}))`),
		chromedp.WaitVisible(`[data-testid="directory-fields"]`),
		chromedp.SendKeys(`input[name="path"]`, "/srv/typed-before-the-switch"),
		chromedp.SetValue(`select[name="kind"]`, "azure_blob"),
		runJS(`document.querySelector('select[name="kind"]').dispatchEvent(new Event("change", {bubbles: true}))`),
		chromedp.WaitVisible(`[data-testid="azure-fields"]`),
		chromedp.SendKeys(`input[name="name"]`, "blob"),
		chromedp.SendKeys(`input[name="account_url"]`, "https://acct.blob.core.windows.net"),
		chromedp.SendKeys(`input[name="container"]`, "lifeboat"),
		chromedp.SendKeys(`input[name="credential"]`, "c2VjcmV0LWFjY291bnQta2V5LTEyMzQ1Njc4OTA="),
		chromedp.Click(`[data-testid="target-save"]`),
		chromedp.WaitVisible(`[data-testid="targets-table"]`),
	)
	if err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main"))
		t.Fatalf("saving the Azure target: %v\n%s", err, html)
	}
	kind, err := chromedp.Run(ctx, chromedp.Text(`[data-testid="target-kind"]`))
	if err != nil || kind != "Azure Blob storage" {
		t.Fatalf("listed kind %q (%v)", kind, err)
	}
	// Its page opens with the Azure fields only.
	err = chromedp.Do(ctx,
		chromedp.Click(`[data-testid="target-name"]`),
		chromedp.WaitVisible(`[data-testid="azure-fields"]`),
	)
	if err != nil {
		t.Fatal(err)
	}
	if shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](visible("directory-fields"))); err != nil || shown {
		t.Fatalf("the Azure target's page shows the directory fields (%v)", err)
	}
	if html, _ := chromedp.Run(ctx, chromedp.OuterHTML("main")); strings.Contains(html, "typed-before-the-switch") {
		t.Fatal("the hidden directory path was saved with the Azure target")
	}
}

// Times read in the viewer's time zone (the browser's), with the UTC time
// on hover; the page itself writes UTC, which is what shows without
// JavaScript.
func TestBrowserShowsTimesInTheViewersTimeZone(t *testing.T) {
	exe := chromiumPath(t)
	v := startVault(t, t.TempDir(), "--admin-password", "browser-test-password")
	ctx := openBrowser(t, exe, 90*time.Second, chromedp.Env("TZ=Asia/Tokyo"))
	err := chromedp.Do(ctx,
		chromedp.Navigate(v.URL+"/users"),
		chromedp.WaitVisible(`[data-testid="login-form"]`),
		chromedp.SendKeys(`input[name="username"]`, "admin"),
		chromedp.SendKeys(`input[name="password"]`, "browser-test-password"),
		chromedp.Click(`[data-testid="login-submit"]`),
		chromedp.WaitVisible(`[data-testid="user-created"] time`),
	)
	if err != nil {
		t.Fatal(err)
	}
	shown, err1 := chromedp.Run(ctx, chromedp.Text(`[data-testid="user-created"]`))
	utc, err2 := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="user-created"] time').title`))
	iso, err3 := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid="user-created"] time').dateTime`))
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	at, err := time.Parse(time.RFC3339, iso)
	if err != nil || !strings.HasSuffix(utc, " UTC") {
		t.Fatalf("time element: datetime %q title %q (%v)", iso, utc, err)
	}
	tokyo := at.In(time.FixedZone("JST", 9*3600))
	if !strings.Contains(shown, "GMT+9") || !strings.Contains(shown, fmt.Sprintf("%02d:%02d", tokyo.Hour(), tokyo.Minute())) {
		t.Fatalf("the creation time shows as %q, want Tokyo's %s (UTC %s)", shown, tokyo.Format("15:04"), utc)
	}
}

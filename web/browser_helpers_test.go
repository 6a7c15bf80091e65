package main

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// openBrowser starts headless Chromium for one test, its life bounded by
// a watchdog (chromedp ties the browser to the first call's context, so a
// timeout on that context would end the browser too).
func openBrowser(t *testing.T, exe string, limit time.Duration, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 1000),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Tabs in the background keep their timers and streams running.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("ignore-certificate-errors", true), // the vault's own CA
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	watchdog := time.AfterFunc(limit, cancel)
	t.Cleanup(func() { watchdog.Stop(); cancel(); cancelAlloc() })
	return ctx
}

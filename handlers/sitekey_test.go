package handlers

import (
	"strings"
	"testing"
)

// A registration key that sends agents to a loopback address is only good
// on the vault's machine: the site page says so, and how to fix it.
func TestALoopbackVaultAddressInKeysIsWarnedAbout(t *testing.T) {
	for _, u := range []string{"https://127.0.0.1:8443", "https://localhost:8443", "https://[::1]:8443"} {
		if w := loopbackWarning(u); !strings.Contains(w, "--public-url") {
			t.Errorf("%s: warning %q", u, w)
		}
	}
	for _, u := range []string{"https://vault.example.com:8443", "https://10.0.0.5:8443", ""} {
		if w := loopbackWarning(u); w != "" {
			t.Errorf("%s: warned %q", u, w)
		}
	}
}

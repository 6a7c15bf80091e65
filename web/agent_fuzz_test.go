package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// FuzzAgentEndpointsDecodeAnyBodySafely posts arbitrary bodies to every
// agent endpoint as a registered host. Whatever arrives, the vault answers
// with a 2xx or a 4xx JSON error: never a 5xx, never a hang. The seed
// corpus runs in every `go test`; `go test -fuzz FuzzAgent ./web` explores.
func FuzzAgentEndpointsDecodeAnyBodySafely(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"agent":{"protocol_version":1}}`, `{"agent":{"protocol_version":-1}}`,
		`{"free":-5,"agent":{"protocol_version":1}}`, `{"free":1000000,"agent":{"protocol_version":1}}`,
		`{"vms":[{"id":"a","disks":[{"path":"/x","size_bytes":-1}]}]}`, `{"vms":[{"id":""}]}`,
		`{"percent":1e309}`, `{"percent":-7,"step":"\u0000"}`, `{"result":"not json"}`, `{"error":{"code":""}}`,
		`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"}`,
		`{"secret":"lbr_x","csr":"x","agent":{"protocol_version":1}}`, `{"unknown":1}`, `{"a":` + strings.Repeat("[", 10000),
	} {
		f.Add(seed)
	}
	tv := newTestVault(f, "")
	token := tv.apiToken("Contributor")
	var site struct{ ID string }
	tv.api(http.MethodPost, "/api/v1/sites", token, map[string]string{"name": "fuzz"}, &site)
	a := tv.mustRegister(token, site.ID, "hv-fuzz")
	paths := []string{agentproto.PathRegister, agentproto.PathRenew, agentproto.PathHeartbeat, agentproto.PathPoll,
		agentproto.PathInventory, agentproto.TaskProgressPath("task_x"), agentproto.TaskResultPath("task_x")}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range paths {
			resp, err := a.client.Post(tv.URL+path, "application/json", bytes.NewReader([]byte(body)))
			if err != nil {
				t.Fatalf("POST %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Fatalf("POST %s with %q: %d", path, body, resp.StatusCode)
			}
		}
	})
}

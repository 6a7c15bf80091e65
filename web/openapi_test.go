package main

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
)

// servedOpenAPI fetches the document the vault serves, anonymously.
func servedOpenAPI(t *testing.T, tv *testVault) []byte {
	t.Helper()
	status, raw := tv.apiRaw(http.MethodGet, "/api/v1/openapi.json", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", status, raw)
	}
	return raw
}

// apiRoutes lists "METHOD /path" of every registered route under /api/v1,
// with echo's :param written as OpenAPI's {param}, relative to /api/v1.
func apiRoutes(t *testing.T, tv *testVault) map[string]bool {
	t.Helper()
	e := newEcho(handlers.New(handlers.Deps{Store: tv.Store, Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler))
	param := regexp.MustCompile(`:([a-z_]+)`)
	out := map[string]bool{}
	for _, r := range e.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") || r.Method == echo.RouteNotFound || strings.HasSuffix(r.Path, "/*") {
			continue
		}
		out[r.Method+" "+param.ReplaceAllString(strings.TrimPrefix(r.Path, "/api/v1"), "{$1}")] = true
	}
	return out
}

type documentedOperation struct {
	Description string `json:"description"`
}

// documentedOperations reads "METHOD /path" → operation from the document.
func documentedOperations(t *testing.T, raw []byte) map[string]documentedOperation {
	t.Helper()
	var doc struct {
		Servers []struct{ URL string }                `json:"servers"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != "/api/v1" {
		t.Fatalf("servers = %+v, want one at /api/v1", doc.Servers)
	}
	out := map[string]documentedOperation{}
	for path, item := range doc.Paths {
		for method, rawOp := range item {
			var op documentedOperation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			out[strings.ToUpper(method)+" "+path] = op
		}
	}
	return out
}

func TestOpenAPIDocumentListsExactlyTheRoutesTheVaultServes(t *testing.T) {
	tv := newTestVault(t, "")
	routes := apiRoutes(t, tv)
	documented := documentedOperations(t, servedOpenAPI(t, tv))
	if len(routes) < 35 {
		t.Fatalf("only %d API routes found; the route walk is broken", len(routes))
	}
	var missing, extra []string
	for r := range routes {
		if _, ok := documented[r]; !ok {
			missing = append(missing, r)
		}
	}
	for op := range documented {
		if !routes[op] {
			extra = append(extra, op)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, r := range missing {
		t.Errorf("route %s is not in the OpenAPI document", r)
	}
	for _, op := range extra {
		t.Errorf("the OpenAPI document lists %s, which no route serves", op)
	}
}

func TestOpenAPIDocumentNamesTheRoleEachOperationNeeds(t *testing.T) {
	tv := newTestVault(t, "")
	role := regexp.MustCompile(`^Role: (none \(public\)|[A-Za-z]+)\.`)
	for key, op := range documentedOperations(t, servedOpenAPI(t, tv)) {
		method, path, _ := strings.Cut(key, " ")
		m := role.FindStringSubmatch(op.Description)
		if m == nil {
			t.Errorf("%s: description %q does not start with the role", key, op.Description)
			continue
		}
		// expectedRole (matrix_test.go) is the access policy written down
		// apart from routes.go; the document must say the same.
		want, known := expectedRole(method, "/api/v1"+strings.ReplaceAll(path, "{id}", ":id"))
		if !known {
			t.Errorf("%s: no access rule", key)
			continue
		}
		got := m[1]
		if got == "none (public)" {
			got = ""
		}
		if got != want {
			t.Errorf("%s: document says role %q, access policy says %q", key, got, want)
		}
	}
}

func TestOpenAPIDocumentIsValidOpenAPI3(t *testing.T) {
	tv := newTestVault(t, "")
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(servedOpenAPI(t, tv))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if doc.Components.SecuritySchemes["bearer"] == nil || doc.Components.Schemas["Error"] == nil {
		t.Fatal("the bearer scheme and the error schema must be components")
	}
	// The public operations must not ask for a token.
	if sec := doc.Paths.Find("/auth/token").Post.Security; sec == nil || len(*sec) != 0 {
		t.Fatalf("POST /auth/token security = %v, want none", sec)
	}
}

// TestOpenAPISchemasDescribeRealAnswers validates live answers against the
// document's schemas, so the document cannot drift from the JSON.
func TestOpenAPISchemasDescribeRealAnswers(t *testing.T) {
	tv := newTestVault(t, "")
	doc, err := openapi3.NewLoader().LoadFromData(servedOpenAPI(t, tv))
	if err != nil {
		t.Fatal(err)
	}
	owner := tv.apiToken(models.RoleOwner)
	seed := seedInventory(t, tv, nil)
	check := func(schema, path string) {
		t.Helper()
		var v any
		if status := tv.api(http.MethodGet, path, owner, nil, &v); status != http.StatusOK {
			t.Fatalf("GET %s: %d", path, status)
		}
		if err := doc.Components.Schemas[schema].Value.VisitJSON(v); err != nil {
			t.Errorf("GET %s does not match schema %s: %v", path, schema, err)
		}
	}
	check("SiteList", "/api/v1/sites")
	check("HostList", "/api/v1/hosts")
	check("VMList", "/api/v1/vms")
	check("VM", "/api/v1/vms/"+seed.protectedVM)
	check("VM", "/api/v1/vms/"+seed.unprotectedVM)
	check("JobList", "/api/v1/jobs")
	check("Job", "/api/v1/jobs/"+seed.failedJob)
	check("AlertList", "/api/v1/alerts")
	check("AuditEventList", "/api/v1/audit")
	check("TargetList", "/api/v1/targets")
	check("UserList", "/api/v1/users")
	check("APITokenList", "/api/v1/tokens")
}

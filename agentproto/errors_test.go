package agentproto

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/errors.md from the table")

const errorsDoc = "../docs/errors.md"

// renderErrorsDoc is docs/errors.md: the table, by area.
func renderErrorsDoc() []byte {
	var b bytes.Buffer
	b.WriteString("# Lifeboat error codes\n\n")
	b.WriteString("Every error a user can see has a stable code. API answers carry it as `error.code`;\n")
	b.WriteString("failed jobs show it with the message and what to do; a VM's page shows its last one.\n")
	b.WriteString("Generated from `agentproto/errors.go` by `go test ./agentproto -run TestErrorsDoc -update`;\n")
	b.WriteString("do not edit by hand. Retried: the vault retries a task that fails with it on the back-off\n")
	b.WriteString("schedule (1, 2, 4, 8, 10 minutes, then every 30); otherwise the job fails at once.\n")
	b.WriteString("An HTTP error without a code of its own answers `http_<status>`, such as `http_418`.\n")
	for _, area := range []struct{ where, title string }{
		{"API", "API and portal"}, {"agent endpoint", "Agent endpoint"}, {"task", "Tasks and jobs"}, {"health", "Health reasons of a protected VM"},
		{"vault", "Vault start-up"}, {"command", "Command line (lifeboat-vault)"},
	} {
		fmt.Fprintf(&b, "\n## %s\n\n", area.title)
		if intro, ok := map[string]string{
			"health":  "A protected VM's health (Normal, Warning, Critical) carries its reasons; a Warning that is not a\nfailed task has one of these codes.\n\n",
			"vault":   "The vault does not start, and prints the code with what to do, on a database it cannot run on.\n\n",
			"command": "",
		}[area.where]; ok {
			b.WriteString(intro)
			b.WriteString("| code | what happened | likely cause | what to do |\n|---|---|---|---|\n")
			for _, e := range Errors {
				if e.Where == area.where {
					fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", e.Code, e.Message, e.Cause, e.Action)
				}
			}
			continue
		}
		if area.where == "task" {
			b.WriteString("| code | retried | what happened | likely cause | what to do |\n|---|---|---|---|---|\n")
		} else {
			b.WriteString("| code | HTTP | what happened | likely cause | what to do |\n|---|---|---|---|---|\n")
		}
		for _, e := range Errors {
			if e.Where != area.where {
				continue
			}
			second := fmt.Sprint(e.Status)
			if area.where == "task" {
				second = map[bool]string{true: "yes", false: "no"}[e.Retried]
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", e.Code, second, e.Message, e.Cause, e.Action)
		}
	}
	return b.Bytes()
}

func TestErrorsDocIsGeneratedFromTheTable(t *testing.T) {
	want := renderErrorsDoc()
	if *update {
		if err := os.WriteFile(errorsDoc, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(errorsDoc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("docs/errors.md differs from the table in agentproto/errors.go (%v); run: go test ./agentproto -run TestErrorsDoc -update", err)
	}
}

func TestEveryEntryOfTheErrorTableIsComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range Errors {
		key := e.Code + "/" + e.Where
		switch {
		case seen[key]:
			t.Errorf("%s is listed twice", key)
		case !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(e.Code):
			t.Errorf("%q is not a snake_case code", e.Code)
		case e.Message == "" || e.Cause == "" || e.Action == "":
			t.Errorf("%s lacks a message, cause or action", key)
		case e.Where != "task" && e.Where != "health" && e.Where != "vault" && e.Where != "command" && e.Status == 0:
			t.Errorf("%s lacks its HTTP status", key)
		case e.Where != "API" && e.Where != "agent endpoint" && e.Where != "task" && e.Where != "health" && e.Where != "vault" && e.Where != "command":
			t.Errorf("%s: unknown area %q", key, e.Where)
		}
		seen[key] = true
	}
}

// codePatterns find error codes where the code sets them.
var codePatterns = []*regexp.Regexp{
	regexp.MustCompile(`Code:\s*"([a-z0-9_]*[a-z0-9])"`),
	regexp.MustCompile(`(?:apiError|agentError)\([^,]+,\s*"([a-z0-9_]*[a-z0-9])"`),
	regexp.MustCompile(`finishTask\([^"]*"[^"]*",\s*"([a-z0-9_]*[a-z0-9])"`),
	regexp.MustCompile(`\bcode\s*:?=\s*"([a-z0-9_]*[a-z0-9])"`),
	regexp.MustCompile(`\bcode, msg\s*:?=\s*"([a-z0-9_]*[a-z0-9])"`),
	regexp.MustCompile(`state, code, msg = [A-Za-z]+, "([a-z0-9_]*[a-z0-9])"`),
}

// TestEveryErrorCodeTheCodeSetsIsInTheTable reads the project's Go source
// (not tests): each code it sets must be in the table, and each code of
// the table must be set somewhere.
func TestEveryErrorCodeTheCodeSetsIsInTheTable(t *testing.T) {
	inTable := map[string]bool{}
	for _, e := range Errors {
		inTable[e.Code] = true
	}
	used := map[string][]string{}
	var source strings.Builder
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && d.Name() != "..") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "_templ.go") ||
			strings.HasSuffix(path, "agentproto/errors.go") || strings.HasSuffix(path, "agentproto/codes.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// A constant's definition is not a use of it.
		source.Write(constantDefinition.ReplaceAll(b, nil))
		for _, re := range codePatterns {
			for _, m := range re.FindAllSubmatch(b, -1) {
				used[string(m[1])] = append(used[string(m[1])], path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for code, where := range used {
		if !inTable[code] {
			missing = append(missing, code+" (in "+strings.Join(where, ", ")+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("codes set in the code but missing from agentproto/errors.go:\n%s", strings.Join(missing, "\n"))
	}
	// A code is also set through its constant (codes.go, agentproto.go):
	// a reference to the name outside its definition counts as a use.
	names := codeConstants(t)
	for name, code := range names {
		if regexp.MustCompile(`\b` + name + `\b`).MatchString(source.String()) {
			used[code] = append(used[code], "agentproto."+name)
		}
	}
	for code := range inTable {
		if len(used[code]) == 0 && !strings.Contains(source.String(), `"`+code+`"`) {
			t.Errorf("%s is in the table but no code sets it: remove it, or it is set in a way the patterns miss", code)
		}
	}
	for name, code := range names {
		if !inTable[code] {
			t.Errorf("constant %s = %q is not in the error table", name, code)
		}
	}
	if len(used) < 40 {
		t.Fatalf("only %d codes found: the patterns no longer match the code", len(used))
	}
}

func TestRedactSASHidesSignaturesOnly(t *testing.T) {
	in := `Get "https://a.blob.core.windows.net/c/d?se=2026-01-01&sig=abc%2Bdef%3D&sp=r": dial tcp: refused; SIG=xyz 'sig=q'`
	want := `Get "https://a.blob.core.windows.net/c/d?se=2026-01-01&sig=REDACTED&sp=r": dial tcp: refused; SIG=REDACTED 'sig=REDACTED'`
	if got := RedactSAS(in); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

var constantDefinition = regexp.MustCompile(`(?m)^\s*(Code[A-Za-z]+)\s*=\s*"([a-z0-9_]+)".*$`)

// codeConstants reads the Code… constants of this package's source.
func codeConstants(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	re := constantDefinition
	for _, f := range []string{"codes.go", "agentproto.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(b, -1) {
			out[string(m[1])] = string(m[2])
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d code constants found: the pattern no longer matches codes.go", len(out))
	}
	return out
}

package tasks

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// testTasks are the tasks over a fresh state directory and VM root.
func testTasks(t *testing.T) *Tasks {
	t.Helper()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(Deps{Driver: &filedisk.Driver{Root: t.TempDir()}, State: dir, Version: "test"})
}

// testReporter logs progress to the test.
type testReporter struct{ t *testing.T }

func (r testReporter) Set(p agentproto.Progress) { r.t.Logf("progress: %+v", p) }

func (r testReporter) Log() *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{r.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

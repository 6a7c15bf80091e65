package qmp_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/qmp/qemutest"
)

func dial(t *testing.T, vm *qemutest.VM) *qmp.Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := qmp.Dial(ctx, vm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMonitorNegotiatesAndRunsCommands(t *testing.T) {
	vm := qemutest.Start(t)
	m := dial(t, vm)
	if v := m.Version(); v.Major < 7 {
		t.Fatalf("version %v", v)
	}
	var status struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.Execute(context.Background(), "query-status", nil, &status); err != nil {
		t.Fatal(err)
	}
	if status.Status == "" {
		t.Fatalf("query-status: %+v", status)
	}
	// Arguments are passed: a node is added and listed.
	img := vm.Image(t, "d.qcow2", "qcow2", 1<<20)
	err := m.Execute(context.Background(), "blockdev-add", map[string]any{
		"node-name": "d0", "driver": "qcow2",
		"file": map[string]any{"driver": "file", "filename": img}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		Drv      string `json:"drv"`
	}
	if err := m.Execute(context.Background(), "query-named-block-nodes", nil, &nodes); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nodes {
		found = found || n.NodeName == "d0" && n.Drv == "qcow2"
	}
	if !found {
		t.Fatalf("d0 not in %+v", nodes)
	}
}

func TestAFailedCommandNamesItAndQEMUsErrorClass(t *testing.T) {
	vm := qemutest.Start(t)
	m := dial(t, vm)
	err := m.Execute(context.Background(), "no-such-command", nil, nil)
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Fatalf("error %#v", err)
	}
	err = m.Execute(context.Background(), "block-dirty-bitmap-add", map[string]any{"node": "nope", "name": "b"}, nil)
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !strings.Contains(err.Error(), "qmp block-dirty-bitmap-add: GenericError: ") {
		t.Fatalf("error %v", err)
	}
	// The monitor still works after an error.
	if err := m.Execute(context.Background(), "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCommandsGetTheirOwnAnswers(t *testing.T) {
	vm := qemutest.Start(t)
	m := dial(t, vm)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			var st struct{ Status string }
			if err := m.Execute(context.Background(), "query-status", nil, &st); err != nil || st.Status == "" {
				errs <- errors.New("query-status: " + st.Status + " " + errString(err))
			}
		}()
		go func() {
			defer wg.Done()
			err := m.Execute(context.Background(), "no-such-command", nil, nil)
			var qe *qmp.Error
			if !errors.As(err, &qe) || qe.Command != "no-such-command" {
				errs <- errors.New("no-such-command: " + errString(err))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestEventsArriveAndTheEndClosesThem(t *testing.T) {
	vm := qemutest.Start(t)
	m := dial(t, vm)
	events, stop := m.Subscribe()
	defer stop()
	// stop/cont make STOP and RESUME events; quit makes SHUTDOWN and
	// then ends the connection.
	for _, c := range []string{"stop", "cont"} {
		if err := m.Execute(context.Background(), c, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Execute(context.Background(), "quit", nil, nil); err != nil && !errors.Is(err, qmp.ErrClosed) {
		t.Fatal(err)
	}
	var names []string
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case ev, ok := <-events:
			if !ok {
				done = true
				break
			}
			if ev.Time.IsZero() {
				t.Errorf("event %s without a time", ev.Name)
			}
			names = append(names, ev.Name)
		case <-timeout:
			t.Fatalf("events did not end; got %v", names)
		}
	}
	if got := strings.Join(names, ","); got != "STOP,RESUME,SHUTDOWN" {
		t.Fatalf("events %s", got)
	}
	<-m.Done()
	if err := m.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("after the end: %v", err)
	}
}

func TestACanceledCallReturnsAndTheMonitorGoesOn(t *testing.T) {
	vm := qemutest.Start(t)
	m := dial(t, vm)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Execute(ctx, "query-status", nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if err := m.Execute(context.Background(), "query-status", nil, nil); err != nil {
		t.Fatal(err)
	}
}

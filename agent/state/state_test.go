package state

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// pair is a self-signed certificate and its key, in PEM.
func pair(t *testing.T, cn string) (keyPEM, certPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func registered(t *testing.T) (*Dir, []byte) {
	t.Helper()
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, certPEM := pair(t, "old")
	if err := d.SaveRegistration(Identity{VaultURL: "https://vault", HostID: "host_1"}, keyPEM, certPEM, certPEM); err != nil {
		t.Fatal(err)
	}
	return d, certPEM
}

func commonName(t *testing.T, d *Dir) string {
	t.Helper()
	c, err := d.Certificate()
	if err != nil {
		t.Fatalf("the state directory has no usable certificate: %v", err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	return leaf.Subject.CommonName
}

// TestARenewalInterruptedAtAnyPointLeavesAUsablePair replays what a crash
// leaves at each step of ReplaceCertificate.
func TestARenewalInterruptedAtAnyPointLeavesAUsablePair(t *testing.T) {
	newKey, newCert := pair(t, "new")
	tests := []struct {
		name  string
		crash func(d *Dir)
		want  string
	}{
		{"before anything was written", func(*Dir) {}, "old"},
		{"after the new certificate only", func(d *Dir) {
			os.WriteFile(d.file(certFile+".new"), newCert, 0o644)
		}, "old"},
		{"after both new files", func(d *Dir) {
			os.WriteFile(d.file(certFile+".new"), newCert, 0o644)
			os.WriteFile(d.file(keyFile+".new"), newKey, 0o600)
		}, "new"},
		{"after the key was renamed", func(d *Dir) {
			os.WriteFile(d.file(certFile+".new"), newCert, 0o644)
			os.WriteFile(d.file(keyFile), newKey, 0o600)
		}, "new"},
		{"with a torn new key", func(d *Dir) {
			os.WriteFile(d.file(certFile+".new"), newCert, 0o644)
			os.WriteFile(d.file(keyFile+".new"), newKey[:20], 0o600)
		}, "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := registered(t)
			tt.crash(d)
			if got := commonName(t, d); got != tt.want {
				t.Fatalf("certificate %q, want %q", got, tt.want)
			}
			for _, leftover := range []string{keyFile + ".new", certFile + ".new"} {
				if _, err := os.Stat(d.file(leftover)); err == nil {
					t.Errorf("%s is left behind", leftover)
				}
			}
		})
	}
}

func TestReplaceCertificateSwapsThePair(t *testing.T) {
	d, _ := registered(t)
	newKey, newCert := pair(t, "new")
	_, otherCert := pair(t, "other")
	if err := d.ReplaceCertificate(newKey, otherCert); err == nil {
		t.Fatal("a certificate for another key was accepted")
	}
	if err := d.ReplaceCertificate(newKey, newCert); err != nil {
		t.Fatal(err)
	}
	if got := commonName(t, d); got != "new" {
		t.Fatalf("certificate %q after the swap", got)
	}
	fi, _ := os.Stat(d.file(keyFile))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("the key has mode %v", fi.Mode().Perm())
	}
}

func TestTasksAreKeptUntilForgotten(t *testing.T) {
	d, _ := registered(t)
	rec := TaskRecord{Task: agentproto.Task{ID: "task_b", Kind: agentproto.TaskCheckPrerequisites}, State: TaskRunning}
	if err := d.SaveTask(rec); err != nil {
		t.Fatal(err)
	}
	rec.State, rec.Result = TaskDone, agentproto.Result{Error: &agentproto.TaskError{Code: "x", Message: "y"}}
	if err := d.SaveTask(rec); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveTask(TaskRecord{Task: agentproto.Task{ID: "../escape"}}); err == nil {
		t.Fatal("a task id that is a path was accepted")
	}
	got, err := d.Tasks()
	if err != nil || len(got) != 1 || got[0].State != TaskDone || got[0].Result.Error.Code != "x" {
		t.Fatalf("tasks %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, "tasks", "task_b.json")); err != nil {
		t.Fatal(err)
	}
	if err := d.ForgetTask("task_b", 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Tasks(); len(got) != 0 {
		t.Fatalf("forgotten task still listed: %+v", got)
	}
}

func TestALaterAttemptReplacesTheRecordAndAnEarlierOneCannotTouchIt(t *testing.T) {
	d, _ := registered(t)
	attempt := func(n int, st string) TaskRecord {
		return TaskRecord{Task: agentproto.Task{ID: "task_r", Kind: "replicate", Attempt: n}, State: st}
	}
	if err := d.SaveTask(attempt(1, TaskRunning)); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveTask(attempt(2, TaskRunning)); err != nil {
		t.Fatalf("a later attempt was not saved: %v", err)
	}
	// Attempt 1 ends after it was superseded: it may neither overwrite nor
	// remove attempt 2's record.
	if err := d.SaveTask(attempt(1, TaskDone)); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("saving the earlier attempt: %v, want ErrSuperseded", err)
	}
	if err := d.ForgetTask("task_r", 1); err != nil {
		t.Fatal(err)
	}
	got, err := d.Tasks()
	if err != nil || len(got) != 1 || got[0].Task.Attempt != 2 || got[0].State != TaskRunning {
		t.Fatalf("tasks %+v, %v; want attempt 2 running", got, err)
	}
	if err := d.SaveTask(attempt(2, TaskDone)); err != nil {
		t.Fatalf("the same attempt could not record its end: %v", err)
	}
	if err := d.ForgetTask("task_r", 2); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Tasks(); len(got) != 0 {
		t.Fatalf("attempt 2 forgotten but still listed: %+v", got)
	}
}

// Package state keeps what an agent must not forget across restarts, in one
// directory: its identity (key, certificate, the vault it belongs to) and
// the tasks it accepted, each written before it runs and again when it ends.
package state

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Dir is an agent's state directory.
type Dir struct {
	Path    string
	mu      sync.Mutex // the certificate files
	tasksMu sync.Mutex // task records: compare attempts and write as one step
}

// Identity is who the agent is to its vault.
type Identity struct {
	VaultURL string `json:"vault_url"`
	HostID   string `json:"host_id"`
	SiteID   string `json:"site_id"`
	Name     string `json:"name"`
}

// Files of the state directory.
const (
	identityFile = "identity.json"
	keyFile      = "host.key"
	certFile     = "host.crt"
	vaultCAFile  = "vault-ca.pem" // the pinned certificate that verifies the vault
	tasksDir     = "tasks"
)

// Open makes sure dir exists with mode 0700.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(filepath.Join(path, tasksDir), 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", path, err)
	}
	return &Dir{Path: path}, nil
}

func (d *Dir) file(name string) string { return filepath.Join(d.Path, name) }

// Registered reports whether the agent has an identity here.
func (d *Dir) Registered() bool {
	_, err := os.Stat(d.file(identityFile))
	return err == nil
}

// SaveRegistration stores a new identity with its key, certificate and the
// vault's pinned certificate. The identity is written last: a crash half-way
// leaves an agent that is not registered, never one with a broken identity.
func (d *Dir) SaveRegistration(id Identity, keyPEM, certPEM, vaultCAPEM []byte) error {
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{keyFile, keyPEM, 0o600}, {certFile, certPEM, 0o644}, {vaultCAFile, vaultCAPEM, 0o644}} {
		if err := WriteAtomic(d.file(f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(id, "", "  ")
	return WriteAtomic(d.file(identityFile), b, 0o600)
}

// Identity reads the stored identity.
func (d *Dir) Identity() (Identity, error) {
	var id Identity
	b, err := os.ReadFile(d.file(identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return id, fmt.Errorf("the agent is not registered in %s; run `lifeboat-agent register --key-file KEY --state-dir %s` first", d.Path, d.Path)
	}
	if err != nil {
		return id, err
	}
	return id, json.Unmarshal(b, &id)
}

// Certificate loads the host's key pair, first finishing a renewal that a
// crash interrupted.
func (d *Dir) Certificate() (*tls.Certificate, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.finishRenewal(); err != nil {
		return nil, fmt.Errorf("finish the interrupted certificate renewal in %s: %w", d.Path, err)
	}
	pair, err := tls.LoadX509KeyPair(d.file(certFile), d.file(keyFile))
	if err != nil {
		return nil, fmt.Errorf("load the host certificate: %w", err)
	}
	return &pair, nil
}

// ReplaceCertificate swaps in a renewed key and certificate.
//
// Two files cannot be renamed at once, so the swap rolls forward: both new
// files are written in full as host.key.new and host.crt.new, then renamed
// over the old ones. A crash at any point leaves either the old pair, or
// .new files that the next Certificate call renames into place; never a
// key without its certificate.
func (d *Dir) ReplaceCertificate(keyPEM, certPEM []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("the renewed certificate does not match the new key: %w", err)
	}
	// The certificate is written first: a .new key alone is never mistaken
	// for a complete pair.
	if err := WriteAtomic(d.file(certFile+".new"), certPEM, 0o644); err != nil {
		return err
	}
	if err := WriteAtomic(d.file(keyFile+".new"), keyPEM, 0o600); err != nil {
		return err
	}
	return d.finishRenewal()
}

// finishRenewal renames a complete .new pair into place, or removes the
// leftovers of a renewal that never finished writing. It is idempotent.
func (d *Dir) finishRenewal() error {
	newKey, newCert := d.file(keyFile+".new"), d.file(certFile+".new")
	if _, err := os.Stat(newCert); errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(newKey) // cannot happen in the order written; harmless
		return nil
	}
	_, keyErr := os.Stat(newKey)
	switch {
	case keyErr == nil && pairs(newCert, newKey):
		if err := os.Rename(newKey, d.file(keyFile)); err != nil {
			return err
		}
	case keyErr == nil:
		// Torn write: the old pair is in place and whole.
		_ = os.Remove(newKey)
		_ = os.Remove(newCert)
		return nil
	case !pairs(newCert, d.file(keyFile)):
		// The crash came before the new key was written: the old pair is
		// whole, and the new certificate is useless without its key.
		_ = os.Remove(newCert)
		return nil
	}
	// The key is in place (renamed now or before a crash); its certificate follows.
	if err := os.Rename(newCert, d.file(certFile)); err != nil {
		return err
	}
	return syncDir(d.Path)
}

func pairs(certPath, keyPath string) bool {
	_, err := tls.LoadX509KeyPair(certPath, keyPath)
	return err == nil
}

// VaultCA reads the pinned vault certificate.
func (d *Dir) VaultCA() ([]byte, error) { return os.ReadFile(d.file(vaultCAFile)) }

// Task states in the state directory.
const (
	TaskRunning = "running" // accepted, being run
	TaskDone    = "done"    // ended; the result waits to be delivered
)

// TaskRecord is one accepted task.
type TaskRecord struct {
	Task   agentproto.Task   `json:"task"`
	State  string            `json:"state"`
	Result agentproto.Result `json:"result"`
}

func (d *Dir) taskPath(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, `/\.`) {
		return "", fmt.Errorf("task id %q is not a safe file name", id)
	}
	return filepath.Join(d.Path, tasksDir, id+".json"), nil
}

// ErrSuperseded is SaveTask's answer to a record of an attempt older than
// the one stored: the vault leased the task again and the later attempt
// owns the record now.
var ErrSuperseded = errors.New("a later attempt of the task replaced this one")

// SaveTask writes a task record (before the task runs, and when it ends).
// A record of a later attempt replaces the stored one; a record of an
// earlier attempt is refused with ErrSuperseded, so a run that ends after
// it was superseded cannot overwrite its successor.
func (d *Dir) SaveTask(r TaskRecord) error {
	p, err := d.taskPath(r.Task.ID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	d.tasksMu.Lock()
	defer d.tasksMu.Unlock()
	if stored, ok := readTask(p); ok && stored.Task.Attempt > r.Task.Attempt {
		return fmt.Errorf("save attempt %d of task %s: %w (attempt %d)", r.Task.Attempt, r.Task.ID, ErrSuperseded, stored.Task.Attempt)
	}
	return WriteAtomic(p, b, 0o600)
}

// ForgetTask removes the record of a task's attempt once the vault has its
// result or no longer wants it. A record of a later attempt stays: it is
// not the caller's to forget.
func (d *Dir) ForgetTask(id string, attempt int) error {
	p, err := d.taskPath(id)
	if err != nil {
		return err
	}
	d.tasksMu.Lock()
	defer d.tasksMu.Unlock()
	if stored, ok := readTask(p); ok && stored.Task.Attempt > attempt {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// readTask reads the record at p; ok is false when there is none or it
// cannot be read, which a new record may then replace.
func readTask(p string) (r TaskRecord, ok bool) {
	b, err := os.ReadFile(p)
	if err != nil {
		return r, false
	}
	return r, json.Unmarshal(b, &r) == nil
}

// Tasks lists stored task records, oldest id first.
func (d *Dir) Tasks() ([]TaskRecord, error) {
	entries, err := os.ReadDir(filepath.Join(d.Path, tasksDir))
	if err != nil {
		return nil, err
	}
	var out []TaskRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.Path, tasksDir, e.Name()))
		if err != nil {
			return nil, err
		}
		var r TaskRecord
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("task record %s is damaged: %w", e.Name(), err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Task.ID < out[j].Task.ID })
	return out, nil
}

// WriteAtomic writes through a temporary file, fsync and rename.
func WriteAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

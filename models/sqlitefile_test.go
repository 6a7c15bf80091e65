package models_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models/storetest"
)

func TestTheSQLiteDatabaseIsReadableByItsOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "lifeboat.db")
	h := &harness{clock: storetest.NewClock(), dsn: fresh}
	h.s = storetest.Open(t, fresh, h.clock)
	mustSite(t, h, "s") // a write: the WAL holds it
	// One left 0644 by an earlier vault is made owner-only too.
	old := filepath.Join(dir, "old.db")
	for _, p := range []string{old, old + "-wal", old + "-shm"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	storetest.Open(t, old, h.clock)
	for _, p := range []string{fresh, fresh + "-wal", fresh + "-shm", old, old + "-wal", old + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want -rw------- (it holds secrets' hashes and sealed credentials)", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

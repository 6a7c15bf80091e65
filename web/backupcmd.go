package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// A vault backup is one tar.gz file: the database and what the database
// cannot be read without — the vault key (it seals the storage
// credentials) and the vault CA (the hosts' certificates are signed by it,
// so they trust a restored vault and it trusts them). It holds secrets:
// the file is written 0600; keep it as the vault key itself is kept.
const (
	backupDB     = "lifeboat.db"     // SQLite: a consistent copy (VACUUM INTO)
	backupPGDump = "lifeboat.pgdump" // PostgreSQL: pg_dump --format=custom
)

// backupCommand answers `lifeboat-vault backup --out FILE`, with the
// vault's own --data-dir and --db; it runs beside a serving vault.
func backupCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the backup file to write (tar.gz, mode 0600); it must not exist")
	vaultArgs, rest := splitVaultFlags(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("backup needs --out FILE: where to write the backup")
	}
	cfg, err := parseConfig(vaultArgs, getenv, stderr)
	if err != nil {
		return err
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("--out %s exists already; give a new file name (a backup never overwrites one)", *out)
	}
	work, err := os.MkdirTemp(filepath.Dir(*out), ".lifeboat-backup-")
	if err != nil {
		return fmt.Errorf("--out: cannot write beside %s: %w", *out, err)
	}
	defer os.RemoveAll(work)
	dbFile := ""
	if strings.HasPrefix(cfg.DB, "postgres://") || strings.HasPrefix(cfg.DB, "postgresql://") {
		dbFile = filepath.Join(work, backupPGDump)
		cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--file", dbFile, "--dbname", cfg.DB)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pg_dump of --db failed (%v): %s; install PostgreSQL's client tools (pg_dump) on this machine", err, strings.TrimSpace(string(msg)))
		}
	} else {
		dbFile = filepath.Join(work, backupDB)
		if err := sqliteSnapshot(ctx, cfg.DB, dbFile); err != nil {
			return err
		}
	}
	tmp := filepath.Join(work, "backup.tar.gz")
	if err := writeBackup(tmp, dbFile, cfg.DataDir); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote a backup of the vault (%s, the vault key and CA) to %s. It holds secrets: keep it as you keep the vault key.\n",
		filepath.Base(dbFile), *out)
	return nil
}

// sqliteSnapshot copies a SQLite database consistently while the vault
// writes to it: VACUUM INTO reads one snapshot (WAL lets it read beside the
// writer) and writes a compact copy.
func sqliteSnapshot(ctx context.Context, path, to string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("the database %s: %w (give the vault's --data-dir or --db)", path, err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", to); err != nil {
		return fmt.Errorf("copy the database %s: %w", path, err)
	}
	return nil
}

// writeBackup writes the tar.gz: the database copy, vault.key and tls/.
func writeBackup(file, dbFile, dataDir string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	add := func(src, name string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: time.Now()}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	err = add(dbFile, filepath.Base(dbFile))
	if err == nil {
		err = add(filepath.Join(dataDir, "vault.key"), "vault.key")
	}
	if err == nil {
		err = filepath.WalkDir(filepath.Join(dataDir, "tls"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			return add(p, "tls/"+d.Name())
		})
	}
	for _, c := range []io.Closer{tw, gz} {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// restoreCommand answers `lifeboat-vault restore --from FILE --data-dir
// DIR`: it unpacks a backup into a data directory without a vault in it.
// A SQLite database goes to DIR/lifeboat.db; a PostgreSQL dump is left in
// DIR for pg_restore, with the command to run.
func restoreCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the backup file (from lifeboat-vault backup)")
	dataDir := fs.String("data-dir", "", "the new vault's data directory; it must hold no vault yet")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" || *dataDir == "" {
		return errors.New("restore needs --from FILE and --data-dir DIR")
	}
	for _, name := range []string{backupDB, "vault.key", "tls"} {
		if _, err := os.Stat(filepath.Join(*dataDir, name)); err == nil {
			return fmt.Errorf("--data-dir %s holds a vault already (%s); restore into an empty directory, so that nothing is overwritten", *dataDir, name)
		}
	}
	f, err := os.Open(*from)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("--from %s is not a vault backup (not gzip): %w", *from, err)
	}
	if err := os.MkdirAll(filepath.Join(*dataDir, "tls"), 0o700); err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	got := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("--from %s is damaged: %w", *from, err)
		}
		name := filepath.Clean(h.Name)
		if name != backupDB && name != backupPGDump && name != "vault.key" && !(strings.HasPrefix(name, "tls/") && !strings.Contains(name[4:], "/")) {
			return fmt.Errorf("--from %s holds %q, which no vault backup holds; not restored", *from, h.Name)
		}
		dst, err := os.OpenFile(filepath.Join(*dataDir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(dst, tr)
		if err == nil {
			err = dst.Sync()
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		got[name] = true
	}
	if !got["vault.key"] || (!got[backupDB] && !got[backupPGDump]) {
		return fmt.Errorf("--from %s lacks the database or the vault key; it is not a whole vault backup", *from)
	}
	if got[backupPGDump] {
		fmt.Fprintf(stdout, "Restored the vault key and CA to %s. Load the database into an empty PostgreSQL database with:\n  pg_restore --no-owner --dbname postgres://… %s\nthen start the vault with --data-dir %s --db postgres://…\n",
			*dataDir, filepath.Join(*dataDir, backupPGDump), *dataDir)
		return nil
	}
	fmt.Fprintf(stdout, "Restored the vault to %s; start it with --data-dir %s.\n", *dataDir, *dataDir)
	return nil
}

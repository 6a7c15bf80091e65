package main

import (
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadSettingsStopTheVaultNamingTheSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		mention string
	}{
		{"listen without port", []string{"--listen", "127.0.0.1"}, nil, "--listen"},
		{"listen port out of range", []string{"--listen", "127.0.0.1:70000"}, nil, "--listen"},
		{"listen from env", nil, map[string]string{"LIFEBOAT_LISTEN": "nonsense"}, "LIFEBOAT_LISTEN"},
		{"db with an unknown scheme", []string{"--db", "mysql://x/y"}, nil, "--db"},
		{"cert without key", []string{"--tls-cert", file}, nil, "--tls-cert"},
		{"missing cert file", []string{"--tls-cert", "/nonexistent.pem", "--tls-key", file}, nil, "--tls-cert"},
		{"short admin password", []string{"--admin-password", "short"}, nil, "--admin-password"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"log level", nil, map[string]string{"LIFEBOAT_LOG_LEVEL": "loud"}, "--log-level"},
		{"data dir is a file", []string{"--data-dir", file}, nil, "--data-dir"},
		{"stray argument", []string{"serve"}, nil, "unexpected argument"},
		{"time zone", []string{"--time-zone", "Mars/Olympus"}, nil, "--time-zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			_, err := parseConfig(tc.args, getenv, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("error %v, want one naming %q", err, tc.mention)
			}
		})
	}
}

func TestSettingsComeFromFlagsThenEnvironmentThenDefaults(t *testing.T) {
	env := map[string]string{"LIFEBOAT_DATA_DIR": "/srv/lb", "LIFEBOAT_LISTEN": "127.0.0.1:9443"}
	c, err := parseConfig([]string{"--listen", "127.0.0.1:7443"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7443" || c.DataDir != "/srv/lb" || c.DB != "/srv/lb/lifeboat.db" || c.LogFormat != "text" {
		t.Fatalf("got %+v", c)
	}
	c, err = parseConfig([]string{"--db", "postgres://postgres@127.0.0.1:5432/test"}, func(string) string { return "" }, io.Discard)
	if err != nil || c.DB != "postgres://postgres@127.0.0.1:5432/test" {
		t.Fatalf("postgres URL: %+v %v", c, err)
	}
}

func TestAnUnreachableDatabaseStopsTheVaultWithTheSettingNamed(t *testing.T) {
	dir := t.TempDir()
	err := run(t.Context(), []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--db", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--db") {
		t.Fatalf("error %v, want one naming --db", err)
	}
}

func TestAVaultDoesNotStartOnADatabaseSchemaNewerThanItself(t *testing.T) {
	dir := t.TempDir()
	v := startVault(t, dir)
	if err := v.stop(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", filepath.Join(dir, "lifeboat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'from_a_later_vault', CURRENT_TIMESTAMP)"); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"--data-dir", dir, "--listen", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, io.Discard)
	for _, says := range []string{"schema_too_new", "version 99", "knows up to version", "restore a backup"} {
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Fatalf("error %v, want one saying %q", err, says)
		}
	}
}

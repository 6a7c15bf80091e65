package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// registrationKeyCommand writes a registration key file without the portal:
// `lifeboat-vault registration-key --site NAME --out FILE`, on the vault's
// machine, with the vault's data directory. It is how automation (and
// `make run`) enrolls the first agents. --create-site makes the site when
// it does not exist yet.
func registrationKeyCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("registration-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	site := fs.String("site", "", "the site's name")
	createSite := fs.Bool("create-site", false, "create the site if it does not exist")
	out := fs.String("out", "", "where to write the key file (mode 0600)")
	vaultArgs, keyArgs := splitVaultFlags(args)
	if err := fs.Parse(keyArgs); err != nil {
		return err
	}
	if *site == "" || *out == "" {
		return errors.New("registration-key needs --site and --out")
	}
	cfg, err := parseConfig(vaultArgs, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.TLSCert != "" {
		return errors.New("registration-key pins the vault CA; with --tls-cert, download keys from the portal instead")
	}
	key, err := pki.LoadOrCreateKey(filepath.Join(cfg.DataDir, "vault.key"))
	if err != nil {
		return err
	}
	sealer, err := models.NewSealer(key)
	if err != nil {
		return err
	}
	store, err := models.Open(ctx, models.Options{DSN: cfg.DB, Sealer: sealer})
	if err != nil {
		return fmt.Errorf("setting --db (LIFEBOAT_DB): %w", err)
	}
	defer store.Close()
	ca, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "tls"))
	if err != nil {
		return err
	}
	a := models.Actor{Username: "cli"}
	st, err := findSite(ctx, store, *site)
	if errors.Is(err, models.ErrNotFound) && *createSite {
		st = &models.Site{Name: *site}
		err = store.CreateSite(ctx, a, st)
	}
	if err != nil {
		return fmt.Errorf("site %q: %w (add --create-site to create it)", *site, err)
	}
	k, secret, err := store.CreateRegistrationKey(ctx, a, st.ID, 0)
	if err != nil {
		return err
	}
	url := cfg.PublicURL
	if url == "" {
		host, port, _ := net.SplitHostPort(cfg.Listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host, _ = os.Hostname()
		}
		url = "https://" + net.JoinHostPort(host, port)
	}
	file := agentproto.RegistrationKey{VaultURL: url, CAFingerprint: ca.Fingerprint(), Secret: secret, SiteID: st.ID, SiteName: st.Name, ExpiresAt: k.ExpiresAt.UTC()}
	b, _ := json.MarshalIndent(file, "", "  ")
	if err := os.WriteFile(*out, append(b, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote a registration key for site %q to %s (valid until %s).\n", st.Name, *out, file.ExpiresAt.Format("2006-01-02 15:04 MST"))
	return nil
}

func findSite(ctx context.Context, store *models.Store, name string) (*models.Site, error) {
	for page := (models.Page{Limit: models.MaxPageSize}); ; {
		sites, next, err := store.ListSites(ctx, page)
		if err != nil {
			return nil, err
		}
		for i := range sites {
			if sites[i].Name == name {
				return &sites[i], nil
			}
		}
		if next == "" {
			return nil, models.ErrNotFound
		}
		page.Cursor = next
	}
}

// splitVaultFlags separates the vault's own settings (--data-dir, --db,
// --listen, --public-url) from the command's flags.
func splitVaultFlags(args []string) (vault, rest []string) {
	own := map[string]bool{"--data-dir": true, "--db": true, "--listen": true, "--public-url": true, "-data-dir": true, "-db": true, "-listen": true, "-public-url": true}
	for i := 0; i < len(args); i++ {
		name, _, hasValue := strings.Cut(args[i], "=")
		if own[name] {
			vault = append(vault, args[i])
			if !hasValue && i+1 < len(args) {
				vault = append(vault, args[i+1])
				i++
			}
			continue
		}
		rest = append(rest, args[i])
	}
	return vault, rest
}

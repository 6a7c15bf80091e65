package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/client"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/runner"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

func registerCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", "", "the registration key downloaded from the site's page in the portal")
	stateDir := fs.String("state-dir", envOr(getenv, "LIFEBOAT_AGENT_STATE_DIR", ""), "the agent's state directory (LIFEBOAT_AGENT_STATE_DIR)")
	hostname, _ := os.Hostname()
	name := fs.String("name", hostname, "the host's name in the vault")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *stateDir == "" {
		return errors.New("register needs --key-file and --state-dir")
	}
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("read the registration key: %w", err)
	}
	var key agentproto.RegistrationKey
	if err := json.Unmarshal(raw, &key); err != nil || key.Secret == "" || key.VaultURL == "" {
		return fmt.Errorf("%s is not a Lifeboat registration key; download one from the site's page in the portal", *keyFile)
	}
	if !key.ExpiresAt.IsZero() && time.Now().After(key.ExpiresAt) {
		return fmt.Errorf("the registration key expired at %s (keys are valid for 5 days); download a new one from the site's page", key.ExpiresAt.UTC().Format(time.RFC3339))
	}
	dir, err := state.Open(*stateDir)
	if err != nil {
		return err
	}
	if dir.Registered() {
		id, _ := dir.Identity()
		return fmt.Errorf("%s already holds the registration of host %s with %s; use another --state-dir, or remove that host in the portal and delete the directory first", *stateDir, id.HostID, id.VaultURL)
	}
	var pinned *x509.Certificate
	tlsConfig, err := client.PinnedTLS(key.VaultURL, key.CAFingerprint, func(c *x509.Certificate) { pinned = c })
	if err != nil {
		return err
	}
	vault := client.New(key.VaultURL, tlsConfig, 30*time.Second)
	defer vault.Close()
	keyPEM, csrPEM, err := client.NewKeyAndCSR(*name)
	if err != nil {
		return err
	}
	var resp agentproto.RegisterResponse
	req := agentproto.RegisterRequest{Secret: key.Secret, Name: *name, CSR: string(csrPEM), Agent: runner.Info(filedisk.Name)}
	if err := vault.Post(ctx, agentproto.PathRegister, req, &resp); err != nil {
		var ve *client.VaultError
		if errors.As(err, &ve) {
			return fmt.Errorf("the vault refused the registration: %s", ve.Message)
		}
		return err
	}
	if pinned == nil {
		return errors.New("the vault's certificate was not pinned; refusing to store the registration")
	}
	pinnedPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pinned.Raw})
	id := state.Identity{VaultURL: key.VaultURL, HostID: resp.HostID, SiteID: resp.SiteID, Name: *name}
	if err := dir.SaveRegistration(id, keyPEM, []byte(resp.Certificate), pinnedPEM); err != nil {
		return fmt.Errorf("store the registration in %s: %w", *stateDir, err)
	}
	fmt.Fprintf(stdout, "Registered host %q (%s) in site %s of %s.\nStart the agent with: lifeboat-agent run --state-dir %s\n",
		*name, resp.HostID, strings.TrimSpace(key.SiteName), key.VaultURL, *stateDir)
	return nil
}

package models_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/lifeboat-dr/lifeboat/models"
)

var (
	accountKey = base64.StdEncoding.EncodeToString([]byte("the-storage-account-key-not-for-display"))
	sasToken   = "sv=2022-11-02&ss=b&srt=co&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=c2lnbmF0dXJl"
)

func azureInput(name string) models.TargetInput {
	return models.TargetInput{Name: name, Kind: models.TargetAzureBlob, AccountURL: "https://lifeboat.blob.core.windows.net/",
		Container: "replicas", CredentialKind: models.CredentialAccountKey, Credential: accountKey}
}

func TestTargetCredentialIsSealed(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		tg, err := h.s.CreateTarget(ctx, alice, azureInput("Azure West"))
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if tg.AccountURL != "https://lifeboat.blob.core.windows.net" {
			t.Errorf("account URL = %q, want it without the trailing slash", tg.AccountURL)
		}
		got, err := h.s.GetTarget(ctx, tg.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.CredentialSealed) == 0 {
			t.Fatal("no sealed credential stored")
		}
		keyBytes, _ := base64.StdEncoding.DecodeString(accountKey)
		if bytes.Contains(got.CredentialSealed, []byte(accountKey)) || bytes.Contains(got.CredentialSealed, keyBytes) {
			t.Fatal("the stored credential contains the plaintext key")
		}
		if cred, err := h.s.TargetCredential(got); err != nil || cred != accountKey {
			t.Fatalf("TargetCredential = %q, %v; want the key", cred, err)
		}
		ev := wantAudit(t, h, "target.create", tg.ID)
		if strings.Contains(ev.Details, accountKey) || strings.Contains(ev.Details, "CredentialSealed") {
			t.Errorf("audit details carry the secret: %s", ev.Details)
		}
		if !strings.Contains(ev.Details, "azure_blob") {
			t.Errorf("audit details = %s, want the target's kind", ev.Details)
		}
	})
}

func TestUpdateTargetCredential(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		tg, err := h.s.CreateTarget(ctx, alice, azureInput("Azure West"))
		if err != nil {
			t.Fatal(err)
		}
		credential := func() string {
			t.Helper()
			got, err := h.s.GetTarget(ctx, tg.ID)
			if err != nil {
				t.Fatal(err)
			}
			cred, err := h.s.TargetCredential(got)
			if err != nil {
				t.Fatal(err)
			}
			return cred
		}

		in := azureInput("Azure West")
		in.Container, in.Credential = "replicas-2", ""
		updated, err := h.s.UpdateTarget(ctx, alice, tg.ID, in)
		if err != nil {
			t.Fatalf("update without a credential: %v", err)
		}
		if updated.Container != "replicas-2" {
			t.Errorf("container = %q", updated.Container)
		}
		if got := credential(); got != accountKey {
			t.Errorf("credential after an update without one = %q, want the old key kept", got)
		}
		wantAudit(t, h, "target.update", tg.ID)

		// Switching to a SAS needs the SAS: the old key is no SAS.
		in.CredentialKind = models.CredentialSAS
		_, err = h.s.UpdateTarget(ctx, alice, tg.ID, in)
		wantFields(t, err, "sas")
		in.Credential = "?" + sasToken
		if _, err := h.s.UpdateTarget(ctx, alice, tg.ID, in); err != nil {
			t.Fatalf("switch to SAS: %v", err)
		}
		if got := credential(); got != "?"+sasToken {
			t.Errorf("credential = %q, want the SAS", got)
		}

		// A directory target has no credential left behind.
		dir, err := h.s.UpdateTarget(ctx, alice, tg.ID, models.TargetInput{Name: "Azure West", Kind: models.TargetDirectory, Path: "/srv/replicas/../lifeboat"})
		if err != nil {
			t.Fatalf("switch to directory: %v", err)
		}
		got, _ := h.s.GetTarget(ctx, tg.ID)
		if got.Kind != models.TargetDirectory || got.Path != "/srv/lifeboat" || len(got.CredentialSealed) != 0 || got.CredentialKind != "" || got.AccountURL != "" {
			t.Errorf("directory target = %+v (returned %+v), want a clean path and no credential", got, dir)
		}
	})
}

func TestTargetValidation(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(in *models.TargetInput)
		fields []string
	}{
		{"account key target", func(in *models.TargetInput) {}, nil},
		{"SAS target", func(in *models.TargetInput) { in.CredentialKind, in.Credential = models.CredentialSAS, sasToken }, nil},
		{"emulator on loopback over http", func(in *models.TargetInput) { in.AccountURL = "http://127.0.0.1:10000/devstoreaccount1" }, nil},
		{"localhost over http", func(in *models.TargetInput) { in.AccountURL = "http://localhost:10000/devstoreaccount1" }, nil},
		{"directory target", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/mnt/nas"}
		}, nil},

		{"name required", func(in *models.TargetInput) { in.Name = "" }, []string{"name"}},
		{"unknown kind", func(in *models.TargetInput) { in.Kind = "s3" }, []string{"kind"}},
		{"plain http to a remote host", func(in *models.TargetInput) { in.AccountURL = "http://lifeboat.blob.core.windows.net" }, []string{"account_url"}},
		{"account URL without scheme", func(in *models.TargetInput) { in.AccountURL = "lifeboat.blob.core.windows.net" }, []string{"account_url"}},
		{"account URL with a query", func(in *models.TargetInput) { in.AccountURL = "https://lifeboat.blob.core.windows.net/?sig=x" }, []string{"account_url"}},
		{"container with capitals", func(in *models.TargetInput) { in.Container = "Replicas" }, []string{"container"}},
		{"container too short", func(in *models.TargetInput) { in.Container = "ab" }, []string{"container"}},
		{"container with a double hyphen", func(in *models.TargetInput) { in.Container = "re--plicas" }, []string{"container"}},
		{"account key missing", func(in *models.TargetInput) { in.Credential = "" }, []string{"account_key"}},
		{"account key not base64", func(in *models.TargetInput) { in.Credential = "not base64!" }, []string{"account_key"}},
		{"account key too short", func(in *models.TargetInput) { in.Credential = base64.StdEncoding.EncodeToString([]byte("short")) }, []string{"account_key"}},
		{"SAS without a signature", func(in *models.TargetInput) {
			in.CredentialKind, in.Credential = models.CredentialSAS, "sv=2022-11-02&ss=b"
		}, []string{"sas"}},
		{"no credential kind", func(in *models.TargetInput) { in.CredentialKind = "" }, []string{"account_key"}},
		{"relative directory", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "replicas"}
		}, []string{"path"}},
		{"directory without path", func(in *models.TargetInput) { *in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory} }, []string{"path"}},
		{"the root directory", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/"}
		}, []string{"path"}},
		{"a system directory", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/etc"}
		}, []string{"path"}},
		{"under a kernel filesystem", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/proc/self"}
		}, []string{"path"}},
		{"a system directory reached by ..", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/../usr/lib"}
		}, []string{"path"}},
		{"a NUL in the path", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/rep\x00licas"}
		}, []string{"path"}},
		{"a newline in the path", func(in *models.TargetInput) {
			*in = models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/srv/rep\nlicas"}
		}, []string{"path"}},
	}
	eachBackend(t, func(t *testing.T, h *harness) {
		for i, c := range cases {
			in := azureInput("Azure")
			c.edit(&in)
			if in.Name != "" {
				in.Name = in.Name + " " + string(rune('a'+i))
			}
			_, err := h.s.CreateTarget(t.Context(), alice, in)
			if c.fields == nil {
				if err != nil {
					t.Errorf("%s: refused: %v", c.name, err)
				}
				continue
			}
			t.Run(c.name, func(t *testing.T) { wantFields(t, err, c.fields...) })
		}
		targets, _, err := h.s.ListTargets(t.Context(), models.Page{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(auditEvents(t, h, "target.create")); len(targets) != 5 || n != 5 {
			t.Errorf("targets = %d, target.create events = %d; want only the 5 valid ones", len(targets), n)
		}
	})
}

func TestTargetDuplicateNameAndUnknownID(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		mustDirectoryTarget(t, h, "nas")
		other := mustDirectoryTarget(t, h, "san")
		_, err := h.s.CreateTarget(ctx, alice, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/x"})
		wantFields(t, err, "name")
		_, err = h.s.UpdateTarget(ctx, alice, other.ID, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/x"})
		wantFields(t, err, "name")
		wantNoAudit(t, h, "target.update")

		_, err = h.s.GetTarget(ctx, "tgt_nope")
		wantNotFound(t, "get", err)
		_, err = h.s.UpdateTarget(ctx, alice, "tgt_nope", models.TargetInput{Name: "x", Kind: models.TargetDirectory, Path: "/x"})
		wantNotFound(t, "update", err)
		wantNotFound(t, "delete", h.s.DeleteTarget(ctx, alice, "tgt_nope"))

		if err := h.s.DeleteTarget(ctx, alice, other.ID); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = h.s.GetTarget(ctx, other.ID)
		wantNotFound(t, "get deleted", err)
		wantAudit(t, h, "target.delete", other.ID)
	})
}

func TestTargetInUse(t *testing.T) {
	eachBackend(t, func(t *testing.T, h *harness) {
		ctx := t.Context()
		site := mustSite(t, h, "Primary")
		host := mustHost(t, h, site.ID, "hv1", models.HostConnected)
		vms := mustVMs(t, h, host.ID, "a")
		p := mustPolicy(t, h, "Gold")
		tg := mustDirectoryTarget(t, h, "nas")
		insertProtection(t, h, vms["a"].ID, p.ID, tg.ID, models.HealthNormal)

		wantConflict(t, h.s.DeleteTarget(ctx, alice, tg.ID), "target_in_use")
		_, err := h.s.UpdateTarget(ctx, alice, tg.ID, azureInput("nas"))
		wantConflict(t, err, "target_in_use")
		got, err := h.s.GetTarget(ctx, tg.ID)
		if err != nil || got.Kind != models.TargetDirectory {
			t.Fatalf("target after refused changes = %+v, %v", got, err)
		}
		wantNoAudit(t, h, "target.delete")
		wantNoAudit(t, h, "target.update")

		// Nor may its path: the VMs would go on writing to the old one.
		_, err = h.s.UpdateTarget(ctx, alice, tg.ID, models.TargetInput{Name: "nas", Kind: models.TargetDirectory, Path: "/mnt/other"})
		wantConflict(t, err, "target_in_use")
		// Its name and its create-the-path choice may change.
		if _, err := h.s.UpdateTarget(ctx, alice, tg.ID, models.TargetInput{Name: "nas 2", Kind: models.TargetDirectory, Path: tg.Path, CreatePath: true}); err != nil {
			t.Errorf("rename a target in use: %v", err)
		}
	})
}

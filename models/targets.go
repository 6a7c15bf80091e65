package models

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"gorm.io/gorm"
)

// TargetInput is what creating or updating a target takes. Credential is the
// account key or the SAS token, write-only; on update an empty one keeps the
// stored credential.
type TargetInput struct {
	Name           string
	Kind           string
	AccountURL     string
	Container      string
	CredentialKind string
	Credential     string
	Path           string
	CreatePath     bool // directory: create the path on a host that lacks it
}

var containerPattern = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

func validateTarget(in *TargetInput, creating bool) error {
	v := &ValidationError{}
	in.Name = strings.TrimSpace(in.Name)
	validateName(v, "name", in.Name)
	switch in.Kind {
	case TargetAzureBlob:
		validateAccountURL(v, strings.TrimSpace(in.AccountURL))
		in.AccountURL = strings.TrimRight(strings.TrimSpace(in.AccountURL), "/")
		in.Container = strings.TrimSpace(in.Container)
		switch {
		case !containerPattern.MatchString(in.Container):
			v.Add("container", "must be 3–%d characters of lower-case letters, digits and single hyphens, starting and ending with a letter or digit (Azure's container naming rules)", maxContainerPrefix)
		case len(in.Container) > maxContainerPrefix:
			v.Add("container", "must be at most %d characters: each protected VM gets a container named %s-VMID, and Azure allows 63", maxContainerPrefix, in.Container)
		}
		in.Credential = strings.TrimSpace(in.Credential)
		switch in.CredentialKind {
		case CredentialAccountKey:
			if in.Credential != "" || creating {
				if b, err := base64.StdEncoding.DecodeString(in.Credential); err != nil || len(b) < 16 {
					v.Add("account_key", "must be the storage account's access key (base64, as the Azure portal shows it)")
				}
			}
		case CredentialSAS:
			if in.Credential != "" || creating {
				q, err := url.ParseQuery(strings.TrimPrefix(in.Credential, "?"))
				if err != nil || q.Get("sig") == "" || q.Get("sv") == "" {
					v.Add("sas", "must be a shared access signature token (the query string with sv=…&sig=…)")
				}
			}
		default:
			v.Add("account_key", "give the storage account key or a SAS token")
		}
		in.Path = ""
	case TargetDirectory:
		in.Path = strings.TrimSpace(in.Path)
		switch {
		case strings.IndexFunc(in.Path, unicode.IsControl) >= 0:
			v.Add("path", "must not hold control characters (a NUL, a newline, a tab)")
		case !filepath.IsAbs(in.Path):
			v.Add("path", "must be an absolute directory path on the hosts, such as /srv/lifeboat/replicas")
		default:
			in.Path = filepath.Clean(in.Path)
			if sys := systemPath(in.Path); sys != "" {
				v.Add("path", "is %s, a system directory of the hosts; give a directory of its own for replicas, such as /srv/lifeboat/replicas", sys)
			}
		}
		in.AccountURL, in.Container, in.CredentialKind, in.Credential = "", "", "", ""
	default:
		v.Add("kind", "must be %q or %q", TargetAzureBlob, TargetDirectory)
	}
	return v.Err()
}

// systemDirs are the directories of a Linux host whose tree a replica
// target must not be in (or be): the root, the system's own, and the
// kernel's virtual filesystems.
var systemDirs = []string{"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
	"/run", "/sbin", "/sys", "/usr"}

// systemPath says which system directory path is or is under, or "".
func systemPath(path string) string {
	if path == "/" {
		return "the root directory"
	}
	for _, d := range systemDirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return d
		}
	}
	return ""
}

// validateAccountURL wants https; plain http only to a loopback address, which
// is how the Azurite emulator is reached in tests and labs.
func validateAccountURL(v *ValidationError, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		v.Add("account_url", "must be the blob endpoint URL, such as https://ACCOUNT.blob.core.windows.net")
		return
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			v.Add("account_url", "must use https (plain http is accepted only for a local emulator on loopback)")
		}
	}
	if u.RawQuery != "" {
		v.Add("account_url", "must not carry a query; put a SAS token in the sas field")
	}
}

// ListTargets lists targets by creation.
func (s *Store) ListTargets(ctx context.Context, p Page) ([]Target, string, error) {
	var out []Target
	next, err := paginate(s.db.WithContext(ctx).Model(&Target{}), p, false, &out)
	return out, next, err
}

// GetTarget returns one target or ErrNotFound.
func (s *Store) GetTarget(ctx context.Context, id string) (*Target, error) {
	var t Target
	if err := s.db.WithContext(ctx).First(&t, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &t, nil
}

// TargetCredential decrypts a target's stored credential; for the agents'
// SAS issuing only, never for display.
func (s *Store) TargetCredential(t *Target) (string, error) {
	if len(t.CredentialSealed) == 0 {
		return "", nil
	}
	b, err := s.sealer.Open(t.CredentialSealed)
	if err != nil {
		return "", fmt.Errorf("target %s: %w", t.Name, err)
	}
	return string(b), nil
}

func (s *Store) applyTarget(t *Target, in TargetInput) error {
	t.Name, t.Kind, t.AccountURL, t.Container, t.Path = in.Name, in.Kind, in.AccountURL, in.Container, in.Path
	t.CreatePath = in.Kind == TargetDirectory && in.CreatePath
	if in.Kind != TargetAzureBlob {
		t.CredentialKind, t.CredentialSealed = "", nil
		return nil
	}
	t.CredentialKind = in.CredentialKind
	if in.Credential != "" {
		sealed, err := s.sealer.Seal([]byte(in.Credential))
		if err != nil {
			return err
		}
		t.CredentialSealed = sealed
	}
	return nil
}

// CreateTarget validates and stores a target, sealing its credential.
func (s *Store) CreateTarget(ctx context.Context, a Actor, in TargetInput) (*Target, error) {
	if err := validateTarget(&in, true); err != nil {
		return nil, err
	}
	t := &Target{ID: NewID(prefixTarget)}
	if err := s.applyTarget(t, in); err != nil {
		return nil, err
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := uniqueName(tx, &Target{}, "", t.Name, "target"); err != nil {
			return err
		}
		if err := checkNesting(tx, t); err != nil {
			return err
		}
		if err := tx.Create(t).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "target.create", "target", t.ID, t.Name, targetAuditDetails(t))
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// UpdateTarget changes a target. Its kind cannot change while it is in use.
func (s *Store) UpdateTarget(ctx context.Context, a Actor, id string, in TargetInput) (*Target, error) {
	var t Target
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.First(&t, "id = ?", id).Error; err != nil {
			return err
		}
		// An empty credential keeps the stored one; switching between key and
		// SAS (or from a directory to Azure) needs a new value.
		creatingCredential := t.Kind != TargetAzureBlob || in.CredentialKind != t.CredentialKind
		if err := validateTarget(&in, creatingCredential); err != nil {
			return err
		}
		if err := uniqueName(tx, &Target{}, t.ID, in.Name, "target"); err != nil {
			return err
		}
		if in.Kind != t.Kind || in.Path != t.Path || in.AccountURL != t.AccountURL || in.Container != t.Container {
			// The VMs protected to it keep their replicas where they are: a
			// new location would show one place while they write another.
			names, err := protectedVMNames(tx, t.ID)
			if err != nil {
				return err
			}
			moving, err := movesTo(tx, t.ID)
			if err != nil {
				return err
			}
			for _, m := range moving {
				names = append(names, m+" (moving to it)")
			}
			if len(names) > 0 {
				what := "location"
				if in.Kind != t.Kind {
					what = "kind"
				}
				return &ConflictError{Code: "target_in_use", Message: fmt.Sprintf(
					"the %s of target %q cannot change while it holds the replicas of %s (they stay at %s); create a new target for the new location and protect the VMs to it, or disable their protection first",
					what, t.Name, strings.Join(names, ", "), t.Location())}
			}
		}
		if err := s.applyTarget(&t, in); err != nil {
			return err
		}
		if err := checkNesting(tx, &t); err != nil {
			return err
		}
		if err := tx.Save(&t).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "target.update", "target", t.ID, t.Name, targetAuditDetails(&t))
	})
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// DeleteTarget deletes a target no protection uses.
func (s *Store) DeleteTarget(ctx context.Context, a Actor, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var t Target
		if err := tx.First(&t, "id = ?", id).Error; err != nil {
			return err
		}
		n, err := countProtections(tx, "target_id", id)
		if err != nil {
			return err
		}
		if n > 0 {
			return &ConflictError{Code: "target_in_use", Message: fmt.Sprintf("target %q holds replicas of %d VM(s); disable their protection first", t.Name, n)}
		}
		moving, err := movesTo(tx, id)
		if err != nil {
			return err
		}
		if len(moving) > 0 {
			return &ConflictError{Code: "target_in_use", Message: fmt.Sprintf("target %q is being seeded by the move of %s; wait for the move to end, or cancel it", t.Name, strings.Join(moving, ", "))}
		}
		if err := tx.Delete(&t).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "target.delete", "target", t.ID, t.Name, nil)
	})
}

// checkNesting refuses a directory target inside another one's directory,
// or around it: a VM's replica directory under one could then be, or
// hold, the replicas of another target, and deleting one VM's replicas
// (a disable, a move's last step) would delete another's. Two targets of
// the same path are one place under two names; their replica locations
// are told apart as for one target (checkLocationFree).
func checkNesting(tx *gorm.DB, t *Target) error {
	if t.Kind != TargetDirectory {
		return nil
	}
	var others []Target
	if err := tx.Where("kind = ? AND id <> ?", TargetDirectory, t.ID).Find(&others).Error; err != nil {
		return err
	}
	inside := func(path, dir string) bool {
		return dir == "/" || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
	}
	for _, o := range others {
		switch {
		case inside(t.Path, o.Path):
			return Invalid("path", "is inside the directory of target %s (%s): give each target a directory of its own, not one within another", o.Name, o.Path)
		case inside(o.Path, t.Path):
			return Invalid("path", "holds the directory of target %s (%s): give each target a directory of its own, not one around another", o.Name, o.Path)
		}
	}
	return nil
}

// protectedVMNames names the VMs protected to a target, at most ten (and
// how many more).
func protectedVMNames(tx *gorm.DB, targetID string) ([]string, error) {
	var names []string
	if err := tx.Table("protections").Select("vms.name").Joins("JOIN vms ON vms.id = protections.vm_id").
		Where("protections.target_id = ?", targetID).Order("vms.name").Limit(11).Pluck("vms.name", &names).Error; err != nil {
		return nil, err
	}
	if len(names) > 10 {
		n, err := countProtections(tx, "target_id", targetID)
		if err != nil {
			return nil, err
		}
		names = append(names[:10], fmt.Sprintf("%d more", n-10))
	}
	return names, nil
}

// Location is where a target keeps replicas, for people: its directory,
// or its Azure containers (one per VM, PREFIX-VMID).
func (t Target) Location() string {
	if t.Kind == TargetAzureBlob {
		return t.AccountURL + "/" + t.Container + "-*"
	}
	return t.Path
}

func countProtections(tx *gorm.DB, column, id string) (int64, error) {
	var n int64
	err := tx.Model(&Protection{}).Where(column+" = ?", id).Count(&n).Error
	return n, err
}

// targetAuditDetails describes a target for the audit log, without its secret.
func targetAuditDetails(t *Target) map[string]string {
	return map[string]string{"kind": t.Kind, "account_url": t.AccountURL, "container": t.Container, "credential_kind": t.CredentialKind, "path": t.Path,
		"create_path": fmt.Sprint(t.CreatePath)}
}

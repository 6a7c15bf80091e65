package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// commandError is an error of a vault subcommand with its stable code
// (docs/errors.md, "Command line").
type commandError struct {
	code, message string
}

func (e *commandError) Error() string { return fmt.Sprintf("%s (%s)", e.message, e.code) }

// rebuildCommand answers `lifeboat-vault rebuild --from-target dir:PATH`,
// with the new vault's --data-dir and --db: after the vault's database was
// lost without a backup, it recreates the VMs' protections and recovery
// points from what the replica storage holds (models/rebuild.go). It reads
// the storage where it runs (the directory must be mounted here) and never
// writes to it: it may be the only copy left.
func rebuildCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from-target", "", "the replica storage to rebuild from: dir:/path/of/the/target (mounted on this machine), or azure:https://ACCOUNT.blob.core.windows.net/PREFIX (the target's container prefix)")
	keyFile := fs.String("account-key-file", "", "azure: a file holding the storage account's access key")
	name := fs.String("target-name", "", "the rebuilt target's name (default: the name the replicas record, else the directory's name or the prefix)")
	vaultArgs, rest := splitVaultFlags(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if *from == "" {
		return errors.New("rebuild needs --from-target dir:/path or azure:https://ACCOUNT.blob.core.windows.net/PREFIX: the replica storage to rebuild the vault from")
	}
	cfg, err := parseConfig(vaultArgs, getenv, stderr)
	if err != nil {
		return err
	}
	// The storage first: a wrong path must not leave a new vault behind.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	target, replicas, err := readRebuildSource(ctx, *from, *keyFile, log)
	if err != nil {
		return err
	}
	if *name != "" {
		target.Name = *name
	}
	store, err := openRebuildVault(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	report, err := store.Rebuild(ctx, models.RebuildInput{Target: target, Replicas: replicas})
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		return &commandError{conflict.Code, conflict.Message}
	}
	if err != nil {
		return err
	}
	printRebuildReport(stdout, report)
	return nil
}

// readRebuildSource reads the storage --from-target names, and returns
// the target to make with what it holds.
func readRebuildSource(ctx context.Context, from, keyFile string, log *slog.Logger) (models.TargetInput, []models.RebuildReplica, error) {
	kind, where, _ := strings.Cut(from, ":")
	switch {
	case kind == "dir" && where != "":
		root, err := filepath.Abs(where)
		if err != nil {
			return models.TargetInput{}, nil, err
		}
		replicas, err := readDirectoryTarget(root, log)
		return models.TargetInput{Name: recordedTargetName(replicas, filepath.Base(root)), Kind: models.TargetDirectory, Path: root}, replicas, err
	case kind == "azure" && where != "":
		src, err := parseAzureSource(where)
		if err != nil {
			return models.TargetInput{}, nil, &commandError{agentproto.CodeRebuildNotATarget, "--from-target: " + err.Error()}
		}
		if keyFile == "" {
			return models.TargetInput{}, nil, errors.New("rebuild from Azure needs --account-key-file FILE: the storage account's access key (the vault seals it, as a target's)")
		}
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return models.TargetInput{}, nil, fmt.Errorf("--account-key-file: %w", err)
		}
		src.Key = strings.TrimSpace(string(key))
		replicas, err := readAzureTarget(ctx, src, log)
		return models.TargetInput{Name: recordedTargetName(replicas, src.Prefix), Kind: models.TargetAzureBlob, AccountURL: src.AccountURL,
			Container: src.Prefix, CredentialKind: models.CredentialAccountKey, Credential: src.Key}, replicas, err
	}
	return models.TargetInput{}, nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf(
		"--from-target %q: give dir:/path of a directory target, or azure:https://ACCOUNT.blob.core.windows.net/PREFIX of an Azure Blob target", from)}
}

// openRebuildVault opens the new vault's database, making its data
// directory, key and CA as a first start would: the rebuilt vault is a new
// vault, which hosts register with again.
func openRebuildVault(ctx context.Context, cfg *config) (*models.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	key, err := pki.LoadOrCreateKey(filepath.Join(cfg.DataDir, "vault.key"))
	if err != nil {
		return nil, err
	}
	sealer, err := models.NewSealer(key)
	if err != nil {
		return nil, err
	}
	store, err := models.Open(ctx, models.Options{DSN: cfg.DB, Sealer: sealer})
	if err != nil {
		return nil, fmt.Errorf("setting --db (LIFEBOAT_DB): %w", err)
	}
	if _, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "tls")); err != nil {
		store.Close()
		return nil, err
	}
	return store, nil
}

// readDirectoryTarget reads every VM's replicas under root: their
// descriptor, disks and recovery point manifests, through dirtarget's
// readers (which change nothing).
func readDirectoryTarget(root string, log *slog.Logger) ([]models.RebuildReplica, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("--from-target %s: %v; mount the target's share on this machine, or correct the path", root, errors.Unwrap(err))}
	}
	if !fi.IsDir() {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("--from-target %s is not a directory", root)}
	}
	if !dirtarget.Mounted(root) {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf(
			"%s holds no %s: it is not a Lifeboat directory target, or the share is not mounted here", root, dirtarget.MarkerName)}
	}
	keys, err := dirtarget.List(root)
	if err != nil {
		return nil, &commandError{agentproto.CodeRebuildNotATarget, fmt.Sprintf("read %s: %v", root, err)}
	}
	var out []models.RebuildReplica
	manifests := 0
	for _, key := range keys {
		r, err := readDirectoryReplica(root, key, log)
		if err != nil {
			// One damaged VM must not cost the others their rebuild: it
			// is named in the report, and nothing of it is made.
			log.Warn("a VM's replicas cannot be read; it is not rebuilt", "replica", key, "error", err)
			r = models.RebuildReplica{Key: key, Unreadable: err.Error()}
		}
		manifests += len(r.Points)
		out = append(out, r)
	}
	if manifests == 0 {
		return nil, &commandError{agentproto.CodeRebuildNoManifests, fmt.Sprintf(
			"%s is a Lifeboat target, but holds no recovery point manifest (%d VM replica director(ies), none with a point): there is nothing to rebuild from", root, len(keys))}
	}
	return out, nil
}

func readDirectoryReplica(root, key string, log *slog.Logger) (models.RebuildReplica, error) {
	r, err := dirtarget.OpenExistingWith(root, key, dirtarget.Options{Logger: log})
	if err != nil {
		return models.RebuildReplica{}, err
	}
	defer r.Close()
	return readStore(key, r, log)
}

// storeReader is what a rebuild reads of one VM's replicas, in a
// directory or a container.
type storeReader interface {
	Points() ([]replica.Point, error)
	Disks() ([]string, error)
	StoredDiskSize(diskID string) (int64, error)
	Descriptor() ([]byte, error)
}

// readStore reads one VM's replicas: the point manifests, the disks and
// the descriptor.
func readStore(key string, r storeReader, log *slog.Logger) (models.RebuildReplica, error) {
	out := models.RebuildReplica{Key: key, Disks: map[string]int64{}}
	points, err := r.Points() // a directory's damaged manifest is skipped, and logged
	if err != nil {
		return out, err
	}
	for _, p := range points {
		out.Points = append(out.Points, models.RebuildPoint{ID: p.ID, Time: p.Time, ReadStartedAt: p.ReadStartedAt,
			Consistency: p.Consistency, Capture: p.Capture, Disks: p.Disks})
	}
	disks, err := r.Disks()
	if err != nil {
		return out, err
	}
	for _, id := range disks {
		size, err := r.StoredDiskSize(id)
		if err != nil {
			log.Warn("a disk replica's metadata cannot be read; its size is taken from the points", "replica", key, "disk", id, "error", err)
			continue
		}
		out.Disks[id] = size
	}
	raw, err := r.Descriptor()
	if err != nil {
		return out, err
	}
	if raw != nil {
		var d agentproto.ReplicaDescriptor
		if err := json.Unmarshal(raw, &d); err != nil || d.Format < 1 {
			// Damaged: what it said is not trusted, but the points are.
			log.Warn("the VM descriptor is damaged; the VM is rebuilt from its manifests alone", "replica", key, "error", err)
		} else {
			out.Descriptor = &d
		}
	}
	return out, nil
}

// recordedTargetName is the target name most replicas record, else def.
func recordedTargetName(replicas []models.RebuildReplica, def string) string {
	count := map[string]int{}
	best := ""
	for _, r := range replicas {
		if r.Descriptor != nil && r.Descriptor.TargetName != "" {
			n := r.Descriptor.TargetName
			count[n]++
			if best == "" || count[n] > count[best] || (count[n] == count[best] && n < best) {
				best = n
			}
		}
	}
	if best == "" {
		return def
	}
	return best
}

func printRebuildReport(w io.Writer, r *models.RebuildReport) {
	fmt.Fprintf(w, "Rebuilt %d VM(s) from target %s (%s):\n", len(r.VMs), r.Target.Name, r.Target.Location())
	hosts := map[string]bool{}
	for _, vm := range r.VMs {
		fmt.Fprintf(w, "  %s (%s): %d recovery point(s), host %s, policy %s\n", vm.Name, vm.ID, vm.Points, vm.HostName, vm.PolicyName)
		for _, u := range vm.Unknown {
			fmt.Fprintf(w, "    not known from the replicas: %s\n", u)
		}
		if vm.HostName != models.UndescribedHostName {
			hosts[vm.HostName] = true
		}
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "  not rebuilt: %s\n", s)
	}
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "Their replication is paused until their host is back. Next:")
	fmt.Fprintln(w, "  1. start the vault with this --data-dir (it is a new vault: a new key and CA);")
	fmt.Fprintf(w, "  2. register each host (%s) again: a registration key for its site, and lifeboat-agent register with a new --state-dir, under the same host name;\n", strings.Join(names, ", "))
	fmt.Fprintln(w, "  3. each VM its host reports is matched by its id on the host, and replication resumes into the existing replicas.")
	fmt.Fprintln(w, "The recovery points can be failed over as soon as a recovery host is registered.")
}

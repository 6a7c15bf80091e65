package models

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Rebuilding the vault from replica storage (lifeboat-vault rebuild),
// after its database is lost with no backup. Replica storage describes
// itself: each VM's recovery point manifests, and the descriptor the agent
// keeps beside them (descriptor.go). A rebuild recreates from them the
// target, the policies, the sites, the VMs with their disks, their
// protections and their recovery points (times and consistency exactly as
// the manifests say: a recovery point is a promise). Their hosts are known
// only by name until they register again (Host.RebuiltAt); then each
// reported VM whose host name and id on the host match a rebuilt VM takes
// its place (adoptRebuiltVMs), and replication resumes into the existing
// replicas. The caller reads the storage; this file never touches it.

// RebuildActor is who a rebuild acts as: the audit log, and who paused the
// rebuilt protections until their host is back.
var RebuildActor = Actor{Username: "rebuild"}

// UndescribedHostName is the host of rebuilt VMs whose replicas do not say
// which VM they are (written before the descriptor existed).
const UndescribedHostName = "unknown host (rebuilt)"

// RebuildInput is what a target holds, as read by the caller.
type RebuildInput struct {
	Target   TargetInput
	Replicas []RebuildReplica
}

// RebuildReplica is one VM's replicas on the target.
type RebuildReplica struct {
	Key        string                        // their name there: the directory, or the container's VM part
	Descriptor *agentproto.ReplicaDescriptor // nil: none (an older agent wrote them)
	Disks      map[string]int64              // replica id → source size of the newest replica
	Points     []RebuildPoint                // oldest first
	// Unreadable says why the replicas could not be read (nothing of
	// them is rebuilt); "" when they were.
	Unreadable string
}

// RebuildPoint is one recovery point manifest.
type RebuildPoint struct {
	ID            string
	Time          time.Time
	ReadStartedAt *time.Time
	Consistency   string
	Capture       string
	Disks         map[string]int64 // replica id → size at the point
}

// RebuildReport says what a rebuild made, and what it could not know.
type RebuildReport struct {
	Target  Target
	VMs     []RebuiltVM
	Skipped []string // replicas not rebuilt, and why
}

// RebuiltVM is one VM a rebuild made.
type RebuiltVM struct {
	ID, Name, HostName, PolicyName string
	Points                         int
	Unknown                        []string // what its replicas did not say
}

// Rebuild recreates the vault's protections from what a target holds. It
// refuses a vault that has hosts or protections of its own (a rebuild
// goes into a new vault, before its hosts register, once per target).
func (s *Store) Rebuild(ctx context.Context, in RebuildInput) (*RebuildReport, error) {
	if err := validateTarget(&in.Target, true); err != nil {
		return nil, err
	}
	target := Target{ID: NewID(prefixTarget)}
	if err := s.applyTarget(&target, in.Target); err != nil {
		return nil, err
	}
	now := s.Now()
	report := &RebuildReport{Target: target}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := checkRebuildable(tx, target); err != nil {
			return err
		}
		if err := uniqueName(tx, &Target{}, "", target.Name, "target"); err != nil {
			return err
		}
		if err := tx.Create(&target).Error; err != nil {
			return err
		}
		b := &rebuilder{s: s, tx: tx, now: now, target: target, sites: map[string]string{}, hosts: map[string]string{}, policies: map[string]Policy{}}
		for _, r := range in.Replicas {
			vm, skipped, err := b.replica(r)
			if err != nil {
				return fmt.Errorf("rebuild the VM of replicas %s: %w", r.Key, err)
			}
			if skipped != "" {
				report.Skipped = append(report.Skipped, skipped)
				continue
			}
			report.VMs = append(report.VMs, *vm)
		}
		if len(report.VMs) == 0 {
			return &ConflictError{Code: agentproto.CodeRebuildNoManifests, Message: fmt.Sprintf(
				"%s holds no VM with a recovery point to rebuild from (%s); check that it is the target the VMs were protected to",
				target.Location(), strings.Join(append([]string{fmt.Sprintf("%d VM replica(s) read", len(in.Replicas))}, report.Skipped...), "; "))}
		}
		names := make([]string, 0, len(report.VMs))
		for _, vm := range report.VMs {
			names = append(names, vm.Name)
		}
		return s.audit(tx, RebuildActor, "vault.rebuild", "target", target.ID, target.Name, map[string]any{
			"location": target.Location(), "vms": names, "skipped": report.Skipped})
	})
	if err != nil {
		return nil, err
	}
	report.Target = target
	return report, nil
}

// checkRebuildable refuses a vault with registered hosts (their VMs would
// clash with the rebuilt ones) or that has this target already.
func checkRebuildable(tx *gorm.DB, target Target) error {
	var hosts int64
	if err := tx.Model(&Host{}).Where("rebuilt_at IS NULL").Count(&hosts).Error; err != nil {
		return err
	}
	if hosts > 0 {
		return &ConflictError{Code: agentproto.CodeRebuildVaultInUse, Message: fmt.Sprintf(
			"this vault has %d registered host(s): rebuild into a new vault (a new data directory and database), before registering the hosts", hosts)}
	}
	var targets []Target
	if err := tx.Find(&targets).Error; err != nil {
		return err
	}
	for _, t := range targets {
		if t.Kind == target.Kind && replicaLocation(t, "") == replicaLocation(target, "") {
			return &ConflictError{Code: agentproto.CodeRebuildVaultInUse, Message: fmt.Sprintf(
				"this vault has target %s at %s already: it was rebuilt from it, or made there", t.Name, t.Location())}
		}
	}
	return nil
}

// awaitingHostReason is the health reason of a rebuilt VM whose host has
// not registered with this vault yet.
func awaitingHostReason(hostName string) string {
	if hostName == UndescribedHostName || hostName == "" {
		return fmt.Sprintf("rebuilt from replica storage whose replicas do not say which VM they are: its recovery points can be failed over, but no host's VM is matched to it (%s)",
			agentproto.CodeReplicaUndescribed)
	}
	return fmt.Sprintf("rebuilt from replica storage: it awaits its host %s, which must register with this vault again (a new registration key for its site); its VM is then matched by its id on the host and replication resumes into the existing replicas. Its recovery points can be failed over meanwhile (%s)",
		hostName, agentproto.CodeAwaitingHost)
}

package models

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"gorm.io/gorm"
)

// RegistrationKeyLifetime is the reference validity of a registration key.
const RegistrationKeyLifetime = 5 * 24 * time.Hour

// RegistrationError says why a registration key was refused.
type RegistrationError struct {
	Reason string // "unknown", "expired", "used"
	Detail string
}

func (e *RegistrationError) Error() string { return e.Detail }

// CreateRegistrationKey makes a one-time key for one agent to join site; the
// secret is returned once and only its hash is kept.
//
// lifetime is how long the key is valid, at most RegistrationKeyLifetime;
// 0 is that.
func (s *Store) CreateRegistrationKey(ctx context.Context, a Actor, siteID string, lifetime time.Duration) (*RegistrationKey, string, error) {
	if lifetime == 0 {
		lifetime = RegistrationKeyLifetime
	}
	if lifetime < time.Hour || lifetime > RegistrationKeyLifetime {
		return nil, "", &ValidationError{Fields: []FieldError{{Field: "expires_in_hours", Reason: fmt.Sprintf(
			"must be from 1 to %d hours", int(RegistrationKeyLifetime/time.Hour))}}}
	}
	secret, hash := newSecret("lbr_")
	k := &RegistrationKey{ID: NewID(prefixRegistrationKey), SiteID: siteID, SecretHash: hash,
		ExpiresAt: s.Now().Add(lifetime), CreatedBy: a.Username}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var site Site
		if err := tx.First(&site, "id = ?", siteID).Error; err != nil {
			return err
		}
		if err := tx.Create(k).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "registration_key.create", "site", site.ID, site.Name, map[string]any{"key_id": k.ID, "expires_at": k.ExpiresAt})
	})
	if err != nil {
		return nil, "", err
	}
	return k, secret, nil
}

// HostCertificate is what the CA issued to a host.
type HostCertificate struct {
	Serial, Fingerprint string
	NotAfter            time.Time
}

// Registration is a host asking to join with a registration key secret.
type Registration struct {
	Secret          string
	Name            string
	AgentVersion    string
	ProtocolVersion int
	Driver          string
}

// RegisterHost admits a host with a registration key: the key must exist,
// be unexpired and unused. sign issues the host's certificate for the new
// host id; all of it commits together or not at all, so a key is never used
// up by a registration that failed.
func (s *Store) RegisterHost(ctx context.Context, r Registration, sign func(hostID string) (*HostCertificate, error)) (*Host, error) {
	v := &ValidationError{}
	r.Name = strings.TrimSpace(r.Name)
	validateName(v, "name", r.Name)
	if err := v.Err(); err != nil {
		return nil, err
	}
	now := s.Now()
	var host Host
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var k RegistrationKey
		if err := tx.First(&k, "secret_hash = ?", HashSecret(r.Secret)).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return &RegistrationError{Reason: "unknown", Detail: "the registration key is not one this vault issued (or its site was deleted); download a new key from the site's page"}
			}
			return err
		}
		if k.UsedAt != nil {
			return &RegistrationError{Reason: "used", Detail: fmt.Sprintf("the registration key was already used at %s by host %s; each key registers one host — download a new key from the site's page", k.UsedAt.UTC().Format(time.RFC3339), k.UsedByHostID)}
		}
		if !k.ExpiresAt.After(now) {
			return &RegistrationError{Reason: "expired", Detail: fmt.Sprintf("the registration key expired at %s (keys are valid for 5 days); download a new key from the site's page", k.ExpiresAt.UTC().Format(time.RFC3339))}
		}
		host = Host{ID: NewID(prefixHost), SiteID: k.SiteID, Name: r.Name, State: HostConnected, AgentVersion: r.AgentVersion,
			ProtocolVersion: r.ProtocolVersion, Driver: r.Driver, LastHeartbeat: &now}
		cert, err := sign(host.ID)
		if err != nil {
			return err
		}
		host.CertSerial, host.CertFingerprint, host.CertNotAfter = cert.Serial, cert.Fingerprint, &cert.NotAfter
		if err := tx.Create(&host).Error; err != nil {
			return err
		}
		// Mark the key used only if nobody else did in the meantime.
		res := tx.Model(&RegistrationKey{}).Where("id = ? AND used_at IS NULL", k.ID).Updates(map[string]any{"used_at": now, "used_by_host_id": host.ID})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return &RegistrationError{Reason: "used", Detail: "the registration key was used by another host at the same moment; download a new key"}
		}
		return s.audit(tx, Actor{Username: "agent:" + host.Name}, "host.register", "host", host.ID, host.Name,
			map[string]any{"site_id": host.SiteID, "agent_version": r.AgentVersion, "key_id": k.ID})
	})
	if err != nil {
		return nil, err
	}
	return &host, nil
}

// HostByCertificate finds the host a client certificate was issued to. A
// revoked host, or a certificate replaced by a renewal, is not found.
func (s *Store) HostByCertificate(ctx context.Context, serial string) (*Host, error) {
	var h Host
	err := s.db.WithContext(ctx).First(&h, "cert_serial = ? AND revoked_at IS NULL", serial).Error
	if err != nil {
		return nil, translateError(err)
	}
	return &h, nil
}

// RenewHostCertificate records a host's new certificate; the old one stops
// being accepted at once.
func (s *Store) RenewHostCertificate(ctx context.Context, hostID string, cert *HostCertificate) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var h Host
		if err := tx.First(&h, "id = ? AND revoked_at IS NULL", hostID).Error; err != nil {
			return err
		}
		if err := tx.Model(&h).Updates(map[string]any{"cert_serial": cert.Serial, "cert_fingerprint": cert.Fingerprint, "cert_not_after": cert.NotAfter}).Error; err != nil {
			return err
		}
		return s.audit(tx, Actor{Username: "agent:" + h.Name}, "host.renew_certificate", "host", h.ID, h.Name, map[string]any{"not_after": cert.NotAfter})
	})
}

// RevokeHost removes a host: its certificate is refused from now on, its
// unfinished tasks are cancelled, and its VMs stay (marked missing) so that
// protection history is never silently lost.
func (s *Store) RevokeHost(ctx context.Context, a Actor, hostID string) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		var h Host
		if err := tx.First(&h, "id = ? AND revoked_at IS NULL", hostID).Error; err != nil {
			return err
		}
		// Its VMs' cycles could never run again, and their protection could
		// not end: refuse, naming them.
		var protected []string
		if err := tx.Table("protections").Joins("JOIN vms ON vms.id = protections.vm_id").Where("vms.host_id = ?", h.ID).
			Order("vms.name").Pluck("vms.name", &protected).Error; err != nil {
			return err
		}
		if len(protected) > 0 {
			return &ConflictError{Code: "host_has_protected_vms", Message: fmt.Sprintf(
				"host %s runs the replication of %s; disable their protection first (keeping or deleting the replica data), then remove the host",
				h.Name, strings.Join(protected, ", "))}
		}
		if err := tx.Model(&h).Updates(map[string]any{"revoked_at": now, "state": HostDisconnected}).Error; err != nil {
			return err
		}
		if err := tx.Model(&VM{}).Where("host_id = ? AND missing_since IS NULL", h.ID).Update("missing_since", now).Error; err != nil {
			return err
		}
		var tasks []Task
		if err := tx.Where("host_id = ? AND state IN ?", h.ID, []string{TaskWaiting, TaskQueued, TaskLeased}).Find(&tasks).Error; err != nil {
			return err
		}
		for i := range tasks {
			if err := s.endTask(tx, now, &tasks[i], TaskCancelled, TaskOutcome{ErrorCode: agentproto.CodeHostRevoked, Message: "the host was removed from the vault before the task finished"}); err != nil {
				return err
			}
		}
		return s.audit(tx, a, "host.revoke", "host", h.ID, h.Name, nil)
	})
}

// Heartbeat records that a host's agent is alive, with what it runs and
// what it can do (its features: the vault sends it no task it lacks).
func (s *Store) Heartbeat(ctx context.Context, hostID, agentVersion string, protocolVersion int, driver string, features []string) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		var h Host
		if err := tx.First(&h, "id = ?", hostID).Error; err != nil {
			return err
		}
		wasDisconnected := h.State != HostConnected
		if err := tx.Model(&Host{}).Where("id = ?", h.ID).Updates(map[string]any{"last_heartbeat": now, "state": HostConnected,
			"agent_version": agentVersion, "protocol_version": protocolVersion, "driver": driver, "features": featureList(features)}).Error; err != nil {
			return err
		}
		if wasDisconnected {
			// The host is back: its disconnection alert is resolved.
			return resolveAlerts(tx, now, h.ID, AlertHostDisconnected)
		}
		return nil
	})
}

// featureList is an agent's features as a host row keeps them.
func featureList(features []string) string { return truncate(strings.Join(features, " "), 2000) }

// AlertHostDisconnected is the alert kind raised when heartbeats stop.
const AlertHostDisconnected = "HostDisconnected"

// MarkSilentHostsDisconnected turns hosts whose last heartbeat is older than
// silence into Disconnected, each with an alert; it returns them.
func (s *Store) MarkSilentHostsDisconnected(ctx context.Context, silence time.Duration) ([]Host, error) {
	if err := s.flushHeartbeats(ctx); err != nil {
		return nil, err
	}
	// Another vault's notes may be written up to a flush interval late.
	silence += heartbeatFlushEvery
	now := s.Now()
	var hosts []Host
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Where("state = ? AND revoked_at IS NULL AND (last_heartbeat IS NULL OR last_heartbeat < ?)", HostConnected, now.Add(-silence)).Find(&hosts).Error; err != nil {
			return err
		}
		for _, h := range hosts {
			if err := tx.Model(&Host{}).Where("id = ?", h.ID).Update("state", HostDisconnected).Error; err != nil {
				return err
			}
			if err := raiseAlert(tx, AlertHostDisconnected, HealthWarning, "host", h.ID,
				fmt.Sprintf("host %s has sent no heartbeat since %s; check that its agent runs and can reach the vault", h.Name, formatTimePtr(h.LastHeartbeat))); err != nil {
				return err
			}
		}
		return s.failRecoveryTasks(tx, now)
	})
	return hosts, err
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return "its registration"
	}
	return t.UTC().Format(time.RFC3339)
}

package models

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"
)

func validateSite(st *Site) error {
	v := &ValidationError{}
	st.Name = strings.TrimSpace(st.Name)
	validateName(v, "name", st.Name)
	if utf8.RuneCountInString(st.Description) > 500 {
		v.Add("description", "must be at most 500 characters")
	}
	return v.Err()
}

// ListSites lists sites by creation.
func (s *Store) ListSites(ctx context.Context, p Page) ([]Site, string, error) {
	var out []Site
	next, err := paginate(s.db.WithContext(ctx).Model(&Site{}), p, false, &out)
	return out, next, err
}

// GetSite returns one site or ErrNotFound.
func (s *Store) GetSite(ctx context.Context, id string) (*Site, error) {
	var st Site
	if err := s.db.WithContext(ctx).First(&st, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &st, nil
}

// CreateSite validates and stores a site.
func (s *Store) CreateSite(ctx context.Context, a Actor, st *Site) error {
	if err := validateSite(st); err != nil {
		return err
	}
	st.ID = NewID(prefixSite)
	return s.tx(ctx, func(tx *gorm.DB) error {
		if err := uniqueName(tx, &Site{}, "", st.Name, "site"); err != nil {
			return err
		}
		if err := tx.Create(st).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "site.create", "site", st.ID, st.Name, st)
	})
}

// UpdateSite renames or redescribes a site.
func (s *Store) UpdateSite(ctx context.Context, a Actor, st *Site) error {
	if err := validateSite(st); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *gorm.DB) error {
		var old Site
		if err := tx.First(&old, "id = ?", st.ID).Error; err != nil {
			return err
		}
		if err := uniqueName(tx, &Site{}, st.ID, st.Name, "site"); err != nil {
			return err
		}
		st.CreatedAt = old.CreatedAt
		if err := tx.Save(st).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "site.update", "site", st.ID, st.Name, st)
	})
}

// DeleteSite deletes a site that has no hosts.
func (s *Store) DeleteSite(ctx context.Context, a Actor, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var st Site
		if err := tx.First(&st, "id = ?", id).Error; err != nil {
			return err
		}
		var hosts int64
		if err := tx.Model(&Host{}).Where("site_id = ?", id).Count(&hosts).Error; err != nil {
			return err
		}
		if hosts > 0 {
			return &ConflictError{Code: "site_has_hosts", Message: fmt.Sprintf("site %q still has %d host(s); delete them first", st.Name, hosts)}
		}
		if err := tx.Where("site_id = ?", id).Delete(&RegistrationKey{}).Error; err != nil {
			return err
		}
		if err := tx.Delete(&st).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "site.delete", "site", st.ID, st.Name, nil)
	})
}

// HostCounts is how many hosts of a site are in each state.
type HostCounts struct {
	Connected, Disconnected int64
}

// SiteHostCounts counts the (unrevoked) hosts of every site by state.
func (s *Store) SiteHostCounts(ctx context.Context) (map[string]HostCounts, error) {
	var rows []struct {
		SiteID string
		State  string
		N      int64
	}
	err := s.db.WithContext(ctx).Model(&Host{}).Select("site_id, state, COUNT(*) AS n").
		Where("revoked_at IS NULL").Group("site_id, state").Scan(&rows).Error
	if err != nil {
		return nil, translateError(err)
	}
	out := map[string]HostCounts{}
	for _, r := range rows {
		c := out[r.SiteID]
		if r.State == HostConnected {
			c.Connected += r.N
		} else {
			c.Disconnected += r.N
		}
		out[r.SiteID] = c
	}
	return out, nil
}

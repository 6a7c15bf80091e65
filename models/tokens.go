package models

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Lifetimes of credentials.
const (
	SessionLifetime    = 12 * time.Hour
	LoginTokenLifetime = 24 * time.Hour
	MaxTokenLifetime   = 365 * 24 * time.Hour
)

// ErrUnauthenticated is returned for a missing, unknown or expired session or
// token.
var ErrUnauthenticated = errors.New("not authenticated")

// newSecret returns a random secret with a readable prefix, and its SHA-256.
// Secrets are 160 random bits, so a fast hash is enough to store them safely.
func newSecret(prefix string) (secret, hash string) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system's random source failing is not recoverable
	}
	secret = prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return secret, HashSecret(secret)
}

// HashSecret is how sessions, tokens and registration secrets are stored.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// CreateSession logs a user in to the portal and returns the cookie value.
func (s *Store) CreateSession(ctx context.Context, a Actor, u *User) (string, error) {
	secret, hash := newSecret("lbs_")
	sess := Session{ID: NewID(prefixSession), UserID: u.ID, TokenHash: hash, ExpiresAt: s.Now().Add(SessionLifetime)}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(&sess).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "session.login", "user", u.ID, u.Username, nil)
	})
	return secret, err
}

// UserForSession returns the user of a live session.
func (s *Store) UserForSession(ctx context.Context, secret string) (*User, error) {
	var sess Session
	err := s.db.WithContext(ctx).First(&sess, "token_hash = ?", HashSecret(secret)).Error
	if err != nil || !sess.ExpiresAt.After(s.Now()) {
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, translateError(err)
		}
		return nil, ErrUnauthenticated
	}
	return s.GetUser(ctx, sess.UserID)
}

// DeleteSession logs out.
func (s *Store) DeleteSession(ctx context.Context, a Actor, secret string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		res := tx.Where("token_hash = ?", HashSecret(secret)).Delete(&Session{})
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error
		}
		return s.audit(tx, a, "session.logout", "user", a.UserID, a.Username, nil)
	})
}

// CreateToken makes an API token for u and returns it with its secret, which
// is shown once and never stored.
func (s *Store) CreateToken(ctx context.Context, a Actor, u *User, name string, lifetime time.Duration) (*APIToken, string, error) {
	v := &ValidationError{}
	name = strings.TrimSpace(name)
	validateName(v, "name", name)
	if lifetime <= 0 || lifetime > MaxTokenLifetime {
		v.Add("expires_in_days", "must be between 1 and 365 days")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	secret, hash := newSecret("lbt_")
	t := &APIToken{ID: NewID(prefixToken), UserID: u.ID, Name: name, TokenHash: hash, ExpiresAt: s.Now().Add(lifetime)}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(t).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "token.create", "token", t.ID, t.Name, map[string]string{"user": u.Username})
	})
	if err != nil {
		return nil, "", err
	}
	return t, secret, nil
}

// UserForToken returns the user of a live API token and notes its use.
func (s *Store) UserForToken(ctx context.Context, secret string) (*User, *APIToken, error) {
	var t APIToken
	err := s.db.WithContext(ctx).First(&t, "token_hash = ?", HashSecret(secret)).Error
	if err != nil || !t.ExpiresAt.After(s.Now()) {
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, nil, translateError(err)
		}
		return nil, nil, ErrUnauthenticated
	}
	now := s.Now()
	// Record the last use at most once a minute, to keep reads cheap.
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) > time.Minute {
		s.db.WithContext(ctx).Model(&APIToken{}).Where("id = ?", t.ID).Update("last_used_at", now)
	}
	u, err := s.GetUser(ctx, t.UserID)
	if err != nil {
		return nil, nil, err
	}
	return u, &t, nil
}

// ListTokens lists a user's tokens (never their secrets).
func (s *Store) ListTokens(ctx context.Context, userID string, p Page) ([]APIToken, string, error) {
	var out []APIToken
	next, err := paginate(s.db.WithContext(ctx).Model(&APIToken{}).Where("user_id = ?", userID), p, false, &out)
	return out, next, err
}

// DeleteToken revokes one of a user's tokens.
func (s *Store) DeleteToken(ctx context.Context, a Actor, userID, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var t APIToken
		if err := tx.First(&t, "id = ? AND user_id = ?", id, userID).Error; err != nil {
			return err
		}
		if err := tx.Delete(&t).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "token.delete", "token", t.ID, t.Name, nil)
	})
}

// PurgeExpired deletes expired sessions and tokens.
func (s *Store) PurgeExpired(ctx context.Context) error {
	now := s.Now()
	return s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Where("expires_at < ?", now).Delete(&Session{}).Error; err != nil {
			return err
		}
		return tx.Where("expires_at < ?", now).Delete(&APIToken{}).Error
	})
}

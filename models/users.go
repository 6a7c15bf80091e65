package models

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// Roles lists the roles from least to most privileged.
var Roles = []string{RoleReader, RoleOperator, RoleContributor, RoleOwner}

// RoleRank orders roles: a higher rank may do everything a lower one may.
// Operator sits above Reader (it adds failover and failback), Contributor
// above Operator (everything but users and vault settings), Owner on top.
func RoleRank(role string) int {
	for i, r := range Roles {
		if r == role {
			return i + 1
		}
	}
	return 0
}

// MinPasswordLength and MaxPasswordBytes bound passwords; bcrypt reads at most
// 72 bytes, so longer passwords would silently lose their tail.
const (
	MinPasswordLength = 12
	MaxPasswordBytes  = 72
)

var usernamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// UserInput is what creating or updating a user takes. An empty Password on
// update keeps the old one.
type UserInput struct {
	Username string
	Password string
	Role     string
}

func validateUser(in *UserInput, creating bool) error {
	v := &ValidationError{}
	in.Username = strings.TrimSpace(in.Username)
	if !usernamePattern.MatchString(in.Username) {
		v.Add("username", "must be 1–64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if creating || in.Password != "" {
		validatePassword(v, "password", in.Password)
	}
	if RoleRank(in.Role) == 0 {
		v.Add("role", "must be one of %s", strings.Join(Roles, ", "))
	}
	return v.Err()
}

func validatePassword(v *ValidationError, field, pw string) {
	switch {
	case len([]rune(pw)) < MinPasswordLength:
		v.Add(field, "must be at least %d characters", MinPasswordLength)
	case len(pw) > MaxPasswordBytes:
		v.Add(field, "must be at most %d bytes", MaxPasswordBytes)
	}
}

// ListUsers lists users by creation.
func (s *Store) ListUsers(ctx context.Context, p Page) ([]User, string, error) {
	var out []User
	next, err := paginate(s.db.WithContext(ctx).Model(&User{}), p, false, &out)
	return out, next, err
}

// GetUser returns one user or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id string) (*User, error) {
	var u User
	if err := s.db.WithContext(ctx).First(&u, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &u, nil
}

// CountUsers counts users; the vault creates the first Owner when it is 0.
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.WithContext(ctx).Model(&User{}).Count(&n).Error
	return n, translateError(err)
}

// CreateUser validates and stores a user with a bcrypt hash of the password.
func (s *Store) CreateUser(ctx context.Context, a Actor, in UserInput) (*User, error) {
	if err := validateUser(&in, true); err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(in.Password), s.bcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	u := &User{ID: NewID(prefixUser), Username: in.Username, PasswordHash: string(hash), Role: in.Role}
	err = s.tx(ctx, func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&User{}).Where("username = ?", u.Username).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return Invalid("username", "user %q already exists", u.Username)
		}
		if err := tx.Create(u).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "user.create", "user", u.ID, u.Username, map[string]string{"role": u.Role})
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// UpdateUser changes a user's role and, if given, password. The last Owner
// cannot be demoted: the vault would have no one left to administer it.
func (s *Store) UpdateUser(ctx context.Context, a Actor, id string, in UserInput) (*User, error) {
	if err := validateUser(&in, false); err != nil {
		return nil, err
	}
	var hash []byte
	if in.Password != "" {
		var err error
		if hash, err = bcrypt.GenerateFromPassword([]byte(in.Password), s.bcryptCost); err != nil {
			return nil, fmt.Errorf("hash password: %w", err)
		}
	}
	var u User
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.First(&u, "id = ?", id).Error; err != nil {
			return err
		}
		if in.Username != u.Username {
			return Invalid("username", "cannot be changed; create a new user instead")
		}
		if u.Role == RoleOwner && in.Role != RoleOwner {
			if err := notLastOwner(tx, u.ID); err != nil {
				return err
			}
		}
		u.Role = in.Role
		changes := map[string]any{"role": u.Role}
		if hash != nil {
			u.PasswordHash = string(hash)
			changes["password_changed"] = true
			// A new password ends the user's sessions everywhere.
			if err := tx.Where("user_id = ?", u.ID).Delete(&Session{}).Error; err != nil {
				return err
			}
		}
		if err := tx.Save(&u).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "user.update", "user", u.ID, u.Username, changes)
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// DeleteUser deletes a user with their sessions and tokens; never the last Owner.
func (s *Store) DeleteUser(ctx context.Context, a Actor, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var u User
		if err := tx.First(&u, "id = ?", id).Error; err != nil {
			return err
		}
		if u.Role == RoleOwner {
			if err := notLastOwner(tx, u.ID); err != nil {
				return err
			}
		}
		for _, m := range []any{&Session{}, &APIToken{}} {
			if err := tx.Where("user_id = ?", u.ID).Delete(m).Error; err != nil {
				return err
			}
		}
		if err := tx.Delete(&u).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "user.delete", "user", u.ID, u.Username, nil)
	})
}

func notLastOwner(tx *gorm.DB, userID string) error {
	var others int64
	if err := tx.Model(&User{}).Where("role = ? AND id <> ?", RoleOwner, userID).Count(&others).Error; err != nil {
		return err
	}
	if others == 0 {
		return &ConflictError{Code: "last_owner", Message: "this is the last Owner; make another user Owner first"}
	}
	return nil
}

// ErrBadCredentials is returned for an unknown user or a wrong password; the
// two are not told apart, so usernames cannot be probed.
var ErrBadCredentials = errors.New("wrong username or password")

// dummyHash makes a login for an unknown user cost as much as one for a known
// user, so response times do not reveal which usernames exist.
func (s *Store) dummyHash() []byte {
	s.dummyOnce.Do(func() {
		s.dummy, _ = bcrypt.GenerateFromPassword([]byte("lifeboat-timing-equaliser"), s.bcryptCost)
	})
	return s.dummy
}

// Authenticate checks a username and password.
func (s *Store) Authenticate(ctx context.Context, username, password string) (*User, error) {
	var u User
	err := s.db.WithContext(ctx).First(&u, "username = ?", strings.TrimSpace(username)).Error
	if err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			_ = bcrypt.CompareHashAndPassword(s.dummyHash(), []byte(password))
			return nil, ErrBadCredentials
		}
		return nil, translateError(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return nil, ErrBadCredentials
	}
	return &u, nil
}

package models

import (
	"context"
	"fmt"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// ChangeOwnPassword lets a user replace their password after proving the
// current one. All their portal sessions end, so a stolen session does not
// outlive the change.
func (s *Store) ChangeOwnPassword(ctx context.Context, a Actor, userID, current, next string) error {
	v := &ValidationError{}
	validatePassword(v, "new_password", next)
	if current == next && next != "" {
		v.Add("new_password", "must differ from the current password")
	}
	if err := v.Err(); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(next), s.bcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	return s.tx(ctx, func(tx *gorm.DB) error {
		var u User
		if err := tx.First(&u, "id = ?", userID).Error; err != nil {
			return err
		}
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(current)) != nil {
			return Invalid("current_password", "is not your current password")
		}
		if err := tx.Model(&u).Update("password_hash", string(hash)).Error; err != nil {
			return err
		}
		if err := tx.Where("user_id = ?", u.ID).Delete(&Session{}).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "user.password_change", "user", u.ID, u.Username, nil)
	})
}

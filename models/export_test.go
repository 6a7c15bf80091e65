package models

import "gorm.io/gorm"

// DB gives the tests the store's own connection, with its callbacks, to
// prove that even a write no Store method makes passes the transition
// table.
func (s *Store) DB() *gorm.DB { return s.db }

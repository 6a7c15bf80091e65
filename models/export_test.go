package models

import "gorm.io/gorm"

// DB gives the tests the store's own connection, with its callbacks, to
// prove that even a write no Store method makes passes the transition
// table.
func (s *Store) DB() *gorm.DB { return s.db }

// AllModels is every table's model, for the test that compares the
// migrated schema with what AutoMigrate makes of the models.
var AllModels = allModels

// Migrations lists a database kind's migrations: version → name.
func Migrations(kind string) ([]string, error) {
	list, err := migrationsFor(kind)
	var names []string
	for _, m := range list {
		names = append(names, m.Name)
	}
	return names, err
}

// BaselineTables is what the baseline check expects: table → columns,
// read from version 1's SQL.
func BaselineTables(kind string) (map[string][]string, map[string]string) {
	list, err := migrationsFor(kind)
	if err != nil {
		panic(err)
	}
	shape := parseBaseline(list[0].SQL)
	return shape.Tables, shape.Indexes
}

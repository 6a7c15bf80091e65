package models

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"gorm.io/gorm"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// SchemaError says the database's schema is not one this vault can run on;
// the vault does not start. Code is stable (agentproto's error table).
type SchemaError struct {
	Code    string
	Message string
}

func (e *SchemaError) Error() string { return e.Message + " (" + e.Code + ")" }

// baselineShape is what version 1 holds, read from its own SQL (a file
// that never changes): table → columns, and index → table.
type baselineShape struct {
	Tables  map[string][]string
	Indexes map[string]string
}

var (
	baselineTable  = regexp.MustCompile("^CREATE TABLE [`\"]?(\\w+)[`\"]? \\($")
	baselineColumn = regexp.MustCompile("^\\s+[`\"]?(\\w+)[`\"]? ")
	baselineIndex  = regexp.MustCompile("^CREATE (?:UNIQUE )?INDEX [`\"]?(\\w+)[`\"]? ON (?:ONLY )?[`\"]?(\\w+)")
)

func parseBaseline(sql string) baselineShape {
	shape := baselineShape{Tables: map[string][]string{}, Indexes: map[string]string{}}
	table := ""
	for _, line := range strings.Split(sql, "\n") {
		switch m := baselineTable.FindStringSubmatch(line); {
		case m != nil:
			table = m[1]
			shape.Tables[table] = nil
			continue
		case strings.HasPrefix(line, ")"):
			table = ""
			continue
		}
		if m := baselineIndex.FindStringSubmatch(line); m != nil {
			shape.Indexes[m[1]] = m[2]
			continue
		}
		if m := baselineColumn.FindStringSubmatch(line); table != "" && m != nil && m[1] != "PRIMARY" && m[1] != "CONSTRAINT" {
			shape.Tables[table] = append(shape.Tables[table], m[1])
		}
	}
	return shape
}

// preVersioning says whether the database holds a vault's tables without
// versions: the vault before versioned migrations made it.
func preVersioning(tx *gorm.DB, baseline migration) bool {
	for table := range parseBaseline(baseline.SQL).Tables {
		if tx.Migrator().HasTable(table) {
			return true
		}
	}
	return false
}

// checkBaseline refuses to stamp version 1 on a database that lacks part of
// it: a vault older than the baseline made it, or it is not a vault's.
func checkBaseline(tx *gorm.DB, baseline migration) error {
	shape := parseBaseline(baseline.SQL)
	var missing []string
	for table, columns := range shape.Tables {
		if !tx.Migrator().HasTable(table) {
			missing = append(missing, "table "+table)
			continue
		}
		types, err := tx.Migrator().ColumnTypes(table)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, ct := range types {
			have[ct.Name()] = true
		}
		for _, c := range columns {
			if !have[c] {
				missing = append(missing, "column "+table+"."+c)
			}
		}
	}
	for index, table := range shape.Indexes {
		if tx.Migrator().HasTable(table) && !tx.Migrator().HasIndex(table, index) {
			missing = append(missing, "index "+index)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	n := len(missing)
	if n > 6 {
		missing = append(missing[:6], fmt.Sprintf("and %d more", n-6))
	}
	return &SchemaError{Code: agentproto.CodeSchemaUnrecognized, Message: fmt.Sprintf(
		"the database has Lifeboat vault tables but no schema version, and lacks %d part(s) of schema version 1 (%s), the last schema before versioned migrations: %s. "+
			"A vault older than that made it, or it is not a Lifeboat database. Point --db at the vault's own database, "+
			"or start the vault build of commit e50ba32 on it once (it completes the old schema), then this one; or restore a backup",
		n, baseline.Name, strings.Join(missing, ", "))}
}

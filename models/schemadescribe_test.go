package models_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"gorm.io/gorm"
)

// describeSchema lists what a database's schema is made of, one line per
// column, index and constraint, normalised so that two databases built by
// different steps (migrations, or AutoMigrate) compare equal when they are
// the same: lines are sorted, and the version table is left out.
func describeSchema(t *testing.T, db *gorm.DB, postgres bool) []string {
	t.Helper()
	var out []string
	if postgres {
		var schema string
		must(t, db.Raw("SELECT current_schema()").Scan(&schema).Error)
		var cols []struct {
			TableName, ColumnName, DataType, IsNullable, ColumnDefault string
			Length                                                     int
		}
		must(t, db.Raw(`SELECT table_name, column_name, data_type, coalesce(character_maximum_length, 0) AS length, is_nullable,
			coalesce(column_default, '') AS column_default FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'`).Scan(&cols).Error)
		for _, c := range cols {
			out = append(out, fmt.Sprintf("%s: column %s %s(%d) nullable=%s default=%q", c.TableName, c.ColumnName, c.DataType, c.Length, c.IsNullable, c.ColumnDefault))
		}
		var idx []struct{ Tablename, Indexname, Indexdef string }
		must(t, db.Raw(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'`).Scan(&idx).Error)
		for _, i := range idx {
			out = append(out, fmt.Sprintf("%s: index %s", i.Tablename, strings.ReplaceAll(i.Indexdef, schema+".", "")))
		}
		var cons []struct{ Tablename, Conname, Def string }
		must(t, db.Raw(`SELECT conrelid::regclass::text AS tablename, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
			WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text <> 'schema_migrations'`).Scan(&cons).Error)
		for _, c := range cons {
			out = append(out, fmt.Sprintf("%s: constraint %s %s", c.Tablename, c.Conname, c.Def))
		}
		sort.Strings(out)
		return out
	}
	var tables []string
	must(t, db.Raw(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations'`).Scan(&tables).Error)
	for _, table := range tables {
		var cols []struct {
			Name, Type  string
			Notnull, Pk int
			DfltValue   *string
		}
		must(t, db.Raw("SELECT name, type, \"notnull\", pk, dflt_value FROM pragma_table_info(?)", table).Scan(&cols).Error)
		for _, c := range cols {
			def := "none"
			if c.DfltValue != nil {
				def = *c.DfltValue
			}
			out = append(out, fmt.Sprintf("%s: column %s %s notnull=%d pk=%d default=%s", table, c.Name, c.Type, c.Notnull, c.Pk, def))
		}
		var idx []struct {
			Name, Origin string
			Unique       int
		}
		must(t, db.Raw(`SELECT name, "unique", origin FROM pragma_index_list(?)`, table).Scan(&idx).Error)
		for _, i := range idx {
			if i.Origin == "pk" {
				continue // the primary key's own index: the pk columns say it
			}
			var cols []string
			must(t, db.Raw("SELECT name FROM pragma_index_info(?) ORDER BY seqno", i.Name).Scan(&cols).Error)
			out = append(out, fmt.Sprintf("%s: index %s unique=%d (%s)", table, i.Name, i.Unique, strings.Join(cols, ", ")))
		}
		var fks []struct{ Table, From, To, OnUpdate, OnDelete string }
		must(t, db.Raw(`SELECT "table", "from", "to", on_update, on_delete FROM pragma_foreign_key_list(?)`, table).Scan(&fks).Error)
		for _, f := range fks {
			out = append(out, fmt.Sprintf("%s: foreign key (%s) references %s(%s) on update %s on delete %s", table, f.From, f.Table, f.To, f.OnUpdate, f.OnDelete))
		}
	}
	sort.Strings(out)
	return out
}

// schemaDiff says what is in one description and not the other.
func schemaDiff(a, b []string) (onlyA, onlyB []string) {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, l := range a {
		inA[l] = true
	}
	for _, l := range b {
		inB[l] = true
	}
	for _, l := range a {
		if !inB[l] {
			onlyA = append(onlyA, l)
		}
	}
	for _, l := range b {
		if !inA[l] {
			onlyB = append(onlyB, l)
		}
	}
	return onlyA, onlyB
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

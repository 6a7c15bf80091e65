package models

import (
	"reflect"

	"gorm.io/gorm"
)

// Page asks for one page of a list: the items after Cursor (an id from a
// previous answer's next cursor), at most Limit of them.
type Page struct {
	Cursor string
	Limit  int
}

// Page size limits for every list.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// paginate runs q ordered by id (ids sort by creation time) and fills out
// with one page; it returns the cursor of the next page, or "" at the end.
func paginate(q *gorm.DB, p Page, newestFirst bool, out any) (string, error) {
	return paginateOn(q, "id", p, newestFirst, out)
}

// paginateOn is paginate for a query whose id column needs its table name.
func paginateOn(q *gorm.DB, idColumn string, p Page, newestFirst bool, out any) (string, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = DefaultPageSize
	}
	if limit > MaxPageSize {
		limit = MaxPageSize
	}
	order := idColumn + " ASC"
	if newestFirst {
		order = idColumn + " DESC"
	}
	if p.Cursor != "" {
		if newestFirst {
			q = q.Where(idColumn+" < ?", p.Cursor)
		} else {
			q = q.Where(idColumn+" > ?", p.Cursor)
		}
	}
	if err := q.Order(order).Limit(limit + 1).Find(out).Error; err != nil {
		return "", translateError(err)
	}
	// Trim the extra row that tells whether there is a next page.
	v := reflect.ValueOf(out).Elem()
	if v.Len() <= limit {
		return "", nil
	}
	v.Set(v.Slice(0, limit))
	last := v.Index(limit - 1)
	return last.FieldByName("ID").String(), nil
}

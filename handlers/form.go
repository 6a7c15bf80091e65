package handlers

import (
	"errors"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// formInt reads a whole number from a form field, noting a bad value in errs
// under the field's name.
func formInt(c echo.Context, field string, errs views.FormErrors) int {
	s := strings.TrimSpace(c.FormValue(field))
	n, err := strconv.Atoi(s)
	if err != nil {
		errs[field] = "must be a whole number"
	}
	return n
}

// formBool reads a checkbox: present (any value a browser sends for a
// checked box) is true.
func formBool(c echo.Context, field string) bool {
	switch strings.ToLower(strings.TrimSpace(c.FormValue(field))) {
	case "", "false", "off", "0":
		return false
	}
	return true
}

// formErrors turns a store error into inline field errors for a form, or
// returns it unchanged when it is not about fields.
func formErrors(err error, into views.FormErrors) error {
	var v *models.ValidationError
	if errors.As(err, &v) {
		for field, reason := range v.Map() {
			if _, dup := into[field]; !dup {
				into[field] = reason
			}
		}
		return nil
	}
	return err
}

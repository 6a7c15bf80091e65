package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// decodeJSON reads a JSON body into dst strictly: the content type must be
// JSON, unknown fields are refused (a typo must not be silently ignored),
// and there must be exactly one JSON value. The body size is capped by the
// BodyLimit middleware.
func decodeJSON(c echo.Context, dst any) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, _ := mime.ParseMediaType(ct); mt != echo.MIMEApplicationJSON {
		return &Problem{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "send the body as JSON with Content-Type: application/json"}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return jsonProblem(err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return badTime(body, dst)
		}
		return jsonProblem(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return jsonProblem(err)
		}
		return &Problem{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the body must hold a single JSON object"}
	}
	return nil
}

// badTime names the field of dst whose time in body cannot be read: the
// JSON decoder says only that a time could not be parsed.
func badTime(body []byte, dst any) *Problem {
	reason := "must be a time in RFC 3339, such as 2026-12-06T18:30:00Z"
	field := ""
	var raw map[string]json.RawMessage
	t := reflect.TypeOf(dst)
	if json.Unmarshal(body, &raw) == nil && t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		for i := range t.Elem().NumField() {
			f := t.Elem().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if v, ok := raw[name]; ok && (f.Type == reflect.TypeFor[time.Time]() || f.Type == reflect.TypeFor[*time.Time]()) {
				if json.Unmarshal(v, new(*time.Time)) != nil {
					field = name
					break
				}
			}
		}
	}
	if field == "" {
		return &Problem{Status: http.StatusBadRequest, Code: "validation_failed", Message: "a time " + reason}
	}
	return &Problem{Status: http.StatusBadRequest, Code: "validation_failed",
		Message: fmt.Sprintf("field %q %s", field, reason),
		Details: map[string]any{"fields": []models.FieldError{{Field: field, Reason: reason}}}}
}

func jsonProblem(err error) *Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var maxErr *http.MaxBytesError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge:
		// The BodyLimit middleware cut the body short.
		return &Problem{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the request body is larger than the vault accepts (1 MiB)"}
	case errors.As(err, &maxErr):
		return &Problem{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: fmt.Sprintf("the request body is larger than the vault accepts (%d bytes)", maxErr.Limit)}
	case errors.As(err, &syn):
		return &Problem{Status: http.StatusBadRequest, Code: "invalid_json", Message: fmt.Sprintf("the body is not valid JSON (at byte %d)", syn.Offset)}
	case errors.As(err, &typ):
		field := typ.Field
		return &Problem{Status: http.StatusBadRequest, Code: "validation_failed",
			Message: fmt.Sprintf("field %q must be %s", field, jsonTypeName(typ.Type.Kind().String())),
			Details: map[string]any{"fields": []models.FieldError{{Field: field, Reason: "must be " + jsonTypeName(typ.Type.Kind().String())}}}}
	case errors.Is(err, io.EOF):
		return &Problem{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the body is empty; send a JSON object"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &Problem{Status: http.StatusBadRequest, Code: "unknown_field",
			Message: fmt.Sprintf("field %q is not known here; check its spelling against /api/v1/openapi.json", field),
			Details: map[string]any{"fields": []models.FieldError{{Field: field, Reason: "is not a known field"}}}}
	}
	return &Problem{Status: http.StatusBadRequest, Code: "invalid_json", Message: "the body could not be read as JSON"}
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "of another type"
}

// pageParams reads ?cursor= and ?limit= for lists.
func pageParams(c echo.Context) (models.Page, error) {
	p := models.Page{Cursor: c.QueryParam("cursor")}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > models.MaxPageSize {
			return p, invalidQuery("limit", fmt.Sprintf("must be a number from 1 to %d", models.MaxPageSize))
		}
		p.Limit = n
	}
	// A cursor is the id of the last item of a page; anything else would
	// silently give some other page (ids compare as strings).
	if p.Cursor != "" && !cursorPattern.MatchString(p.Cursor) {
		return p, invalidQuery("cursor", "is not a cursor this vault gave out: pass the next_cursor of the previous page as it is, or leave it out for the first page")
	}
	return p, nil
}

// cursorPattern is the form of the vault's ids (models.NewID): a kind
// prefix and a lower-case ULID.
var cursorPattern = regexp.MustCompile(`^[a-z]{2,8}_[0-9a-z]{26}$`)

// onlyQuery refuses query parameters a list does not take: a misspelt
// filter must not silently list everything.
func onlyQuery(c echo.Context, allowed ...string) error {
	for k := range c.QueryParams() {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return invalidQuery(k, "is not a parameter here: this call takes none")
			}
			return invalidQuery(k, "is not a parameter of this list; it takes "+strings.Join(allowed, ", "))
		}
	}
	return nil
}

func invalidQuery(field, reason string) error {
	return &models.ValidationError{Fields: []models.FieldError{{Field: field, Reason: reason}}}
}

// oneOf checks an enumerated query parameter.
func oneOf(field, value string, allowed []string) error {
	if value == "" {
		return nil
	}
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return invalidQuery(field, "must be one of "+strings.Join(allowed, ", "))
}

// List is the JSON shape of every list (DESIGN.md §7).
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func newList[M any, T any](items []M, next string, conv func(M) T) List[T] {
	out := List[T]{Items: make([]T, 0, len(items)), NextCursor: next}
	for _, m := range items {
		out.Items = append(out.Items, conv(m))
	}
	return out
}

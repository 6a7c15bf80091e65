package handlers

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Schema is an OpenAPI 3.0 schema object, the part of it this API uses.
type Schema struct {
	Ref                  string             `json:"$ref,omitempty"`
	Type                 string             `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	Description          string             `json:"description,omitempty"`
	Nullable             bool               `json:"nullable,omitempty"`
	ReadOnly             bool               `json:"readOnly,omitempty"`
	WriteOnly            bool               `json:"writeOnly,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	AdditionalProperties any                `json:"additionalProperties,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	AllOf                []*Schema          `json:"allOf,omitempty"`
}

func schemaRef(name string) *Schema { return &Schema{Ref: "#/components/schemas/" + name} }

// fieldNote refines one property of a component schema beyond what its Go
// type says: allowed values, bounds, write-only, a description.
type fieldNote struct {
	Enum        []any
	Min, Max    *float64
	WriteOnly   bool
	Description string
}

// component is one named schema made from a Go type of the API. Input
// bodies are strict (unknown fields are refused), so they forbid extra
// properties; answers may grow fields, so they do not.
type component struct {
	Name     string
	Type     reflect.Type
	Input    bool
	Required []string // for inputs; answers require every field they always carry
	Notes    map[string]fieldNote
	Doc      string
}

// schemaBuilder turns Go types into schemas, referring to components by
// name so that every shape is written down once.
type schemaBuilder struct {
	names map[reflect.Type]string
}

var (
	timeType    = reflect.TypeFor[time.Time]()
	rawJSONType = reflect.TypeFor[json.RawMessage]()
)

func (b *schemaBuilder) component(c component) *Schema {
	s := b.object(c.Type, c.Input)
	s.Description = c.Doc
	if c.Input {
		s.Required = c.Required
		s.AdditionalProperties = false
	}
	for field, n := range c.Notes {
		p := s.Properties[field]
		if p == nil {
			panic("openapi: " + c.Name + " has no field " + field) // caught by the document test
		}
		if len(n.Enum) > 0 {
			p.Enum = n.Enum
			if p.Nullable {
				p.Enum = append(slices.Clone(n.Enum), nil)
			}
		}
		p.Minimum, p.Maximum, p.WriteOnly = n.Min, n.Max, n.WriteOnly
		if n.Description != "" {
			p.Description = n.Description
		}
	}
	return s
}

// object describes a struct's JSON fields. For an answer, a field without
// omitempty is always present, so it is required.
func (b *schemaBuilder) object(t reflect.Type, input bool) *Schema {
	s := &Schema{Type: "object", Properties: map[string]*Schema{}}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		s.Properties[name] = b.schema(f.Type)
		if !input && !strings.Contains(opts, "omitempty") {
			s.Required = append(s.Required, name)
		}
	}
	return s
}

func (b *schemaBuilder) schema(t reflect.Type) *Schema {
	if name, ok := b.names[t]; ok {
		return schemaRef(name)
	}
	switch {
	case t == timeType:
		return &Schema{Type: "string", Format: "date-time"}
	case t == rawJSONType:
		return &Schema{Type: "object", Nullable: true, AdditionalProperties: true}
	}
	switch t.Kind() {
	case reflect.Pointer:
		if name, ok := b.names[t.Elem()]; ok {
			// A $ref cannot carry nullable in OpenAPI 3.0; allOf can.
			return &Schema{AllOf: []*Schema{schemaRef(name)}, Nullable: true}
		}
		s := b.schema(t.Elem())
		s.Nullable = true
		return s
	case reflect.String:
		return &Schema{Type: "string"}
	case reflect.Bool:
		return &Schema{Type: "boolean"}
	case reflect.Int, reflect.Int32:
		return &Schema{Type: "integer", Format: "int32"}
	case reflect.Int64:
		return &Schema{Type: "integer", Format: "int64"}
	case reflect.Float64:
		return &Schema{Type: "number"}
	case reflect.Slice:
		return &Schema{Type: "array", Items: b.schema(t.Elem())}
	case reflect.Map:
		return &Schema{Type: "object", AdditionalProperties: b.schema(t.Elem())}
	case reflect.Interface:
		return &Schema{}
	case reflect.Struct:
		return b.object(t, false)
	}
	panic("openapi: no schema for Go type " + t.String())
}

// listSchema is the shape of every list answer, for one item component.
func listSchema(item string) *Schema {
	return &Schema{
		Type:        "object",
		Description: "One page of " + item + " objects. Pass next_cursor as ?cursor= to get the next page; it is empty on the last page.",
		Required:    []string{"items", "next_cursor"},
		Properties: map[string]*Schema{
			"items":       {Type: "array", Items: schemaRef(item)},
			"next_cursor": {Type: "string"},
		},
	}
}

func enumOf[T any](values ...T) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

func bound(x float64) *float64 { return &x }

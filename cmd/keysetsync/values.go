package main

import (
	"encoding/json"
	"fmt"

	"github.com/keysetsync/keysetsync/avro"
)

// valueDecoder turns the data topic's values into JSON for the tools (tail, snapshot): the
// users schema as the API's users, or the --schema file's records as its JSON mapping gives.
type valueDecoder struct {
	codec   *avro.Codec
	schema  *avro.Schema   // nil: the built-in users schema
	reg     *registryFlags // with --schema-registry, values lose their Confluent frame
	columns []string       // CSV header: the top-level fields, in schema order
}

func newValueDecoder(schema *avro.Schema, reg *registryFlags) (*valueDecoder, error) {
	codec, err := avro.NewCodec()
	if err != nil {
		return nil, err
	}
	text := avro.UserSchema()
	if schema != nil {
		text = schema.Text()
	}
	// The columns come from the schema's text, the users schema's too, so they cannot drift.
	var rec struct {
		Fields []struct {
			Name string `json:"name"`
		} `json:"fields"`
	}
	if err := json.Unmarshal([]byte(text), &rec); err != nil {
		return nil, fmt.Errorf("schema fields: %w", err)
	}
	d := &valueDecoder{codec: codec, schema: schema, reg: reg}
	for _, f := range rec.Fields {
		d.columns = append(d.columns, f.Name)
	}
	return d, nil
}

// name is the record type values are decoded as, for error messages.
func (d *valueDecoder) name() string {
	if d.schema != nil {
		return d.schema.FullName()
	}
	return "io.keysetsync.User"
}

// decode returns the value v (framed or not) as a JSON-encodable value.
func (d *valueDecoder) decode(v []byte) (any, error) {
	v = d.reg.unframe(v)
	if d.schema != nil {
		return d.schema.JSON(v)
	}
	u, err := d.codec.Decode(v)
	if err != nil {
		return nil, err
	}
	return newToolUser(u), nil
}

// row returns a decoded value as CSV cells in column order: strings as they are, null as an
// empty cell, anything else (numbers, nested records, arrays) as JSON.
func (d *valueDecoder) row(v any) ([]string, error) {
	var m map[string]any
	switch x := v.(type) {
	case map[string]any:
		m = x
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
	}
	cells := make([]string, len(d.columns))
	for i, c := range d.columns {
		switch x := m[c].(type) {
		case nil:
		case string:
			cells[i] = x
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", c, err)
			}
			cells[i] = string(b)
		}
	}
	return cells, nil
}

package avro

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

type kind uint8

const (
	kNull kind = iota // null to string: the primitives, in the order kind.String lists them
	kBoolean
	kInt
	kLong
	kFloat
	kDouble
	kBytes
	kString
	kRecord
	kEnum
	kArray
	kMap
	kFixed
	kUnion
)

func (k kind) String() string {
	return [...]string{"null", "boolean", "int", "long", "float", "double", "bytes", "string",
		"record", "enum", "array", "map", "fixed", "union"}[k]
}

type logical uint8

const (
	lNone logical = iota
	lDecimal
	lUUID
	lDate
	lTimeMillis
	lTimeMicros
	lTimestampMillis
	lTimestampMicros
	lLocalMillis
	lLocalMicros
)

// logicalOf returns a logical type the encoder reads specially, and the type it needs.
func logicalOf(name string) (logical, kind, bool) {
	switch name {
	case "uuid":
		return lUUID, kString, true
	case "date":
		return lDate, kInt, true
	case "time-millis":
		return lTimeMillis, kInt, true
	case "time-micros":
		return lTimeMicros, kLong, true
	case "timestamp-millis":
		return lTimestampMillis, kLong, true
	case "timestamp-micros":
		return lTimestampMicros, kLong, true
	case "local-timestamp-millis":
		return lLocalMillis, kLong, true
	case "local-timestamp-micros":
		return lLocalMicros, kLong, true
	}
	return lNone, 0, false
}

// typ is a compiled schema node. A named type is one node, shared by every reference to it.
type typ struct {
	kind        kind
	logical     logical
	logicalType string // its name, when the encoder knows it
	name        string // full name of a record, enum or fixed
	// branch is goavro's name of the type as a union branch, the key of its decoded union
	// value: a named type's full name, "long.timestamp-millis", "int.date", "bytes.decimal"...
	// but plain "long" for local-timestamp-* and "string" for uuid, which goavro does not know.
	branch           string
	fields           []field
	symbols          []string
	size             int
	precision, scale int
	items            *typ // array items, map values
	branches         []*typ
	null             int // union: index of the null branch, -1 if none
}

type field struct {
	name       string
	aliases    []string
	typ        *typ
	hasDefault bool
	rawDefault any
	def        []byte // rawDefault encoded
	where      string // path, for schema errors
}

// label names a type in messages.
func (t *typ) label() string {
	switch {
	case t.name != "":
		return t.kind.String() + " " + t.name
	case t.logical == lDecimal:
		return fmt.Sprintf("decimal(%d,%d)", t.precision, t.scale)
	case t.logical != lNone:
		return t.logicalType
	}
	return t.kind.String()
}

// unit is the unit of a time logical type.
func (t *typ) unit() time.Duration {
	switch t.logical {
	case lTimeMicros, lTimestampMicros, lLocalMicros:
		return time.Microsecond
	}
	return time.Millisecond
}

// compiler turns the parsed schema into typ nodes, resolving names as the Avro specification
// says.
type compiler struct {
	named   map[string]*typ
	records []*typ // in definition order, for the defaults
}

func schemaErr(where, format string, args ...any) error {
	at := "top level"
	if where != "" {
		at = "field " + where
	}
	return fmt.Errorf("%w: %s: %s", ErrSchema, at, fmt.Sprintf(format, args...))
}

func primitiveKind(name string) (kind, bool) {
	for k := kNull; k <= kString; k++ {
		if k.String() == name {
			return k, true
		}
	}
	return 0, false
}

func validName(s string) bool {
	for i, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return s != ""
}

func intAttr(m map[string]any, key string) (int, bool) {
	n, ok := m[key].(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(string(n))
	return i, err == nil
}

func (c *compiler) compile(v any, ns, where string) (*typ, error) {
	switch x := v.(type) {
	case string:
		if k, ok := primitiveKind(x); ok {
			return &typ{kind: k, branch: x}, nil
		}
		return c.resolve(x, ns, where)
	case []any:
		return c.union(x, ns, where)
	case map[string]any:
		return c.object(x, ns, where)
	}
	return nil, schemaErr(where, "a type is a name, an object or an array (a union), not %s", describe(v))
}

// resolve finds a named type defined earlier. Like Java and goavro, a name without a dot that
// is not in the enclosing namespace is looked up in the null namespace.
func (c *compiler) resolve(name, ns, where string) (*typ, error) {
	if !strings.Contains(name, ".") && ns != "" {
		if t, ok := c.named[ns+"."+name]; ok {
			return t, nil
		}
	}
	if t, ok := c.named[name]; ok {
		return t, nil
	}
	return nil, schemaErr(where, "unknown type %q (a named type must be defined before it is used)", name)
}

func (c *compiler) union(branches []any, ns, where string) (*typ, error) {
	if len(branches) == 0 {
		return nil, schemaErr(where, "an empty union")
	}
	t := &typ{kind: kUnion, branch: "union", null: -1}
	seen := map[string]bool{}
	for i, b := range branches {
		bt, err := c.compile(b, ns, where)
		if err != nil {
			return nil, err
		}
		// One branch per unnamed type: a timestamp-millis is a long too (goavro would take
		// both, Java and schema registries refuse).
		key := bt.name
		if key == "" {
			key = bt.kind.String()
		}
		switch {
		case bt.kind == kUnion:
			return nil, schemaErr(where, "a union directly inside a union")
		case seen[key]:
			return nil, schemaErr(where, "the union holds %s twice", key)
		case bt.kind == kNull:
			t.null = i
		}
		seen[key] = true
		t.branches = append(t.branches, bt)
	}
	return t, nil
}

func (c *compiler) object(m map[string]any, ns, where string) (*typ, error) {
	tv, ok := m["type"]
	if !ok {
		return nil, schemaErr(where, `a type object without "type"`)
	}
	name, ok := tv.(string)
	if !ok { // {"type": {...}} or {"type": [...]}
		return c.compile(tv, ns, where)
	}
	switch name {
	case "record", "enum", "fixed":
		return c.definition(name, m, ns, where)
	case "array", "map":
		t := &typ{kind: kArray, branch: name}
		key, sub := "items", where+"[]"
		if name == "map" {
			t.kind, key, sub = kMap, "values", where+"{}"
		}
		inner, ok := m[key]
		if !ok {
			return nil, schemaErr(where, "%s without %q", name, key)
		}
		var err error
		t.items, err = c.compile(inner, ns, sub)
		return t, err
	}
	k, ok := primitiveKind(name)
	if !ok { // {"type": "SomeNamedType"}
		return c.resolve(name, ns, where)
	}
	t := &typ{kind: k, branch: name}
	return t, c.setLogical(t, m, where)
}

// definition compiles a record, enum or fixed.
func (c *compiler) definition(kindName string, m map[string]any, ns, where string) (*typ, error) {
	name, _ := m["name"].(string)
	space := ns
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		space, name = name[:i], name[i+1:]
	} else if v, ok := m["namespace"]; ok {
		if space, ok = v.(string); !ok {
			return nil, schemaErr(where, "%s %q: namespace is %s, want a string", kindName, name, describe(v))
		}
	}
	full := name
	if space != "" {
		full = space + "." + name
	}
	for _, part := range strings.Split(full, ".") {
		if !validName(part) {
			return nil, schemaErr(where, "%s name %q is not a valid Avro full name (dot-separated [A-Za-z_][A-Za-z0-9_]*)", kindName, full)
		}
	}
	switch _, primitive := primitiveKind(full); {
	case primitive:
		return nil, schemaErr(where, "%s name %q is a primitive type", kindName, full)
	case c.named[full] != nil:
		return nil, schemaErr(where, "%s is defined twice", full)
	case space == "" && ns != "":
		return nil, schemaErr(where, "%s %s is in the null namespace inside namespace %q, which goavro cannot express; give it a namespace", kindName, full, ns)
	}
	t := &typ{name: full, branch: full}
	c.named[full] = t
	switch kindName {
	case "enum":
		t.kind = kEnum
		syms, _ := m["symbols"].([]any)
		for _, s := range syms {
			sym, _ := s.(string)
			if !validName(sym) || slices.Contains(t.symbols, sym) {
				return nil, schemaErr(where, "enum %s: symbol %s is not a valid Avro name, or repeated", full, describe(s))
			}
			t.symbols = append(t.symbols, sym)
		}
		if len(t.symbols) == 0 {
			return nil, schemaErr(where, `enum %s needs a non-empty "symbols" array`, full)
		}
		return t, nil
	case "fixed":
		t.kind = kFixed
		if t.size, _ = intAttr(m, "size"); t.size < 1 {
			return nil, schemaErr(where, `fixed %s needs a positive integer "size"`, full)
		}
		return t, c.setLogical(t, m, where)
	}
	t.kind = kRecord
	fields, ok := m["fields"].([]any)
	if !ok {
		return nil, schemaErr(where, `record %s needs a "fields" array`, full)
	}
	c.records = append(c.records, t)
	for i, fv := range fields {
		fm, _ := fv.(map[string]any)
		fname, _ := fm["name"].(string)
		if !validName(fname) {
			return nil, schemaErr(where, "record %s: field %d: name %s is not a valid Avro name", full, i+1, describe(fm["name"]))
		}
		f := field{name: fname, where: fname}
		if where != "" {
			f.where = where + "." + fname
		}
		if slices.ContainsFunc(t.fields, func(g field) bool { return g.name == fname }) {
			return nil, schemaErr(f.where, "record %s has two fields of this name", full)
		}
		ftv, ok := fm["type"]
		if !ok {
			return nil, schemaErr(f.where, `no "type"`)
		}
		var err error
		if f.typ, err = c.compile(ftv, space, f.where); err != nil {
			return nil, err
		}
		f.rawDefault, f.hasDefault = fm["default"]
		if al, ok := fm["aliases"]; ok {
			list, ok := al.([]any)
			for _, a := range list {
				s, _ := a.(string)
				ok = ok && validName(s)
				f.aliases = append(f.aliases, s)
			}
			if !ok {
				return nil, schemaErr(f.where, "aliases must be an array of Avro names")
			}
		}
		t.fields = append(t.fields, f)
	}
	return t, nil
}

// maxPrecision bounds decimals, whose digits are built in memory.
const maxPrecision = 1000

func (c *compiler) setLogical(t *typ, m map[string]any, where string) error {
	lt, _ := m["logicalType"].(string)
	if lt == "decimal" {
		if t.kind != kBytes && t.kind != kFixed {
			return schemaErr(where, "logicalType decimal needs bytes or fixed, not %s", t.kind)
		}
		p, ok := intAttr(m, "precision")
		if !ok || p < 1 || p > maxPrecision {
			return schemaErr(where, "decimal precision must be an integer from 1 to %d", maxPrecision)
		}
		s := 0
		if _, has := m["scale"]; has {
			if s, ok = intAttr(m, "scale"); !ok || s < 0 || s > p {
				return schemaErr(where, "decimal scale must be an integer from 0 to the precision (%d)", p)
			}
		}
		if t.kind == kFixed && t.size*8 < 3400 { // 2^3399 > 10^maxPrecision
			most := len(new(big.Int).Lsh(big.NewInt(1), uint(t.size*8-1)).String()) - 1
			if p > most {
				return schemaErr(where, "decimal precision %d does not fit fixed %s of %d bytes (%d digits at most)", p, t.name, t.size, most)
			}
		}
		t.logical, t.logicalType, t.precision, t.scale = lDecimal, lt, p, s
		if t.kind == kBytes {
			t.branch = "bytes.decimal"
		}
		return nil
	}
	l, base, known := logicalOf(lt)
	switch {
	case !known, lt == "uuid" && t.kind == kFixed: // Avro 1.12's fixed uuid: its bytes as they are
		return nil
	case t.kind != base:
		return schemaErr(where, "logicalType %s needs type %s, not %s", lt, base, t.kind)
	}
	t.logical, t.logicalType = l, lt
	if l != lUUID && l != lLocalMillis && l != lLocalMicros { // those goavro does not know
		t.branch = base.String() + "." + lt
	}
	return nil
}

// goavroSchema writes the compiled schema back as text for goavro, the decoder: names in
// full, decimal scales explicit, no defaults (an encoding has every field). goavro's own
// reading departs from the specification where this steps around it: "namespace": "" is
// ignored, a second bytes decimal without "scale" panics, a fixed default with a code point
// above 127 is refused, logical types it does not know would be errors.
type goavroSchema struct {
	b       []byte
	defined map[*typ]bool
}

func (g *goavroSchema) add(parts ...string) {
	for _, p := range parts {
		g.b = append(g.b, p...)
	}
}

func (g *goavroSchema) write(t *typ) {
	quote := strconv.Quote // names and symbols are ASCII identifiers: Go and JSON quote them alike
	if t.name != "" {
		if g.defined[t] {
			g.add(quote(t.name))
			return
		}
		g.defined[t] = true
	}
	decimal := ""
	if t.logical == lDecimal {
		decimal = fmt.Sprintf(`,"logicalType":"decimal","precision":%d,"scale":%d`, t.precision, t.scale)
	}
	list := func(n int, each func(int)) {
		for i := range n {
			if i > 0 {
				g.add(",")
			}
			each(i)
		}
	}
	switch t.kind {
	case kRecord:
		g.add(`{"type":"record","name":`, quote(t.name), `,"fields":[`)
		list(len(t.fields), func(i int) {
			g.add(`{"name":`, quote(t.fields[i].name), `,"type":`)
			g.write(t.fields[i].typ)
			g.add("}")
		})
		g.add("]}")
	case kEnum:
		g.add(`{"type":"enum","name":`, quote(t.name), `,"symbols":[`)
		list(len(t.symbols), func(i int) { g.add(quote(t.symbols[i])) })
		g.add("]}")
	case kFixed:
		g.add(`{"type":"fixed","name":`, quote(t.name), `,"size":`, strconv.Itoa(t.size), decimal, "}")
	case kArray:
		g.add(`{"type":"array","items":`)
		g.write(t.items)
		g.add("}")
	case kMap:
		g.add(`{"type":"map","values":`)
		g.write(t.items)
		g.add("}")
	case kUnion:
		g.add("[")
		list(len(t.branches), func(i int) { g.write(t.branches[i]) })
		g.add("]")
	default:
		switch {
		case t.logical == lDecimal:
			g.add(`{"type":"bytes"`, decimal, "}")
		case t.branch != t.kind.String():
			g.add(`{"type":"`, t.kind.String(), `","logicalType":"`, t.logicalType, `"}`)
		default:
			g.add(quote(t.branch))
		}
	}
}

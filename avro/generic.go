// Custom schemas: ParseSchema compiles any Avro record schema (keysetsync --schema file.avsc),
// and Schema.Append maps one JSON record, as encoding/json decodes it (Decoder.UseNumber
// recommended: numbers keep their exact text), to that schema by field name:
//
//   - record ← JSON object. Each schema field is looked up by its name, then by its aliases.
//     A field absent from the object takes the field's "default", read as the Avro
//     specification says (a union's default is for its first branch; a bytes or fixed default
//     is a string of code points 0-255); absent without a default is an error. An explicit
//     JSON null is a value, not an absence: it needs a null branch, and never selects the
//     default. Members the schema does not name are ignored.
//   - null ← null. boolean ← true or false.
//   - int, long ← an integer: a JSON number without a fraction (1.0 and 1e3 count) in the
//     type's range, or a string holding a base-10 integer, as many APIs send 64-bit ids.
//   - float, double ← a JSON number, or a string holding one in JSON syntax (so no "NaN").
//   - string ← a JSON string, or a JSON number as its literal text (numeric ids).
//   - bytes ← a JSON string, as its UTF-8 bytes. fixed ← a string of exactly size UTF-8 bytes.
//   - enum ← a string that is one of the symbols.
//   - array ← JSON array. map ← JSON object, written in key order so that equal records
//     encode to equal bytes.
//   - union ← null goes to the null branch. Any other value goes to the first non-null branch,
//     in schema order, that takes it without error; so order branches from the most specific,
//     as ["null","long","string"]: with "string" first, numbers would become strings.
//   - timestamp-millis, timestamp-micros, local-timestamp-millis, local-timestamp-micros
//     (long) ← an RFC 3339 time, any offset, converted to UTC (a local-timestamp also takes
//     one without offset, as wall clock); or a number, or numeric string, counting
//     MapOptions.NumericTimeUnit since the Unix epoch, fractions allowed. What is finer than
//     the type's unit is dropped towards the past, as goavro does with a time.Time.
//   - date (int) ← "YYYY-MM-DD", or an integer count of days since 1970-01-01.
//   - time-millis (int), time-micros (long) ← "HH:MM:SS[.fraction]" (what is finer than the
//     unit is dropped), or an integer count of the unit since midnight; under 24h either way.
//   - uuid (string) ← a string of 8-4-4-4-12 hex digits, kept as given.
//   - decimal (bytes or fixed) ← a JSON number or numeric string, exactly: more significant
//     fraction digits than the scale, or more digits than the precision, is an error, never
//     rounded.
//   - Any other logical type: its underlying type.
//
// A value that does not fit is a *FieldError naming the field's path. A schema the mapper or
// goavro cannot use fails in ParseSchema with ErrSchema.
//
// Append writes the binary itself rather than through goavro, which writes a map's entries in
// Go's random map order: `keysetsync verify` compares values byte for byte. goavro remains the
// decoder and, in the tests, the reference the bytes are checked against.

package avro

import (
	"github.com/keysetsync/keysetsync/retry"

	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
)

// ErrSchema marks a schema ParseSchema cannot use.
var ErrSchema = retry.Permanent("invalid Avro schema")

// Schema is an Avro record schema that JSON records are mapped to by field name. It is
// immutable once parsed, so safe for concurrent use.
type Schema struct {
	text  string
	root  *typ
	codec *goavro.Codec // for Decode and JSON
}

// MapOptions tune how JSON values map to Avro.
type MapOptions struct {
	// NumericTimeUnit is the unit of a JSON number given for a timestamp-millis/-micros (and
	// local-timestamp-*) field: time.Second for an API sending epoch seconds, time.Millisecond
	// for epoch milliseconds. 0: the logical type's own unit (ms for -millis, µs for -micros).
	NumericTimeUnit time.Duration
}

// FieldError is a value that does not fit the schema. Path is e.g. "customer.address.zip",
// "items[2].qty" or `attrs["k"]`; the top-level record's fields have no prefix, and the empty
// path is the record itself.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return "record: " + e.Err.Error()
	}
	return "field " + e.Path + ": " + e.Err.Error()
}

// Unwrap makes errors.Is(err, ErrInvalid) hold, as for the hand-written Codec's errors.
func (e *FieldError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// ParseSchema parses and compiles an Avro schema (JSON text). The top-level type must be a
// record. Errors wrap ErrSchema and say what is wrong and where.
//
// Where the specification would let a mistake through to become odd records, it refuses: a
// known logical type on the wrong type, or a decimal with a bad precision or scale, is an
// error rather than ignored, and every default must fit its type. It also refuses a named type
// in the null namespace nested in a namespace, which goavro, the decoder, cannot express.
func ParseSchema(text string) (*Schema, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber() // exact long defaults
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %w", ErrSchema, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: more than one JSON value", ErrSchema)
	}
	c := compiler{named: map[string]*typ{}}
	root, err := c.compile(v, "", "")
	if err != nil {
		return nil, err
	}
	if root.kind != kRecord {
		return nil, fmt.Errorf("%w: the top-level type is %s, want a record", ErrSchema, root.label())
	}
	// Defaults once every record is complete: a default may be of a record whose fields were
	// still being read (a recursive one). Encoded once here, a default costs a copy per record.
	for _, r := range c.records {
		for i := range r.fields {
			if f := &r.fields[i]; f.hasDefault {
				if f.def, err = f.typ.enc(nil, f.rawDefault, mode{defaults: true}); err != nil {
					// Not %w: this is a schema error, not an invalid record.
					return nil, fmt.Errorf("%w: field %s: bad default: %s", ErrSchema, f.where, defaultErrText(err))
				}
			}
		}
	}
	g := goavroSchema{defined: map[*typ]bool{}}
	g.write(root)
	codec, err := newGoavroCodec(string(g.b))
	if err != nil {
		return nil, fmt.Errorf("%w: goavro cannot compile it: %w", ErrSchema, err)
	}
	return &Schema{text: text, root: root, codec: codec}, nil
}

// newGoavroCodec turns a goavro panic (it has some on malformed decimals) into an error, should
// one slip past the compiler's checks.
func newGoavroCodec(text string) (c *goavro.Codec, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return goavro.NewCodec(text)
}

// Text returns the schema text exactly as given: it is what a schema registry gets.
func (s *Schema) Text() string { return s.text }

// FullName returns the top-level record's full name, e.g. "io.keysetsync.User".
func (s *Schema) FullName() string { return s.root.name }

// Append appends the Avro binary encoding of rec (a JSON object as decoded by encoding/json,
// numbers as json.Number or float64) to buf. On error it returns buf as it was and a
// *FieldError, which wraps ErrInvalid.
func (s *Schema) Append(buf []byte, rec any, opt MapOptions) ([]byte, error) {
	out, err := s.root.enc(buf, rec, mode{unit: opt.NumericTimeUnit})
	if err != nil {
		return buf, err
	}
	return out, nil
}

// Decode decodes one Avro binary value (no container, no Confluent header) into goavro's
// native form; trailing bytes are an error. Bytes and fixed values are copies, not slices of b,
// which a Kafka client may reuse.
func (s *Schema) Decode(b []byte) (map[string]any, error) {
	v, err := s.decode(bytes.Clone(b))
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

func (s *Schema) decode(b []byte) (any, error) {
	v, rest, err := s.codec.NativeFromBinary(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", s.root.name, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("decode %s: %d trailing bytes", s.root.name, len(rest))
	}
	return v, nil
}

// JSON decodes one Avro binary value into a plain JSON value for people and tools: unions
// unwrapped; timestamp-* as RFC 3339 UTC strings, local-timestamp-* the same without offset;
// date as "YYYY-MM-DD"; time-* as "HH:MM:SS[.fraction]"; decimals as strings with exactly
// scale fraction digits; enums as their symbol; float NaN and infinities as strings. A time
// outside years 0000-9999 stays the number it is encoded as. bytes and fixed become the string
// itself when valid UTF-8, else standard base64 (a reader cannot tell which: Decode gives the
// exact bytes). Except for NaN, infinities and bytes that are not UTF-8, Append maps the result
// back to the same bytes.
func (s *Schema) JSON(b []byte) (map[string]any, error) {
	v, err := s.decode(b)
	if err != nil {
		return nil, err
	}
	return s.root.plain(v).(map[string]any), nil
}

// valueError is a value of the wrong kind or out of range, kept in two parts so that a union
// can list why each branch refused a value without repeating the value.
type valueError struct{ got, why string }

func (e *valueError) Error() string { return "got " + e.got + ", " + e.why }

func badValue(v any, format string, args ...any) error {
	return &FieldError{Err: &valueError{got: describe(v), why: fmt.Sprintf(format, args...)}}
}

// within puts a path segment in front of an error coming up from a child value. The encoder's
// errors are all fresh *FieldErrors, so changing one in place is safe.
func within(err error, segment string) error {
	fe := err.(*FieldError)
	switch {
	case fe.Path == "":
		fe.Path = segment
	case fe.Path[0] == '[':
		fe.Path = segment + fe.Path
	default:
		fe.Path = segment + "." + fe.Path
	}
	return err
}

// defaultErrText words an error about a default, which FieldError.Error would call a record.
func defaultErrText(err error) string {
	fe := err.(*FieldError)
	if fe.Path == "" {
		return fe.Err.Error()
	}
	return "at " + fe.Path + ": " + fe.Err.Error()
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "JSON null"
	case bool:
		return "JSON " + strconv.FormatBool(x)
	case json.Number:
		return "JSON number " + clip(string(x))
	case float64:
		return "JSON number " + strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return "JSON string " + strconv.Quote(clip(x))
	case map[string]any:
		return "JSON object"
	case []any:
		return "JSON array"
	}
	return fmt.Sprintf("a Go %T, not a JSON value", v)
}

func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 37
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

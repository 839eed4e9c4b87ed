package avro_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
)

// decodeJSON decodes as the sync does: numbers stay json.Number.
func decodeJSON(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), "test input %s", s)
	return v
}

// oneField is a record schema whose field "f" has the given type (JSON).
func oneField(typ string) string {
	return `{"type":"record","name":"R","namespace":"t","fields":[{"name":"f","type":` + typ + `}]}`
}

func parse(t testing.TB, text string) *avro.Schema {
	t.Helper()
	s, err := avro.ParseSchema(text)
	require.NoError(t, err)
	return s
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// appendAndShow encodes rec and returns the encoding and JSON's view of it.
func appendAndShow(t *testing.T, s *avro.Schema, rec any, opt avro.MapOptions) ([]byte, map[string]any) {
	t.Helper()
	b, err := s.Append(nil, rec, opt)
	require.NoError(t, err)
	plain, err := s.JSON(b)
	require.NoError(t, err)
	return b, plain
}

// sameAsGoavro checks the encoding against goavro's, the reference, given what goavro decodes
// from it. (Not for maps of several entries, which goavro writes in random order.)
func sameAsGoavro(t *testing.T, schemaText string, b []byte) {
	t.Helper()
	codec, err := goavro.NewCodec(schemaText)
	require.NoError(t, err)
	native, rest, err := codec.NativeFromBinary(b)
	require.NoError(t, err)
	require.Empty(t, rest)
	want, err := codec.BinaryFromNative(nil, native)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(b), "goavro encodes what it decodes the same way")
}

func TestParseSchemaKeepsTextAndName(t *testing.T) {
	text := " {\"type\": \"record\", \"name\": \"Order\", \"namespace\": \"io.x\", \"fields\": []}\n"
	s := parse(t, text)
	assert.Equal(t, text, s.Text(), "byte for byte: it goes to the schema registry")
	assert.Equal(t, "io.x.Order", s.FullName())
	assert.Equal(t, "a.b.C", parse(t, `{"type":"record","name":"a.b.C","namespace":"ignored","fields":[]}`).FullName())
	assert.Equal(t, "C", parse(t, `{"type":"record","name":"C","fields":[]}`).FullName())
	assert.Equal(t, "io.keysetsync.User", parse(t, avro.UserSchema()).FullName())
}

func TestParseSchemaRejects(t *testing.T) {
	rec := func(fields string) string {
		return `{"type":"record","name":"R","namespace":"t","fields":[` + fields + `]}`
	}
	cases := []struct {
		name, schema, want string
	}{
		{"not JSON", `{"type":`, "not JSON"},
		{"two values", `{"type":"record","name":"R","fields":[]} {}`, "more than one JSON value"},
		{"top level not a record", `"string"`, "top-level type is string, want a record"},
		{"top level enum", `{"type":"enum","name":"E","symbols":["A"]}`, "top-level type is enum E, want a record"},
		{"record without fields", `{"type":"record","name":"R"}`, `record R needs a "fields" array`},
		{"record without name", `{"type":"record","fields":[]}`, `record name "" is not a valid Avro full name`},
		{"type object without type", rec(`{"name":"f","type":{"items":"int"}}`), `field f: a type object without "type"`},
		{"field without type", rec(`{"name":"f"}`), `field f: no "type"`},
		{"field name invalid", rec(`{"name":"1f","type":"int"}`), `field 1: name JSON string "1f" is not a valid Avro name`},
		{"field name twice", rec(`{"name":"f","type":"int"},{"name":"f","type":"long"}`), "field f: record t.R has two fields of this name"},
		{"unknown type", rec(`{"name":"f","type":"Adress"}`), `field f: unknown type "Adress"`},
		{"used before defined", rec(`{"name":"a","type":"E"},{"name":"b","type":{"type":"enum","name":"E","symbols":["X"]}}`), `field a: unknown type "E" (a named type must be defined before it is used)`},
		{"defined twice", rec(`{"name":"a","type":{"type":"fixed","name":"F","size":1}},{"name":"b","type":{"type":"fixed","name":"F","size":2}}`), "field b: t.F is defined twice"},
		{"invalid name", rec(`{"name":"a","type":{"type":"fixed","name":"my-fixed","size":1}}`), `fixed name "t.my-fixed" is not a valid Avro full name`},
		{"invalid namespace", rec(`{"name":"a","type":{"type":"fixed","name":"F","namespace":"a..b","size":1}}`), `"a..b.F" is not a valid Avro full name`},
		{"primitive as a name", `{"type":"record","name":"int","fields":[]}`, `record name "int" is a primitive type`},
		{"null namespace inside a namespace", rec(`{"name":"a","type":{"type":"fixed","name":"F","namespace":"","size":1}}`), `fixed F is in the null namespace inside namespace "t", which goavro cannot express`},
		{"type neither name, object nor array", rec(`{"name":"f","type":5}`), "a type is a name, an object or an array (a union), not JSON number 5"},
		{"empty union", rec(`{"name":"f","type":[]}`), "field f: an empty union"},
		{"union in union", rec(`{"name":"f","type":["null",["int"]]}`), "a union directly inside a union"},
		{"union repeats a type", rec(`{"name":"f","type":["string","null","string"]}`), "the union holds string twice"},
		{"union repeats a named type", rec(`{"name":"f","type":[{"type":"enum","name":"E","symbols":["X"]},"E"]}`), "the union holds t.E twice"},
		{"union of long and timestamp", rec(`{"name":"f","type":["long",{"type":"long","logicalType":"timestamp-millis"}]}`), "the union holds long twice"},
		{"array without items", rec(`{"name":"f","type":{"type":"array"}}`), `array without "items"`},
		{"map without values", rec(`{"name":"f","type":{"type":"map","items":"int"}}`), `map without "values"`},
		{"error in array items", rec(`{"name":"f","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"x","type":"nope"}]}}}`), `field f[].x: unknown type "nope"`},
		{"error in map values", rec(`{"name":"f","type":{"type":"map","values":{"type":"bytes","logicalType":"decimal"}}}`), "field f{}: decimal precision must be an integer from 1 to 1000"},
		{"enum without symbols", rec(`{"name":"f","type":{"type":"enum","name":"E"}}`), `enum t.E needs a non-empty "symbols" array`},
		{"enum symbol twice", rec(`{"name":"f","type":{"type":"enum","name":"E","symbols":["A","A"]}}`), `enum t.E: symbol JSON string "A" is not a valid Avro name, or repeated`},
		{"enum symbol invalid", rec(`{"name":"f","type":{"type":"enum","name":"E","symbols":["a b"]}}`), `symbol JSON string "a b" is not a valid Avro name`},
		{"fixed without size", rec(`{"name":"f","type":{"type":"fixed","name":"F"}}`), `fixed t.F needs a positive integer "size"`},
		{"fixed of size 0", rec(`{"name":"f","type":{"type":"fixed","name":"F","size":0}}`), `fixed t.F needs a positive integer "size"`},
		{"decimal on a string", rec(`{"name":"f","type":{"type":"string","logicalType":"decimal","precision":4}}`), "logicalType decimal needs bytes or fixed, not string"},
		{"decimal without precision", rec(`{"name":"f","type":{"type":"bytes","logicalType":"decimal","scale":2}}`), "decimal precision must be an integer from 1 to 1000"},
		{"decimal precision not an integer", rec(`{"name":"f","type":{"type":"bytes","logicalType":"decimal","precision":"9"}}`), "decimal precision must be an integer"},
		{"decimal scale above precision", rec(`{"name":"f","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":5}}`), "decimal scale must be an integer from 0 to the precision (4)"},
		{"decimal larger than its fixed", rec(`{"name":"f","type":{"type":"fixed","name":"F","size":2,"logicalType":"decimal","precision":5}}`), "decimal precision 5 does not fit fixed t.F of 2 bytes (4 digits at most)"},
		{"date on a long", rec(`{"name":"f","type":{"type":"long","logicalType":"date"}}`), "logicalType date needs type int, not long"},
		{"timestamp on an int", rec(`{"name":"f","type":{"type":"int","logicalType":"timestamp-millis"}}`), "logicalType timestamp-millis needs type long, not int"},
		{"aliases not names", rec(`{"name":"f","type":"int","aliases":["ok","not ok"]}`), "field f: aliases must be an array of Avro names"},
		{"aliases not an array", rec(`{"name":"f","type":"int","aliases":"g"}`), "field f: aliases must be an array of Avro names"},
		{"int default not a number", rec(`{"name":"f","type":"int","default":"1"}`), `field f: bad default: got JSON string "1", want a number`},
		{"int default out of range", rec(`{"name":"f","type":"int","default":3000000000}`), "field f: bad default: got JSON number 3000000000, out of range for int (32 bits)"},
		{"string default not a string", rec(`{"name":"f","type":"string","default":1}`), "bad default: got JSON number 1, want a string"},
		{"union default for another branch", rec(`{"name":"f","type":["null","string"],"default":"x"}`), `bad default: a union's default is for its first type, null: got JSON string "x", want null`},
		{"bytes default beyond a byte", rec(`{"name":"f","type":"bytes","default":"€"}`), "want a string of code points 0-255, one per byte"},
		{"fixed default of another size", rec(`{"name":"f","type":{"type":"fixed","name":"F","size":2},"default":"abc"}`), "bad default: got JSON string \"abc\", 3 bytes, want exactly 2"},
		{"enum default not a symbol", rec(`{"name":"f","type":{"type":"enum","name":"E","symbols":["A"]},"default":"B"}`), `bad default: got JSON string "B", want one of "A"`},
		{"record default missing a field", rec(`{"name":"f","type":{"type":"record","name":"S","fields":[{"name":"x","type":"int"}]},"default":{}}`), "field f: bad default: at x: missing, and the schema gives no default"},
		{"array default of wrong items", rec(`{"name":"f","type":{"type":"array","items":"int"},"default":[1,"2"]}`), `field f: bad default: at [1]: got JSON string "2", want a number`},
		{"record that defaults to itself", `{"type":"record","name":"R","fields":[{"name":"me","type":"R","default":{}}]}`, "defaults nested too deep"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := avro.ParseSchema(tc.schema)
			require.ErrorIs(t, err, avro.ErrSchema)
			assert.NotErrorIs(t, err, avro.ErrInvalid, "a schema error is not a record error")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// goavro alone panics on, or refuses, these valid schemas; ParseSchema hands goavro its own
// rewriting of the schema.
func TestParseSchemaAcceptsWhatGoavroMishandles(t *testing.T) {
	cases := []struct{ name, schema, in, want string }{
		{"a second bytes decimal without scale", `{"type":"record","name":"R","fields":[
			{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
			{"name":"b","type":{"type":"bytes","logicalType":"decimal","precision":5}}]}`, `{"a":"1.5","b":7}`, `{"a":"1.50","b":"7"}`},
		{"a fixed default with a code point above 127", `{"type":"record","name":"R","fields":[
			{"name":"a","type":{"type":"fixed","name":"F","size":2},"default":"\u00ffA"}]}`, `{}`, `{"a":"/0E="}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			func() {
				defer func() { _ = recover() }()
				if _, err := goavro.NewCodec(tc.schema); err == nil {
					t.Log("goavro takes it now")
				}
			}()
			_, plain := appendAndShow(t, parse(t, tc.schema), decodeJSON(t, tc.in), avro.MapOptions{})
			assert.JSONEq(t, tc.want, mustMarshal(t, plain))
		})
	}
}

// TestAppendMapsValues covers every mapping rule that succeeds: each value goes into field f
// of the given type, comes back through JSON as want, and goavro re-encodes it to the same
// bytes.
func TestAppendMapsValues(t *testing.T) {
	const (
		tsMillis   = `{"type":"long","logicalType":"timestamp-millis"}`
		tsMicros   = `{"type":"long","logicalType":"timestamp-micros"}`
		localMilli = `{"type":"long","logicalType":"local-timestamp-millis"}`
		localMicro = `{"type":"long","logicalType":"local-timestamp-micros"}`
		date       = `{"type":"int","logicalType":"date"}`
		timeMillis = `{"type":"int","logicalType":"time-millis"}`
		timeMicros = `{"type":"long","logicalType":"time-micros"}`
		uuid       = `{"type":"string","logicalType":"uuid"}`
		money      = `{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`
		fixedMoney = `{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":18,"scale":4}`
		bigDecimal = `{"type":"bytes","logicalType":"decimal","precision":40,"scale":5}`
	)
	seconds, micros := avro.MapOptions{NumericTimeUnit: time.Second}, avro.MapOptions{NumericTimeUnit: time.Microsecond}
	cases := []struct {
		name, typ, in string
		opt           avro.MapOptions
		want          any
		notGoavro     string // why goavro cannot be the reference for this case
	}{
		{name: "null", typ: `"null"`, in: `null`, want: nil},
		{name: "true", typ: `"boolean"`, in: `true`, want: true},
		{name: "false", typ: `"boolean"`, in: `false`, want: false},
		{name: "int", typ: `"int"`, in: `42`, want: int32(42)},
		{name: "int minimum", typ: `"int"`, in: `-2147483648`, want: int32(math.MinInt32)},
		{name: "int from a string", typ: `"int"`, in: `"-7"`, want: int32(-7)},
		{name: "int written with a fraction of zero", typ: `"int"`, in: `3.0`, want: int32(3)},
		{name: "int with an exponent", typ: `"int"`, in: `1e3`, want: int32(1000)},
		{name: "int with a negative exponent", typ: `"int"`, in: `1200e-2`, want: int32(12)},
		{name: "long beyond 2^53", typ: `"long"`, in: `9007199254740993`, want: int64(9007199254740993)},
		{name: "long maximum", typ: `"long"`, in: `9223372036854775807`, want: int64(math.MaxInt64)},
		{name: "long minimum with an exponent", typ: `"long"`, in: `-9.223372036854775808e18`, want: int64(math.MinInt64)},
		{name: "long id as a string", typ: `"long"`, in: `"9223372036854775807"`, want: int64(math.MaxInt64)},
		{name: "float", typ: `"float"`, in: `0.1`, want: 0.1},
		{name: "float from a string", typ: `"float"`, in: `"-2.5e3"`, want: -2500.0},
		{name: "float largest", typ: `"float"`, in: `3.4028234663852886e38`, want: 3.4028235e38}, // float32's shortest text
		{name: "double", typ: `"double"`, in: `1e300`, want: 1e300},
		{name: "double from an integer", typ: `"double"`, in: `5`, want: 5.0},
		{name: "double negative zero", typ: `"double"`, in: `-0.0`, want: math.Copysign(0, -1)},
		{name: "string", typ: `"string"`, in: `"Zoë\n\u0000"`, want: "Zoë\n\x00"},
		{name: "string from a number keeps its text", typ: `"string"`, in: `1.50e3`, want: "1.50e3"},
		{name: "string from an integer", typ: `"string"`, in: `12345678901234567890`, want: "12345678901234567890"},
		{name: "bytes", typ: `"bytes"`, in: `"raw ✓"`, want: "raw ✓"},
		{name: "empty bytes", typ: `"bytes"`, in: `""`, want: ""},
		{name: "fixed", typ: `{"type":"fixed","name":"F","size":3}`, in: `"éa"`, want: "éa"},
		{name: "enum", typ: `{"type":"enum","name":"E","symbols":["A","B","C"]}`, in: `"C"`, want: "C"},
		{name: "array", typ: `{"type":"array","items":"int"}`, in: `[1, "2", 3.0]`, want: []any{int32(1), int32(2), int32(3)}},
		{name: "empty array", typ: `{"type":"array","items":"int"}`, in: `[]`, want: []any{}},
		{name: "array of arrays", typ: `{"type":"array","items":{"type":"array","items":"string"}}`, in: `[["a"],[],["b","c"]]`, want: []any{[]any{"a"}, []any{}, []any{"b", "c"}}},
		{name: "map", typ: `{"type":"map","values":"long"}`, in: `{"k":"5"}`, want: map[string]any{"k": int64(5)}},
		{name: "empty map", typ: `{"type":"map","values":"long"}`, in: `{}`, want: map[string]any{}},
		{name: "map of maps", typ: `{"type":"map","values":{"type":"map","values":"boolean"}}`, in: `{"a":{"b":true}}`, want: map[string]any{"a": map[string]any{"b": true}}},
		{name: "uuid kept as given", typ: uuid, in: `"6F1C2C0E-8d0a-4e43-9a43-5c3b2a8f1e77"`, want: "6F1C2C0E-8d0a-4e43-9a43-5c3b2a8f1e77"},
		{name: "timestamp-millis", typ: tsMillis, in: `"2024-01-02T03:04:05Z"`, want: "2024-01-02T03:04:05Z"},
		{name: "timestamp-millis from an offset, sub-ms dropped", typ: tsMillis, in: `"2024-01-02T03:04:05.123999999+02:00"`, want: "2024-01-02T01:04:05.123Z"},
		{name: "timestamp-millis before 1970, sub-ms dropped towards the past", typ: tsMillis, in: `"1969-12-31T23:59:59.9995Z"`, want: "1969-12-31T23:59:59.999Z"},
		{name: "timestamp-millis from epoch ms", typ: tsMillis, in: `1704164645123`, want: "2024-01-02T03:04:05.123Z"},
		{name: "timestamp-millis from epoch ms in a string", typ: tsMillis, in: `"1704164645123"`, want: "2024-01-02T03:04:05.123Z"},
		{name: "timestamp-millis negative epoch", typ: tsMillis, in: `-1`, want: "1969-12-31T23:59:59.999Z"},
		{name: "timestamp-millis from epoch seconds", typ: tsMillis, in: `1704164645`, opt: seconds, want: "2024-01-02T03:04:05Z"},
		{name: "timestamp-millis from fractional epoch seconds", typ: tsMillis, in: `1704164645.5`, opt: seconds, want: "2024-01-02T03:04:05.5Z"},
		{name: "timestamp-millis from epoch seconds with an exponent", typ: tsMillis, in: `1.7041646451239e9`, opt: seconds, want: "2024-01-02T03:04:05.123Z"},
		{name: "timestamp-millis from epoch µs, rounded down", typ: tsMillis, in: `1704164645123999`, opt: micros, want: "2024-01-02T03:04:05.123Z"},
		{name: "timestamp-millis from negative epoch µs, rounded down", typ: tsMillis, in: `-1`, opt: micros, want: "1969-12-31T23:59:59.999Z"},
		{name: "timestamp-millis from tiny negative seconds", typ: tsMillis, in: `-1e-50`, opt: seconds, want: "1969-12-31T23:59:59.999Z"},
		{name: "timestamp-millis zero with a huge exponent", typ: tsMillis, in: `0e999999999`, opt: seconds, want: "1970-01-01T00:00:00Z"},
		{name: "timestamp-millis from epoch minutes", typ: tsMillis, in: `28402744`, opt: avro.MapOptions{NumericTimeUnit: time.Minute}, want: "2024-01-02T03:04:00Z"},
		{name: "timestamp-millis in a unit that does not divide", typ: tsMillis, in: `3`, opt: avro.MapOptions{NumericTimeUnit: 700 * time.Microsecond}, want: "1970-01-01T00:00:00.002Z"},
		{name: "timestamp-millis beyond year 9999 stays a number", typ: tsMillis, in: `253402300800000`, want: int64(253402300800000)},
		{name: "timestamp-micros", typ: tsMicros, in: `"2024-01-02T03:04:05.123456789Z"`, want: "2024-01-02T03:04:05.123456Z"},
		{name: "timestamp-micros from epoch µs", typ: tsMicros, in: `1704164645123456`, want: "2024-01-02T03:04:05.123456Z"},
		{name: "timestamp-micros from epoch seconds", typ: tsMicros, in: `"1704164645.000001"`, opt: seconds, want: "2024-01-02T03:04:05.000001Z"},
		{name: "timestamp-micros year 1", typ: tsMicros, in: `"0001-01-01T00:00:00Z"`, want: "0001-01-01T00:00:00Z"},
		{name: "local-timestamp-millis without offset", typ: localMilli, in: `"2024-01-02T03:04:05.5"`, want: "2024-01-02T03:04:05.5"},
		{name: "local-timestamp-millis with an offset, to UTC", typ: localMilli, in: `"2024-01-02T03:04:05+01:00"`, want: "2024-01-02T02:04:05"},
		{name: "local-timestamp-millis from a number", typ: localMilli, in: `1000`, want: "1970-01-01T00:00:01"},
		{name: "local-timestamp-micros", typ: localMicro, in: `"2024-01-02T03:04:05.000007"`, want: "2024-01-02T03:04:05.000007"},
		{name: "local-timestamp-micros from seconds", typ: localMicro, in: `2`, opt: seconds, want: "1970-01-01T00:00:02"},
		{name: "date", typ: date, in: `"2024-02-29"`, want: "2024-02-29"},
		{name: "date from days", typ: date, in: `19782`, want: "2024-02-29"},
		{name: "date before 1970 from a string of days", typ: date, in: `"-1"`, want: "1969-12-31"},
		{name: "date year 1", typ: date, in: `"0001-01-01"`, want: "0001-01-01"},
		{name: "time-millis", typ: timeMillis, in: `"23:59:59.999"`, want: "23:59:59.999"},
		{name: "time-millis midnight", typ: timeMillis, in: `"00:00:00"`, want: "00:00:00"},
		{name: "time-millis sub-ms dropped", typ: timeMillis, in: `"12:00:00.1239"`, want: "12:00:00.123"},
		{name: "time-millis from ms", typ: timeMillis, in: `1000`, want: "00:00:01"},
		{name: "time-micros", typ: timeMicros, in: `"12:34:56.123456"`, want: "12:34:56.123456"},
		{name: "time-micros from µs", typ: timeMicros, in: `86399999999`, want: "23:59:59.999999"},
		{name: "decimal", typ: money, in: `19.99`, want: "19.99"},
		{name: "decimal from a string", typ: money, in: `"-0.5"`, want: "-0.50"},
		{name: "decimal zero", typ: money, in: `0`, want: "0.00"},
		{name: "decimal with an exponent", typ: money, in: `1e2`, want: "100.00"},
		{name: "decimal with zeros past the scale", typ: money, in: `1.2300`, want: "1.23"},
		{name: "decimal largest", typ: money, in: `99999999.99`, want: "99999999.99"},
		{name: "decimal -1.28, a power of two", typ: money, in: `-1.28`, want: "-1.28"},
		{name: "decimal beyond 18 digits", typ: bigDecimal, in: `"-12345678901234567890123456789012345.12345"`, want: "-12345678901234567890123456789012345.12345"},
		{name: "decimal beyond 18 digits, positive", typ: bigDecimal, in: `12345678901234567890123456789012345.1`, want: "12345678901234567890123456789012345.10000"},
		{name: "decimal in fixed", typ: fixedMoney, in: `"-1.5"`, want: "-1.5000"},
		{name: "decimal in fixed, largest", typ: fixedMoney, in: `"99999999999999.9999"`, want: "99999999999999.9999"},
		{name: "decimal in fixed, zero", typ: fixedMoney, in: `0`, want: "0.0000", notGoavro: "goavro cannot encode a zero fixed decimal"},
		{name: "decimal beyond 18 digits in fixed", typ: `{"type":"fixed","name":"F","size":20,"logicalType":"decimal","precision":40,"scale":1}`, in: `"-123456789012345678901234567890.5"`, want: "-123456789012345678901234567890.5"},
		{name: "decimal beyond 18 digits in fixed, positive", typ: `{"type":"fixed","name":"F","size":20,"logicalType":"decimal","precision":40,"scale":1}`, in: `123456789012345678901234567890`, want: "123456789012345678901234567890.0"},
		{name: "decimal in a large fixed", typ: `{"type":"fixed","name":"F","size":20,"logicalType":"decimal","precision":40,"scale":1}`, in: `-1`, want: "-1.0"},
		{name: "unknown logical type", typ: `{"type":"string","logicalType":"email"}`, in: `"a@b.c"`, want: "a@b.c"},
		{name: "timestamp-nanos, unknown to Avro 1.11", typ: `{"type":"long","logicalType":"timestamp-nanos"}`, in: `5`, want: int64(5)},
		{name: "uuid on fixed (Avro 1.12)", typ: `{"type":"fixed","name":"U","size":16,"logicalType":"uuid"}`, in: `"0123456789abcdef"`, want: "0123456789abcdef"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := oneField(tc.typ)
			s := parse(t, text)
			b, plain := appendAndShow(t, s, decodeJSON(t, `{"f":`+tc.in+`}`), tc.opt)
			assert.Equal(t, tc.want, plain["f"])
			if tc.notGoavro == "" {
				sameAsGoavro(t, text, b)
			}
			// And what JSON shows maps back to the same bytes.
			again, err := s.Append(nil, decodeJSON(t, mustMarshal(t, plain)), avro.MapOptions{})
			require.NoError(t, err)
			assert.Equal(t, b, again)
		})
	}
}

func pointerTo[T any](v T) *T { return &v }

func mustMarshal(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestAppendRejects covers every error of the mapping: the path, the message, ErrInvalid, and
// the buffer left as it was.
func TestAppendRejects(t *testing.T) {
	const (
		tsMillis   = `{"type":"long","logicalType":"timestamp-millis"}`
		date       = `{"type":"int","logicalType":"date"}`
		timeMillis = `{"type":"int","logicalType":"time-millis"}`
		money      = `{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}`
		nested     = `{"type":"record","name":"A","fields":[{"name":"b","type":{"type":"record","name":"B","fields":[{"name":"zip","type":"string"}]}}]}`
	)
	many := `{"type":"enum","name":"E","symbols":["S0","S1","S2","S3","S4","S5","S6","S7","S8","S9","S10","S11"]}`
	cases := []struct {
		name, typ, in string
		opt           avro.MapOptions
		path, want    string
	}{
		{"null for a string", `"string"`, `null`, avro.MapOptions{}, "f", "got JSON null, want a string"},
		{"null for null only", `"null"`, `0`, avro.MapOptions{}, "f", "got JSON number 0, want null"},
		{"boolean from a string", `"boolean"`, `"true"`, avro.MapOptions{}, "f", `got JSON string "true", want true or false`},
		{"int with a fraction", `"int"`, `1.5`, avro.MapOptions{}, "f", "got JSON number 1.5, want an integer"},
		{"int too large", `"int"`, `2147483648`, avro.MapOptions{}, "f", "got JSON number 2147483648, out of range for int (32 bits)"},
		{"int from a word", `"int"`, `"seven"`, avro.MapOptions{}, "f", `got JSON string "seven", want an integer, or a string holding one`},
		{"int from a decimal string", `"int"`, `"1.0"`, avro.MapOptions{}, "f", "want an integer, or a string holding one"},
		{"int from a boolean", `"int"`, `true`, avro.MapOptions{}, "f", "got JSON true, want an integer"},
		{"long too large", `"long"`, `9223372036854775808`, avro.MapOptions{}, "f", "out of range for a long (64 bits)"},
		{"long too large with an exponent", `"long"`, `1e19`, avro.MapOptions{}, "f", "out of range for a long (64 bits)"},
		{"long with a huge exponent", `"long"`, `1e999999999999`, avro.MapOptions{}, "f", "out of range for a long (64 bits)"},
		{"long too large in a string", `"long"`, `"99999999999999999999"`, avro.MapOptions{}, "f", "out of range for a long (64 bits)"},
		{"long with a tiny fraction", `"long"`, `1.0000000000000000001`, avro.MapOptions{}, "f", "want an integer"},
		{"float too large", `"float"`, `1e39`, avro.MapOptions{}, "f", "out of range for a float (32 bits)"},
		{"double too large", `"double"`, `1e400`, avro.MapOptions{}, "f", "got JSON number 1e400, out of range for a double (64 bits)"},
		{"float from a word", `"float"`, `"NaN"`, avro.MapOptions{}, "f", `got JSON string "NaN", want a number`},
		{"double from hex", `"double"`, `"0x10"`, avro.MapOptions{}, "f", "want a number"},
		{"double from an array", `"double"`, `[]`, avro.MapOptions{}, "f", "got JSON array, want a number"},
		{"string from a boolean", `"string"`, `false`, avro.MapOptions{}, "f", "got JSON false, want a string"},
		{"string from an object", `"string"`, `{}`, avro.MapOptions{}, "f", "got JSON object, want a string"},
		{"bytes from a number", `"bytes"`, `5`, avro.MapOptions{}, "f", "got JSON number 5, want a string"},
		{"fixed too long", `{"type":"fixed","name":"F","size":3}`, `"abcd"`, avro.MapOptions{}, "f", `got JSON string "abcd", 4 bytes, want exactly 3`},
		{"fixed counts UTF-8 bytes", `{"type":"fixed","name":"F","size":3}`, `"éé"`, avro.MapOptions{}, "f", "4 bytes, want exactly 3"},
		{"enum not a symbol", `{"type":"enum","name":"E","symbols":["A","B"]}`, `"a"`, avro.MapOptions{}, "f", `got JSON string "a", want one of "A", "B"`},
		{"enum lists ten symbols", many, `"X"`, avro.MapOptions{}, "f", `want one of "S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", ... (2 more)`},
		{"array from an object", `{"type":"array","items":"int"}`, `{}`, avro.MapOptions{}, "f", "got JSON object, want a JSON array"},
		{"array item", `{"type":"array","items":"int"}`, `[1,2,"x"]`, avro.MapOptions{}, "f[2]", `got JSON string "x"`},
		{"array in an array", `{"type":"array","items":{"type":"array","items":"int"}}`, `[[],[0,true]]`, avro.MapOptions{}, "f[1][1]", "got JSON true, want an integer"},
		{"map from an array", `{"type":"map","values":"int"}`, `[]`, avro.MapOptions{}, "f", "got JSON array, want a JSON object"},
		{"map value", `{"type":"map","values":"int"}`, `{"a":1,"b.c":"x"}`, avro.MapOptions{}, `f["b.c"]`, `got JSON string "x"`},
		{"record from a string", nested, `"x"`, avro.MapOptions{}, "f", `got JSON string "x", want a JSON object (record t.A)`},
		{"record field three levels down", nested, `{"b":{"zip":true}}`, avro.MapOptions{}, "f.b.zip", "got JSON true, want a string"},
		{"record field missing", nested, `{"b":{}}`, avro.MapOptions{}, "f.b.zip", "missing, and the schema gives no default"},
		{"union without null", `["string","long"]`, `null`, avro.MapOptions{}, "f", "got JSON null, want one of string, long (the union has no null)"},
		{"union no branch takes", `["null","long","boolean"]`, `"abc"`, avro.MapOptions{}, "f", `got JSON string "abc", which no branch of the union takes (long: want an integer, or a string holding one; boolean: want true or false)`},
		{"union of records no branch takes", `[{"type":"record","name":"P","fields":[{"name":"p","type":"int"}]},{"type":"record","name":"Q","fields":[{"name":"q","type":"int"}]}]`, `{"q":"x"}`, avro.MapOptions{}, "f", `which no branch of the union takes (record t.P: field p: missing, and the schema gives no default; record t.Q: field q: got JSON string "x", want an integer, or a string holding one)`},
		{"union of null and one type gives its error and path", `["null",` + nested + `]`, `{"b":{"zip":[]}}`, avro.MapOptions{}, "f.b.zip", "got JSON array, want a string"},
		{"uuid", `{"type":"string","logicalType":"uuid"}`, `"6f1c2c0e8d0a4e439a435c3b2a8f1e77"`, avro.MapOptions{}, "f", "want a UUID (8-4-4-4-12 hex digits)"},
		{"uuid not hex", `{"type":"string","logicalType":"uuid"}`, `"6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e7g"`, avro.MapOptions{}, "f", "want a UUID"},
		{"uuid from a number", `{"type":"string","logicalType":"uuid"}`, `5`, avro.MapOptions{}, "f", "got JSON number 5, want a UUID"},
		{"timestamp with a space", tsMillis, `"2024-01-02 03:04:05Z"`, avro.MapOptions{}, "f", "want an RFC 3339 time such as 2024-01-02T03:04:05Z, or an epoch number"},
		{"timestamp without offset", tsMillis, `"2024-01-02T03:04:05"`, avro.MapOptions{}, "f", "want an RFC 3339 time"},
		{"timestamp from a boolean", tsMillis, `true`, avro.MapOptions{}, "f", "got JSON true, want an RFC 3339 time or an epoch number"},
		{"timestamp beyond a long", tsMillis, `1e30`, avro.MapOptions{}, "f", "got JSON number 1e30, out of range for timestamp-millis"},
		{"timestamp in seconds beyond a long of ms", tsMillis, `9223372036854775807`, avro.MapOptions{NumericTimeUnit: time.Second}, "f", "out of range for timestamp-millis"},
		{"timestamp with a huge exponent", tsMillis, `1e999999999`, avro.MapOptions{NumericTimeUnit: time.Second}, "f", "out of range for timestamp-millis"},
		{"date that does not exist", date, `"2023-02-29"`, avro.MapOptions{}, "f", "want a date YYYY-MM-DD, or a number of days since 1970-01-01"},
		{"date with slashes", date, `"2024/01/02"`, avro.MapOptions{}, "f", "want a date YYYY-MM-DD"},
		{"date as a timestamp", date, `"2024-01-02T00:00:00Z"`, avro.MapOptions{}, "f", "want a date YYYY-MM-DD"},
		{"date with a fraction", date, `1.5`, avro.MapOptions{}, "f", "want an integer"},
		{"date beyond an int", date, `2147483648`, avro.MapOptions{}, "f", "out of range for date (32 bits)"},
		{"time at 24h", timeMillis, `"24:00:00"`, avro.MapOptions{}, "f", "want a time of day HH:MM:SS[.fraction], or an integer from 0 to 86399999 (ms since midnight)"},
		{"time without seconds", timeMillis, `"12:00"`, avro.MapOptions{}, "f", "want a time of day"},
		{"time with an empty fraction", timeMillis, `"12:00:00."`, avro.MapOptions{}, "f", "want a time of day"},
		{"time of 24h of ms", timeMillis, `86400000`, avro.MapOptions{}, "f", "want a time of day"},
		{"time negative", timeMillis, `-1`, avro.MapOptions{}, "f", "want a time of day"},
		{"time-micros of 24h", `{"type":"long","logicalType":"time-micros"}`, `86400000000`, avro.MapOptions{}, "f", "an integer from 0 to 86399999999 (µs since midnight)"},
		{"decimal needing rounding", money, `1.234`, avro.MapOptions{}, "f", "got JSON number 1.234, 3 fraction digits, more than the scale 2 allows"},
		{"decimal too large", money, `123456789`, avro.MapOptions{}, "f", "got JSON number 123456789, 9 digits before the point, more than decimal(10,2) allows (8)"},
		{"decimal tiny", money, `"1e-999999999"`, avro.MapOptions{}, "f", "999999999 fraction digits"},
		{"decimal huge", money, `1e999999999`, avro.MapOptions{}, "f", "1000000000 digits before the point"},
		{"decimal from a word", money, `"ten"`, avro.MapOptions{}, "f", `got JSON string "ten", want a decimal number`},
		{"decimal from a boolean", money, `true`, avro.MapOptions{}, "f", "got JSON true, want a decimal number"},
		{"decimal in fixed too large", `{"type":"fixed","name":"F","size":2,"logicalType":"decimal","precision":4}`, `-10000`, avro.MapOptions{}, "f", "5 digits before the point, more than decimal(4,0) allows (4)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := parse(t, oneField(tc.typ))
			buf := []byte("prefix")
			out, err := s.Append(buf, decodeJSON(t, `{"f":`+tc.in+`}`), tc.opt)
			var fe *avro.FieldError
			require.ErrorAs(t, err, &fe)
			require.ErrorIs(t, err, avro.ErrInvalid)
			assert.Equal(t, tc.path, fe.Path)
			assert.True(t, strings.HasPrefix(err.Error(), "field "+tc.path+": "), err.Error())
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, "prefix", string(out), "a failed append leaves the buffer as it was")
		})
	}
}

func TestAppendRejectsRecordItself(t *testing.T) {
	s := parse(t, oneField(`"int"`))
	for _, tc := range []struct {
		in   any
		path string
		want string
	}{
		{[]any{}, "", "record: got JSON array, want a JSON object (record t.R)"},
		{nil, "", "record: got JSON null, want a JSON object (record t.R)"},
		{map[string]any{"f": 5}, "f", "field f: got a Go int, not a JSON value, want an integer"},
		{map[string]any{}, "f", "field f: missing, and the schema gives no default"},
	} {
		_, err := s.Append(nil, tc.in, avro.MapOptions{})
		var fe *avro.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, tc.path, fe.Path)
		assert.EqualError(t, err, tc.want)
		assert.ErrorIs(t, err, avro.ErrInvalid)
	}
}

// An explicit null is a value: it does not fall back to the default.
func TestExplicitNullIsNotAbsence(t *testing.T) {
	s := parse(t, `{"type":"record","name":"R","fields":[{"name":"s","type":"string","default":"x"},{"name":"n","type":["null","string"],"default":null}]}`)
	_, plain := appendAndShow(t, s, decodeJSON(t, `{}`), avro.MapOptions{})
	assert.Equal(t, map[string]any{"s": "x", "n": nil}, plain)
	_, plain = appendAndShow(t, s, decodeJSON(t, `{"n":null}`), avro.MapOptions{})
	assert.Equal(t, map[string]any{"s": "x", "n": nil}, plain)
	_, err := s.Append(nil, decodeJSON(t, `{"s":null}`), avro.MapOptions{})
	require.ErrorIs(t, err, avro.ErrInvalid)
	assert.EqualError(t, err, "field s: got JSON null, want a string")
}

func TestDefaults(t *testing.T) {
	text := `{"type":"record","name":"D","namespace":"t","fields":[
		{"name":"null", "type":["null","string"], "default":null},
		{"name":"unionFirst", "type":["string","null"], "default":"first"},
		{"name":"unionRecord", "type":[{"type":"record","name":"P","fields":[{"name":"x","type":"int"},{"name":"y","type":"string","default":"dy"}]},"null"], "default":{"x":1}},
		{"name":"bool", "type":"boolean", "default":true},
		{"name":"int", "type":"int", "default":-7},
		{"name":"long", "type":"long", "default":9007199254740993},
		{"name":"float", "type":"float", "default":1.5},
		{"name":"double", "type":"double", "default":-2.5e-3},
		{"name":"string", "type":"string", "default":"ß"},
		{"name":"bytes", "type":"bytes", "default":"\u00ff\u0000A"},
		{"name":"fixed", "type":{"type":"fixed","name":"F","size":2}, "default":"\u00e9A"},
		{"name":"enum", "type":{"type":"enum","name":"E","symbols":["A","B"]}, "default":"B"},
		{"name":"array", "type":{"type":"array","items":"int"}, "default":[1,2]},
		{"name":"map", "type":{"type":"map","values":"P"}, "default":{"k":{"x":3,"y":"e"}}},
		{"name":"record", "type":"P", "default":{"x":4}},
		{"name":"decimal", "type":{"type":"bytes","logicalType":"decimal","precision":5,"scale":2}, "default":"\u0001\u0000"},
		{"name":"fixedDecimal", "type":{"type":"fixed","name":"M","size":2,"logicalType":"decimal","precision":4,"scale":1}, "default":"\u00ff\u00ff"},
		{"name":"timestamp", "type":{"type":"long","logicalType":"timestamp-millis"}, "default":1500},
		{"name":"date", "type":{"type":"int","logicalType":"date"}, "default":1},
		{"name":"time", "type":{"type":"int","logicalType":"time-millis"}, "default":60000}
	]}`
	s := parse(t, text)
	// Options do not apply to defaults: a timestamp's default counts the type's own unit.
	_, plain := appendAndShow(t, s, decodeJSON(t, `{}`), avro.MapOptions{NumericTimeUnit: time.Second})
	assert.Equal(t, map[string]any{
		"null":         nil,
		"unionFirst":   "first",
		"unionRecord":  map[string]any{"x": int32(1), "y": "dy"},
		"bool":         true,
		"int":          int32(-7),
		"long":         int64(9007199254740993),
		"float":        1.5,
		"double":       -2.5e-3,
		"string":       "ß",
		"bytes":        "/wBB", // 0xff 0x00 'A': code points as bytes, not UTF-8; shown as base64
		"fixed":        "6UE=", // 0xe9 'A', base64 as it is not UTF-8
		"enum":         "B",
		"array":        []any{int32(1), int32(2)},
		"map":          map[string]any{"k": map[string]any{"x": int32(3), "y": "e"}},
		"record":       map[string]any{"x": int32(4), "y": "dy"},
		"decimal":      "2.56", // unscaled 0x0100
		"fixedDecimal": "-0.1",
		"timestamp":    "1970-01-01T00:00:01.5Z",
		"date":         "1970-01-02",
		"time":         "00:01:00",
	}, plain)
	native, err := s.Decode(mustAppend(t, s, `{}`))
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0x00, 'A'}, native["bytes"])
	assert.Equal(t, []byte{0xe9, 'A'}, native["fixed"])
}

func mustAppend(t testing.TB, s *avro.Schema, in string) []byte {
	t.Helper()
	b, err := s.Append(nil, decodeJSON(t, in), avro.MapOptions{})
	require.NoError(t, err)
	return b
}

func TestAliases(t *testing.T) {
	s := parse(t, `{"type":"record","name":"R","fields":[
		{"name":"createdAt","type":"long","aliases":["created_at","creation"]},
		{"name":"n","type":"int","aliases":["count"],"default":0}]}`)
	for in, want := range map[string]map[string]any{
		`{"createdAt":1}`:                  {"createdAt": int64(1), "n": int32(0)},
		`{"created_at":2,"count":3}`:       {"createdAt": int64(2), "n": int32(3)},
		`{"creation":3}`:                   {"createdAt": int64(3), "n": int32(0)},
		`{"creation":4,"createdAt":5}`:     {"createdAt": int64(5), "n": int32(0)}, // the name first
		`{"creation":6,"created_at":7}`:    {"createdAt": int64(7), "n": int32(0)}, // then aliases in order
		`{"createdAt":8,"n":9,"count":10}`: {"createdAt": int64(8), "n": int32(9)},
	} {
		_, plain := appendAndShow(t, s, decodeJSON(t, in), avro.MapOptions{})
		assert.Equal(t, want, plain, in)
	}
	_, err := s.Append(nil, decodeJSON(t, `{"created":1}`), avro.MapOptions{})
	assert.EqualError(t, err, "field createdAt: missing, and the schema gives no default")
}

// A union takes the first non-null branch, in schema order, that takes the value. Decode shows
// which, by goavro's name for it.
func TestUnionTakesTheFirstBranchThatFits(t *testing.T) {
	cases := []struct {
		typ, in string
		branch  string
	}{
		{`["null","long","string"]`, `5`, "long"},
		{`["null","long","string"]`, `"5"`, "long"},
		{`["null","long","string"]`, `"5a"`, "string"},
		{`["null","long","string"]`, `5.5`, "string"},
		{`["null","string","long"]`, `5`, "string"},
		{`["long","double"]`, `5.5`, "double"},
		{`["long","double"]`, `5.0`, "long"},
		{`["int","long"]`, `3000000000`, "long"},
		{`["boolean","string",{"type":"array","items":"int"},{"type":"map","values":"int"}]`, `[1]`, "array"},
		{`["boolean","string",{"type":"array","items":"int"},{"type":"map","values":"int"}]`, `{"a":1}`, "map"},
		{`["boolean","string",{"type":"array","items":"int"},{"type":"map","values":"int"}]`, `true`, "boolean"},
		{`[{"type":"enum","name":"E","symbols":["A"]},"string"]`, `"A"`, "t.E"},
		{`[{"type":"enum","name":"E","symbols":["A"]},"string"]`, `"B"`, "string"},
		{`[{"type":"record","name":"P","fields":[{"name":"p","type":"int"}]},{"type":"record","name":"Q","fields":[{"name":"q","type":"int"}]}]`, `{"q":1}`, "t.Q"},
		{`[{"type":"record","name":"P","fields":[{"name":"p","type":"int"}]},{"type":"record","name":"Q","fields":[{"name":"q","type":"int"}]}]`, `{"p":1,"q":1}`, "t.P"},
		{`["null",{"type":"long","logicalType":"timestamp-millis"},"string"]`, `"2024-01-02T03:04:05Z"`, "long.timestamp-millis"},
		{`["null",{"type":"long","logicalType":"timestamp-millis"},"string"]`, `"yesterday"`, "string"},
		{`["null",{"type":"fixed","name":"F","size":2},"bytes"]`, `"ab"`, "t.F"},
		{`["null",{"type":"fixed","name":"F","size":2},"bytes"]`, `"abc"`, "bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.typ+" "+tc.in, func(t *testing.T) {
			text := oneField(tc.typ)
			s := parse(t, text)
			b := mustAppend(t, s, `{"f":`+tc.in+`}`)
			native, err := s.Decode(b)
			require.NoError(t, err)
			require.IsType(t, map[string]any{}, native["f"])
			assert.Contains(t, native["f"], tc.branch)
			if !strings.Contains(tc.typ, "map") {
				sameAsGoavro(t, text, b)
			}
		})
	}
}

// The integrator needs goavro's names of union branches to read Decode's values: full names for
// named types, type.logicalType for the logical types goavro knows, and the underlying type for
// those it does not (local-timestamp-*, uuid).
func TestDecodeUnionBranchNamesAreGoavros(t *testing.T) {
	cases := []struct {
		typ, in, branch string
		value           any
	}{
		{`{"type":"long","logicalType":"timestamp-millis"}`, `"2024-01-02T03:04:05.006Z"`, "long.timestamp-millis", time.Date(2024, 1, 2, 3, 4, 5, 6e6, time.UTC)},
		{`{"type":"long","logicalType":"timestamp-micros"}`, `"2024-01-02T03:04:05.000006Z"`, "long.timestamp-micros", time.Date(2024, 1, 2, 3, 4, 5, 6e3, time.UTC)},
		{`{"type":"long","logicalType":"local-timestamp-millis"}`, `"1970-01-01T00:00:01"`, "long", int64(1000)},
		{`{"type":"long","logicalType":"local-timestamp-micros"}`, `"1970-01-01T00:00:01"`, "long", int64(1000000)},
		{`{"type":"int","logicalType":"date"}`, `"1970-01-03"`, "int.date", time.Date(1970, 1, 3, 0, 0, 0, 0, time.UTC)},
		{`{"type":"int","logicalType":"time-millis"}`, `"00:00:01.5"`, "int.time-millis", 1500 * time.Millisecond},
		{`{"type":"long","logicalType":"time-micros"}`, `"00:00:00.000002"`, "long.time-micros", 2 * time.Microsecond},
		{`{"type":"string","logicalType":"uuid"}`, `"6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77"`, "string", "6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77"},
		{`{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}`, `"-1.5"`, "bytes.decimal", big.NewRat(-3, 2)},
		{`{"type":"fixed","name":"M","size":4,"logicalType":"decimal","precision":4,"scale":2}`, `"-1.5"`, "t.M", big.NewRat(-3, 2)},
		{`{"type":"fixed","name":"M","size":4,"logicalType":"decimal","precision":4,"scale":2}`, `0`, "t.M", big.NewRat(0, 1)},
		{`{"type":"record","name":"P","fields":[{"name":"p","type":"int"}]}`, `{"p":1}`, "t.P", map[string]any{"p": int32(1)}},
		{`{"type":"enum","name":"E","symbols":["A"]}`, `"A"`, "t.E", "A"},
		{`{"type":"fixed","name":"F","size":1}`, `"a"`, "t.F", []byte("a")},
		{`{"type":"array","items":"int"}`, `[1]`, "array", []any{int32(1)}},
		{`{"type":"map","values":"int"}`, `{"a":1}`, "map", map[string]any{"a": int32(1)}},
		{`"float"`, `1.5`, "float", float32(1.5)},
		{`"bytes"`, `"b"`, "bytes", []byte("b")},
	}
	for _, tc := range cases {
		t.Run(tc.branch, func(t *testing.T) {
			s := parse(t, oneField(`["null",`+tc.typ+`]`))
			native, err := s.Decode(mustAppend(t, s, `{"f":`+tc.in+`}`))
			require.NoError(t, err)
			want := map[string]any{tc.branch: tc.value}
			if r, ok := tc.value.(*big.Rat); ok {
				got := native["f"].(map[string]any)[tc.branch].(*big.Rat)
				assert.Zero(t, r.Cmp(got), "%v", got)
				return
			}
			assert.Equal(t, want, native["f"])
		})
	}
}

func TestNestedRecordsArraysAndMaps(t *testing.T) {
	text := `{"type":"record","name":"Order","namespace":"t","fields":[
		{"name":"customer","type":{"type":"record","name":"Customer","fields":[
			{"name":"address","type":{"type":"record","name":"Address","fields":[
				{"name":"geo","type":{"type":"record","name":"Geo","fields":[{"name":"lat","type":"double"},{"name":"lon","type":"double"}]}},
				{"name":"zip","type":"string"}]}}]}},
		{"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[{"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
		{"name":"byWarehouse","type":{"type":"map","values":{"type":"array","items":"Item"}}}]}`
	s := parse(t, text)
	in := `{"customer":{"address":{"geo":{"lat":47.37,"lon":8.54},"zip":"8001"}},
		"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}],
		"byWarehouse":{"zrh":[{"sku":"a","qty":1}]}}`
	b, plain := appendAndShow(t, s, decodeJSON(t, in), avro.MapOptions{})
	assert.Equal(t, map[string]any{
		"customer":    map[string]any{"address": map[string]any{"geo": map[string]any{"lat": 47.37, "lon": 8.54}, "zip": "8001"}},
		"items":       []any{map[string]any{"sku": "a", "qty": int32(1)}, map[string]any{"sku": "b", "qty": int32(2)}},
		"byWarehouse": map[string]any{"zrh": []any{map[string]any{"sku": "a", "qty": int32(1)}}},
	}, plain)
	sameAsGoavro(t, text, b)

	for bad, path := range map[string]string{
		`{"customer":{"address":{"geo":{"lat":"north","lon":8.54},"zip":"8001"}},"items":[],"byWarehouse":{}}`:                                                      "customer.address.geo.lat",
		`{"customer":{"address":{"geo":{"lat":1,"lon":1},"zip":"8001"}},"items":[{"sku":"a","qty":1},{"sku":"b","qty":2},{"sku":"c","qty":"3x"}],"byWarehouse":{}}`: "items[2].qty",
		`{"customer":{"address":{"geo":{"lat":1,"lon":1},"zip":"8001"}},"items":[],"byWarehouse":{"zrh":[{"sku":"a","qty":1},{"qty":1}]}}`:                          `byWarehouse["zrh"][1].sku`,
		`{"customer":{"address":{"geo":{"lat":1,"lon":1}}},"items":[],"byWarehouse":{}}`:                                                                            "customer.address.zip",
	} {
		_, err := s.Append(nil, decodeJSON(t, bad), avro.MapOptions{})
		var fe *avro.FieldError
		require.ErrorAs(t, err, &fe, bad)
		assert.Equal(t, path, fe.Path)
		assert.ErrorIs(t, err, avro.ErrInvalid)
	}
}

// Named types are referenced by name later in the schema, resolved in the enclosing namespace
// first, then in the null namespace, as Java and goavro resolve them.
func TestNamedTypeReferences(t *testing.T) {
	text := `{"type":"record","name":"Outer","namespace":"a.b","fields":[
		{"name":"inner","type":{"type":"record","name":"Inner","fields":[{"name":"v","type":"int"}]}},
		{"name":"short","type":"Inner"},
		{"name":"full","type":"a.b.Inner"},
		{"name":"other","type":{"type":"record","name":"Other","namespace":"c","fields":[
			{"name":"i","type":"a.b.Inner"},
			{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}}]}},
		{"name":"e2","type":"c.E"},
		{"name":"dotted","type":{"type":"fixed","name":"d.F","size":2}},
		{"name":"f2","type":["null","d.F"]},
		{"name":"asObject","type":{"type":"Inner"}}]}`
	s := parse(t, text)
	in := `{"inner":{"v":1},"short":{"v":2},"full":{"v":3},"other":{"i":{"v":4},"e":"Y"},"e2":"X","dotted":"ab","f2":"cd","asObject":{"v":5}}`
	b, plain := appendAndShow(t, s, decodeJSON(t, in), avro.MapOptions{})
	assert.Equal(t, map[string]any{
		"inner": map[string]any{"v": int32(1)}, "short": map[string]any{"v": int32(2)}, "full": map[string]any{"v": int32(3)},
		"other": map[string]any{"i": map[string]any{"v": int32(4)}, "e": "Y"}, "e2": "X", "dotted": "ab", "f2": "cd",
		"asObject": map[string]any{"v": int32(5)},
	}, plain)
	sameAsGoavro(t, text, b)
	native, err := s.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"d.F": []byte("cd")}, native["f2"])

	// From inside namespace n, "F" is n.F when there is one, else the F of the null namespace.
	text = `{"type":"record","name":"Top","fields":[
		{"name":"a","type":{"type":"fixed","name":"F","size":1}},
		{"name":"b","type":{"type":"record","name":"n.S","fields":[
			{"name":"c","type":["null","F"]},
			{"name":"d","type":{"type":"fixed","name":"G","size":2}},
			{"name":"e","type":{"type":"fixed","name":"F","size":3}},
			{"name":"f","type":["null","F"]}]}}]}`
	s = parse(t, text)
	native, err = s.Decode(mustAppend(t, s, `{"a":"x","b":{"c":"y","d":"zz","e":"www","f":"vvv"}}`))
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"F": []byte("y")}, native["b"].(map[string]any)["c"])
	assert.Equal(t, map[string]any{"n.F": []byte("vvv")}, native["b"].(map[string]any)["f"])
}

func TestRecursiveSchema(t *testing.T) {
	text := `{"type":"record","name":"Node","namespace":"t","fields":[
		{"name":"v","type":"int"},
		{"name":"children","type":{"type":"array","items":"Node"},"default":[]},
		{"name":"next","type":["null","Node"],"default":null}]}`
	s := parse(t, text)
	in := `{"v":1,"children":[{"v":2},{"v":3,"children":[{"v":4,"next":{"v":5}}]}],"next":{"v":6,"next":{"v":7}}}`
	b, plain := appendAndShow(t, s, decodeJSON(t, in), avro.MapOptions{})
	leaf := func(v int32) map[string]any { return map[string]any{"v": v, "children": []any{}, "next": nil} }
	five := leaf(5)
	four := leaf(4)
	four["next"] = five
	three := leaf(3)
	three["children"] = []any{four}
	seven := leaf(7)
	six := leaf(6)
	six["next"] = seven
	assert.Equal(t, map[string]any{"v": int32(1), "children": []any{leaf(2), three}, "next": six}, plain)
	sameAsGoavro(t, text, b)

	_, err := s.Append(nil, decodeJSON(t, `{"v":1,"children":[{"v":2},{"v":3,"children":[{"v":4,"next":{"v":"five"}}]}]}`), avro.MapOptions{})
	var fe *avro.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "children[1].children[0].next.v", fe.Path)
}

// Maps are written in key order: the same record gives the same bytes every time, which
// `keysetsync verify` relies on (goavro writes them in Go's random map order).
func TestMapsEncodeInKeyOrder(t *testing.T) {
	s := parse(t, oneField(`{"type":"map","values":"int"}`))
	rec := decodeJSON(t, `{"f":{"b":2,"a":1,"c":3,"aa":4,"":5}}`)
	first, err := s.Append(nil, rec, avro.MapOptions{})
	require.NoError(t, err)
	want := []byte{10} // one block of 5 entries
	for _, kv := range []struct {
		k string
		v byte
	}{{"", 5}, {"a", 1}, {"aa", 4}, {"b", 2}, {"c", 3}} {
		want = append(append(append(want, byte(2*len(kv.k))), kv.k...), 2*kv.v)
	}
	assert.Equal(t, append(want, 0), first)
	for range 50 {
		again, err := s.Append(nil, rec, avro.MapOptions{})
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
}

// TestAppendMatchesPythonAvro compares the encoding with bytes written by the Apache Avro
// reference implementation (python3-avro): testdata/custom/gen.py wrote the .hex files.
func TestAppendMatchesPythonAvro(t *testing.T) {
	s := parse(t, readFile(t, filepath.Join("testdata", "custom", "order.avsc")))
	inputs, err := filepath.Glob(filepath.Join("testdata", "custom", "order-*.json"))
	require.NoError(t, err)
	require.Len(t, inputs, 4)
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			b := mustAppend(t, s, readFile(t, in))
			want := strings.TrimSpace(readFile(t, strings.TrimSuffix(in, ".json")+".hex"))
			assert.Equal(t, want, hex.EncodeToString(b))
		})
	}
}

// TestOrderRoundTrip: Decode gives goavro's native values back, and JSON's plain form maps back
// to the same bytes.
func TestOrderRoundTrip(t *testing.T) {
	s := parse(t, readFile(t, filepath.Join("testdata", "custom", "order.avsc")))
	b := mustAppend(t, s, readFile(t, filepath.Join("testdata", "custom", "order-full.json")))
	native, err := s.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, "6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77", native["id"])
	assert.Equal(t, int64(9007199254740993), native["number"])
	assert.Equal(t, "PAID", native["status"])
	assert.Equal(t, map[string]any{"city": "Zürich", "zip": "8001"}, native["customer"].(map[string]any)["address"])
	assert.Equal(t, map[string]any{"io.keysetsync.test.Address": map[string]any{"city": "Basel", "zip": "4051"}}, native["billingAddress"])
	item := native["items"].([]any)[0].(map[string]any)
	assert.Zero(t, big.NewRat(1999, 100).Cmp(item["price"].(*big.Rat)))
	assert.Zero(t, big.NewRat(-3, 2).Cmp(item["discount"].(map[string]any)["io.keysetsync.test.Money"].(*big.Rat)))
	assert.Equal(t, time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC), native["createdAt"])
	assert.Equal(t, map[string]any{"long.timestamp-micros": time.Date(2024, 1, 2, 3, 4, 5, 678901e3, time.UTC)}, native["updatedAt"])
	assert.Equal(t, map[string]any{"int.date": time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)}, native["shipDate"])
	assert.Equal(t, map[string]any{"int.time-millis": 9*time.Hour + 30*time.Minute + 250*time.Millisecond}, native["pickupTime"])
	assert.Equal(t, map[string]any{"a": "", "channel": "partner", "gift-wrap": "yes"}, native["attrs"])
	assert.Equal(t, map[string]any{"long": int64(42)}, native["ref"])
	assert.Equal(t, map[string]any{"io.keysetsync.test.Checksum": []byte("abcd")}, native["checksum"])
	assert.Equal(t, []byte("raw ✓"), native["payload"])
	assert.Equal(t, float32(4.5), native["rating"])

	// Not the other inputs: payload's default, 0xff 0x01, is not UTF-8, so JSON shows it in
	// base64.
	for _, name := range []string{"order-full.json", "order-numbers.json"} {
		b := mustAppend(t, s, readFile(t, filepath.Join("testdata", "custom", name)))
		plain, err := s.JSON(b)
		require.NoError(t, err)
		assert.Equal(t, b, mustAppend(t, s, mustMarshal(t, plain)), name)
	}
}

// With plain encoding/json decoding, numbers are float64: the same bytes as with json.Number
// while they are exact in a float64.
func TestAppendTakesFloat64Numbers(t *testing.T) {
	s := parse(t, readFile(t, filepath.Join("testdata", "custom", "order.avsc")))
	for _, name := range []string{"order-full.json", "order-minimal.json", "order-nulls.json"} {
		text := readFile(t, filepath.Join("testdata", "custom", name))
		var rec any
		require.NoError(t, json.Unmarshal([]byte(text), &rec))
		b, err := s.Append(nil, rec, avro.MapOptions{})
		require.NoError(t, err, name)
		assert.Equal(t, mustAppend(t, s, text), b, name)
	}
	s = parse(t, oneField(`["null","long","double","string"]`))
	for in, want := range map[float64]any{2: int64(2), 2.5: 2.5, -1e300: -1e300, 1 << 62: int64(1 << 62)} {
		_, plain := appendAndShow(t, s, map[string]any{"f": in}, avro.MapOptions{})
		assert.Equal(t, want, plain["f"], "%v", in)
	}
	s = parse(t, oneField(`{"type":"long","logicalType":"timestamp-millis"}`))
	_, plain := appendAndShow(t, s, map[string]any{"f": 1704164645.5}, avro.MapOptions{NumericTimeUnit: time.Second})
	assert.Equal(t, "2024-01-02T03:04:05.5Z", plain["f"])
	s = parse(t, oneField(`{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}`))
	_, plain = appendAndShow(t, s, map[string]any{"f": 0.1}, avro.MapOptions{})
	assert.Equal(t, "0.10", plain["f"], "a double's shortest text, not its binary value")
	s = parse(t, oneField(`"float"`))
	_, err := s.Append(nil, map[string]any{"f": 3.5e38}, avro.MapOptions{})
	assert.ErrorContains(t, err, "out of range for a float")
}

// The playground's users, mapped with the User schema, encode exactly as the hand-written
// Codec encodes the equivalent avro.User: a --schema user.avsc run writes the same topic.
func TestUserSchemaMatchesHandWrittenCodec(t *testing.T) {
	s := parse(t, avro.UserSchema())
	c, err := avro.NewCodec()
	require.NoError(t, err)
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	updated := time.Date(2024, 6, 7, 8, 9, 10, 0, time.UTC)
	cases := []struct {
		name, json string
		user       avro.User
	}{
		{"every field", `{"id":"6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77","name":"Zoë Ğüneş","email":"zoe@example.com","address":"1 Main St\nApt 2\nSpringfield","company":"ACME","job":"Engineer","createdAt":"2024-01-02T03:04:05Z","updatedAt":"2024-06-07T08:09:10Z"}`,
			avro.User{ID: "6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77", Name: pointerTo("Zoë Ğüneş"), Email: pointerTo("zoe@example.com"), Address: pointerTo("1 Main St\nApt 2\nSpringfield"), Company: pointerTo("ACME"), Job: pointerTo("Engineer"), CreatedAt: &created, UpdatedAt: updated}},
		{"nulls", `{"id":"x","name":null,"email":null,"address":null,"company":null,"job":null,"createdAt":null,"updatedAt":"2024-06-07T08:09:10Z"}`,
			avro.User{ID: "x", UpdatedAt: updated}},
		{"optional fields missing", `{"id":"y","updatedAt":"2024-06-07T08:09:10Z"}`, avro.User{ID: "y", UpdatedAt: updated}},
		{"createdAt missing, empty strings", `{"id":"z","name":"","email":"","job":"","updatedAt":"1970-01-01T00:00:00Z"}`,
			avro.User{ID: "z", Name: pointerTo(""), Email: pointerTo(""), Job: pointerTo(""), UpdatedAt: time.Unix(0, 0).UTC()}},
		{"before 1970", `{"id":"w","company":"c","createdAt":"1969-07-20T20:17:40Z","updatedAt":"1969-12-31T23:59:59Z"}`,
			avro.User{ID: "w", Company: pointerTo("c"), CreatedAt: pointerTo(time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC)), UpdatedAt: time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := c.Append([]byte("p"), &tc.user)
			require.NoError(t, err)
			got, err := s.Append([]byte("p"), decodeJSON(t, tc.json), avro.MapOptions{})
			require.NoError(t, err)
			assert.Equal(t, want, got)
			u, err := c.Decode(got[1:])
			require.NoError(t, err)
			assert.Equal(t, tc.user, u)
		})
	}
}

func TestJSONShowsWhatTextCannotHold(t *testing.T) {
	s := parse(t, `{"type":"record","name":"R","fields":[{"name":"b","type":"bytes"},{"name":"d","type":"double"},{"name":"x","type":"float"},
		{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},{"name":"day","type":{"type":"int","logicalType":"date"}},
		{"name":"t","type":{"type":"int","logicalType":"time-millis"}},{"name":"l","type":{"type":"long","logicalType":"local-timestamp-millis"}}]}`)
	// Written by hand: bytes 0xff, NaN, -Inf, year 10000, a date in year -1, a time past 24h, and
	// a local timestamp in year 10000.
	b := []byte{2, 0xff}
	b = append(b, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f)                                        // NaN
	b = append(b, 0, 0, 0x80, 0xff)                                                    // float32 -Inf
	b = appendLongForTest(b, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()) // ts
	b = appendLongForTest(b, -719893)                                                  // day: year -1
	b = appendLongForTest(b, 25*3600*1000)                                             // t: 25:00:00
	b = appendLongForTest(b, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	plain, err := s.JSON(b)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"b": "/w==", "d": "NaN", "x": "-Infinity",
		"ts": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), "day": int32(-719893), "t": int32(25 * 3600 * 1000),
		"l": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(),
	}, plain)
}

func appendLongForTest(b []byte, v int64) []byte {
	u := uint64((v << 1) ^ (v >> 63))
	for u >= 0x80 {
		b = append(b, byte(u)|0x80)
		u >>= 7
	}
	return append(b, byte(u))
}

func TestDecode(t *testing.T) {
	s := parse(t, oneField(`"bytes"`))
	b := mustAppend(t, s, `{"f":"abc"}`)
	native, err := s.Decode(b)
	require.NoError(t, err)
	b[1] = 'X' // a Kafka client reuses its buffers
	assert.Equal(t, []byte("abc"), native["f"], "Decode copies")

	_, err = s.Decode(append(b, 0))
	assert.ErrorContains(t, err, "decode t.R: 1 trailing bytes")
	_, err = s.JSON(append(b, 0, 0))
	assert.ErrorContains(t, err, "decode t.R: 2 trailing bytes")
	_, err = s.Decode(b[:2])
	assert.ErrorContains(t, err, "decode t.R")
	_, err = s.JSON(nil)
	assert.ErrorContains(t, err, "decode t.R")
}

func TestSchemaIsSafeForConcurrentUse(t *testing.T) {
	s := parse(t, readFile(t, filepath.Join("testdata", "custom", "order.avsc")))
	text := readFile(t, filepath.Join("testdata", "custom", "order-full.json"))
	want := mustAppend(t, s, text)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			rec := decodeJSON(t, text)
			for range 200 {
				b, err := s.Append(nil, rec, avro.MapOptions{})
				if err == nil && !bytes.Equal(b, want) {
					err = errors.New("different bytes")
				}
				if err == nil {
					_, err = s.JSON(b)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func ExampleSchema_Append() {
	s, err := avro.ParseSchema(`{"type":"record","name":"Order","namespace":"io.x","fields":[
		{"name":"id","type":"long"},
		{"name":"total","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
		{"name":"paidAt","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null}]}`)
	if err != nil {
		panic(err)
	}
	dec := json.NewDecoder(strings.NewReader(`{"id":"9007199254740993","total":19.9,"paidAt":1704164645}`))
	dec.UseNumber()
	var rec any
	if err := dec.Decode(&rec); err != nil {
		panic(err)
	}
	b, err := s.Append(nil, rec, avro.MapOptions{NumericTimeUnit: time.Second})
	if err != nil {
		panic(err)
	}
	plain, err := s.JSON(b)
	if err != nil {
		panic(err)
	}
	out, _ := json.Marshal(plain)
	fmt.Printf("%x\n%s\n", b, out)

	_, err = s.Append(nil, map[string]any{"id": json.Number("1"), "total": json.Number("0.001")}, avro.MapOptions{})
	fmt.Println(err)
	// Output:
	// 82808080808080200407c60290e286829963
	// {"id":9007199254740993,"paidAt":"2024-01-02T03:04:05Z","total":"19.90"}
	// field total: got JSON number 0.001, 3 fraction digits, more than the scale 2 allows
}

// FuzzSchemaAppend maps arbitrary JSON into the order schema. It must never panic; an error
// is a *FieldError wrapping ErrInvalid and leaves the buffer alone; an encoding decodes, its
// JSON maps back to the same bytes, and goavro re-encodes what it decodes to the same bytes.
func FuzzSchemaAppend(f *testing.F) {
	dir := filepath.Join("testdata", "custom")
	schemaText := readFile(f, filepath.Join(dir, "order.avsc"))
	s := parse(f, schemaText)
	codec, err := goavro.NewCodec(schemaText)
	require.NoError(f, err)
	inputs, err := filepath.Glob(filepath.Join(dir, "order-*.json"))
	require.NoError(f, err)
	for _, in := range inputs {
		f.Add([]byte(readFile(f, in)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var rec any
		if dec.Decode(&rec) != nil {
			return
		}
		prefix := []byte{0xAA}
		for _, opt := range []avro.MapOptions{{NumericTimeUnit: time.Second}, {}} {
			b, err := s.Append(prefix, rec, opt)
			if err != nil {
				var fe *avro.FieldError
				require.ErrorAs(t, err, &fe)
				require.ErrorIs(t, err, avro.ErrInvalid)
				require.Equal(t, prefix, b)
				return
			}
			require.Equal(t, prefix, b[:1])
			b = b[1:]
			native, err := s.Decode(b)
			require.NoError(t, err)
			plain, err := s.JSON(b)
			require.NoError(t, err)
			if payload, _ := native["payload"].([]byte); utf8.Valid(payload) {
				text, err := json.Marshal(plain)
				require.NoError(t, err)
				again, err := s.Append(nil, decodeJSON(t, string(text)), avro.MapOptions{})
				require.NoError(t, err, "%s", text)
				require.Equal(t, b, again, "%s", text)
			}
			// goavro writes maps in random order, and cannot write a zero fixed decimal.
			if attrs, _ := native["attrs"].(map[string]any); len(attrs) <= 1 {
				if want, err := codec.BinaryFromNative(nil, native); err == nil {
					require.Equal(t, want, b)
				}
			}
		}
	})
}

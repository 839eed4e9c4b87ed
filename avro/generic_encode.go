package avro

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

// mode is what stays the same through the encoding of one value.
type mode struct {
	unit time.Duration // MapOptions.NumericTimeUnit
	// defaults: encoding a field's schema default, which the specification reads otherwise
	// than JSON records: a union's is for its first branch, a bytes or fixed one is code
	// points 0-255, a number is for the underlying type, whatever its logical type.
	defaults bool
	depth    int // of defaults within defaults: stops a record that defaults to itself
}

// enc appends the encoding of the JSON value v as t. On error what it returns past len(b)
// is garbage.
func (t *typ) enc(b []byte, v any, m mode) ([]byte, error) {
	if m.defaults && (t.kind <= kString || t.kind == kFixed) {
		return t.encDefault(b, v)
	}
	switch t.kind {
	case kNull:
		if v != nil {
			return b, badValue(v, "want null")
		}
		return b, nil
	case kBoolean:
		x, ok := v.(bool)
		if !ok {
			return b, badValue(v, "want true or false")
		} else if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case kInt, kLong: // the same zigzag varint
		n, err := t.integer(v, m.unit)
		return appendLong(b, n), err
	case kFloat:
		f, err := t.float(v)
		return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f))), err
	case kDouble:
		f, err := t.float(v)
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), err
	case kString:
		s, err := t.string(v)
		return appendString(b, s), err
	case kBytes, kFixed:
		if t.logical == lDecimal {
			return t.decimal(b, v)
		}
		s, ok := v.(string)
		switch {
		case !ok:
			return b, badValue(v, "want a string")
		case t.kind == kBytes:
			return appendString(b, s), nil
		case len(s) != t.size:
			return b, badValue(v, "%d bytes, want exactly %d", len(s), t.size)
		}
		return append(b, s...), nil
	case kEnum:
		if s, ok := v.(string); ok {
			if i := slices.Index(t.symbols, s); i >= 0 {
				return appendLong(b, int64(i)), nil
			}
		}
		return b, badValue(v, "want one of %s", symbolList(t.symbols))
	case kArray:
		a, ok := v.([]any)
		if !ok {
			return b, badValue(v, "want a JSON array")
		}
		if len(a) > 0 { // one block, then the empty block that ends the array
			b = appendLong(b, int64(len(a)))
		}
		for i, x := range a {
			var err error
			if b, err = t.items.enc(b, x, m); err != nil {
				return b, within(err, "["+strconv.Itoa(i)+"]")
			}
		}
		return append(b, 0), nil
	case kMap:
		obj, ok := v.(map[string]any)
		if !ok {
			return b, badValue(v, "want a JSON object")
		}
		if len(obj) > 0 {
			b = appendLong(b, int64(len(obj)))
		}
		var small [16]string // no allocation for the usual small maps
		keys := small[:0]
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			var err error
			if b, err = t.items.enc(appendString(b, k), obj[k], m); err != nil {
				return b, within(err, "["+strconv.Quote(k)+"]")
			}
		}
		return append(b, 0), nil
	case kRecord:
		return t.record(b, v, m)
	}
	return t.union(b, v, m)
}

func (t *typ) record(b []byte, v any, m mode) ([]byte, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return b, badValue(v, "want a JSON object (record %s)", t.name)
	}
	for i := range t.fields {
		f := &t.fields[i]
		x, found := obj[f.name]
		for _, a := range f.aliases {
			if found {
				break
			}
			x, found = obj[a]
		}
		var err error
		switch {
		case found:
			b, err = f.typ.enc(b, x, m)
		case !f.hasDefault:
			return b, &FieldError{Path: f.name, Err: errors.New("missing, and the schema gives no default")}
		case !m.defaults:
			b = append(b, f.def...)
		case m.depth > 32: // a default's own record, missing fields: their defaults, unencoded yet
			return b, &FieldError{Path: f.name, Err: errors.New("defaults nested too deep (does a record default to itself?)")}
		default:
			b, err = f.typ.enc(b, f.rawDefault, mode{defaults: true, depth: m.depth + 1})
		}
		if err != nil {
			return b, within(err, f.name)
		}
	}
	return b, nil
}

func (t *typ) union(b []byte, v any, m mode) ([]byte, error) {
	if m.defaults {
		out, err := t.branches[0].enc(appendLong(b, 0), v, m)
		if err != nil {
			return b, &FieldError{Err: fmt.Errorf("a union's default is for its first type, %s: %s", t.branches[0].label(), defaultErrText(err))}
		}
		return out, nil
	}
	if v == nil {
		if t.null < 0 {
			return b, badValue(v, "want %s (the union has no null)", t.branchList())
		}
		return appendLong(b, int64(t.null)), nil
	}
	var tried []*typ
	var errs []error
	for i, br := range t.branches {
		if br.kind == kNull {
			continue
		}
		// Trying writes after len(b) only: a failed branch leaves b as it was.
		out, err := br.enc(appendLong(b, int64(i)), v, m)
		if err == nil {
			return out, nil
		}
		tried, errs = append(tried, br), append(errs, err)
	}
	if len(errs) == 1 { // ["null", X]: X's own error, with its path
		return b, errs[0]
	}
	why := make([]string, len(errs))
	for i, err := range errs {
		fe := err.(*FieldError)
		if ve, ok := fe.Err.(*valueError); ok && fe.Path == "" {
			why[i] = tried[i].label() + ": " + ve.why
		} else {
			why[i] = tried[i].label() + ": " + fe.Error()
		}
	}
	return b, badValue(v, "which no branch of the union takes (%s)", strings.Join(why, "; "))
}

// encDefault encodes a primitive or fixed schema default.
func (t *typ) encDefault(b []byte, v any) ([]byte, error) {
	switch t.kind {
	case kInt, kLong, kFloat, kDouble:
		if _, ok := v.(json.Number); !ok {
			return b, badValue(v, "want a number")
		}
		underlying := typ{kind: t.kind}
		return underlying.enc(b, v, mode{})
	case kString:
		if _, ok := v.(string); !ok {
			return b, badValue(v, "want a string")
		}
	case kBytes, kFixed:
		s, ok := v.(string)
		raw := make([]byte, 0, len(s))
		for _, r := range s {
			ok = ok && r <= 255
			raw = append(raw, byte(r))
		}
		switch {
		case !ok:
			return b, badValue(v, "want a string of code points 0-255, one per byte")
		case t.kind == kBytes:
			return append(appendLong(b, int64(len(raw))), raw...), nil
		case len(raw) != t.size:
			return b, badValue(v, "%d bytes, want exactly %d", len(raw), t.size)
		}
		return append(b, raw...), nil
	}
	return t.enc(b, v, mode{}) // string, null, boolean: as in records
}

func symbolList(symbols []string) string {
	const show = 10
	q := make([]string, 0, show+1)
	for i, s := range symbols {
		if i == show {
			q = append(q, fmt.Sprintf("... (%d more)", len(symbols)-show))
			break
		}
		q = append(q, strconv.Quote(s))
	}
	return strings.Join(q, ", ")
}

func (t *typ) branchList() string {
	labels := make([]string, len(t.branches))
	for i, b := range t.branches {
		labels[i] = b.label()
	}
	return "one of " + strings.Join(labels, ", ")
}

// integer reads an int or a long, logical types included.
func (t *typ) integer(v any, unit time.Duration) (int64, error) {
	switch t.logical {
	case lDate:
		if s, ok := v.(string); ok {
			if d, err := time.Parse(time.DateOnly, s); err == nil {
				return d.Unix() / 86400, nil
			}
			if _, err := strconv.ParseInt(s, 10, 64); err != nil {
				return 0, badValue(v, "want a date YYYY-MM-DD, or a number of days since 1970-01-01")
			}
		}
	case lTimeMillis, lTimeMicros:
		return t.timeOfDay(v)
	case lTimestampMillis, lTimestampMicros, lLocalMillis, lLocalMicros:
		return t.timestamp(v, unit)
	}
	n, err := toInt(v)
	if err == nil && t.kind == kInt && (n < math.MinInt32 || n > math.MaxInt32) {
		return 0, badValue(v, "out of range for %s (32 bits)", t.label())
	}
	return n, err
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n, nil
		}
		num, ok := scanNumber(string(x))
		if !ok {
			break
		}
		// 1.0 and 1e3 are integers too: decoded as float64 they would be.
		d := num.decimal()
		switch {
		case d.exp < 0:
			return 0, badValue(v, "want an integer")
		case len(d.digits)+d.exp > 19:
			return 0, badValue(v, "out of range for a long (64 bits)")
		}
		u, _ := strconv.ParseUint(d.digits, 10, 64) // "" for zero: 0
		for range d.exp {
			u *= 10 // at most 19 digits: no overflow
		}
		switch {
		case d.neg && u <= 1<<63:
			return -int64(u), nil
		case !d.neg && u <= math.MaxInt64:
			return int64(u), nil
		}
		return 0, badValue(v, "out of range for a long (64 bits)")
	case float64:
		switch {
		case x != math.Trunc(x):
			return 0, badValue(v, "want an integer")
		case x < -(1<<63) || x >= 1<<63:
			return 0, badValue(v, "out of range for a long (64 bits)")
		}
		return int64(x), nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if errors.Is(err, strconv.ErrRange) {
			return 0, badValue(v, "out of range for a long (64 bits)")
		} else if err != nil {
			return 0, badValue(v, "want an integer, or a string holding one")
		}
		return n, nil
	}
	return 0, badValue(v, "want an integer")
}

// numText is a JSON number literal in parts.
type numText struct {
	neg           bool
	intPart, frac string
	exp           int
}

// scanNumber checks JSON number syntax, stricter than strconv's (no "NaN", "0x10", "1_000",
// "+1"), and splits the number, without allocating.
func scanNumber(s string) (numText, bool) {
	var n numText
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if strings.HasPrefix(s, "-") {
		n.neg, i = true, 1
	}
	j := digits(i)
	if n.intPart = s[i:j]; j == i || j-i > 1 && s[i] == '0' {
		return n, false
	}
	if i = j; i < len(s) && s[i] == '.' {
		if j = digits(i + 1); j == i+1 {
			return n, false
		}
		n.frac, i = s[i+1:j], j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		neg := i < len(s) && s[i] == '-'
		if i < len(s) && (s[i] == '-' || s[i] == '+') {
			i++
		}
		if j = digits(i); j == i {
			return n, false
		}
		for ; i < j; i++ {
			if n.exp < 1e9 { // saturates, far beyond any long or precision
				n.exp = n.exp*10 + int(s[i]-'0')
			}
		}
		if neg {
			n.exp = -n.exp
		}
	}
	return n, i == len(s)
}

// decimalText is a number as ±digits × 10^exp, digits without leading or trailing zeros ("" for
// zero).
type decimalText struct {
	neg    bool
	digits string
	exp    int
}

func (n numText) decimal() decimalText {
	all := strings.TrimLeft(n.intPart+n.frac, "0")
	digits := strings.TrimRight(all, "0")
	if digits == "" {
		return decimalText{}
	}
	return decimalText{neg: n.neg, digits: digits, exp: n.exp - len(n.frac) + len(all) - len(digits)}
}

func (t *typ) float(v any) (float64, error) {
	bits := 64
	if t.kind == kFloat {
		bits = 32
	}
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case json.Number, string:
		s, ok := x.(string)
		if !ok {
			s = string(x.(json.Number))
		}
		if _, ok := scanNumber(s); !ok {
			return 0, badValue(v, "want a number")
		}
		var err error
		if f, err = strconv.ParseFloat(s, bits); err != nil { // only a range error after scanNumber
			return 0, badValue(v, "out of range for a %s (%d bits)", t.kind, bits)
		}
	default:
		return 0, badValue(v, "want a number")
	}
	if bits == 32 && math.Abs(f) >= 0x1p128-0x1p103 { // what float32(f) would round to infinity
		return 0, badValue(v, "out of range for a float (32 bits)")
	}
	return f, nil
}

func (t *typ) string(v any) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = string(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return "", badValue(v, "want a string")
	}
	if t.logical == lUUID && !isUUID(s) {
		return "", badValue(v, "want a UUID (8-4-4-4-12 hex digits)")
	}
	return s, nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// decimal appends a decimal's unscaled value in big-endian two's complement: as few bytes as
// hold it for bytes (as goavro and Java write it), sign-extended to the size for fixed. A value
// that would need rounding is refused: an amount silently changed is worse than a record
// refused.
func (t *typ) decimal(b []byte, v any) ([]byte, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		s = x
	case float64: // its shortest form: 0.1 is 0.1, not the binary double next to it
		s = strconv.FormatFloat(x, 'g', -1, 64)
	}
	num, ok := scanNumber(s)
	if !ok {
		return b, badValue(v, "want a decimal number")
	}
	d := num.decimal()
	if d.digits != "" && -d.exp > t.scale {
		return b, badValue(v, "%d fraction digits, more than the scale %d allows", -d.exp, t.scale)
	}
	if intDigits := len(d.digits) + d.exp; d.digits != "" && intDigits > t.precision-t.scale {
		return b, badValue(v, "%d digits before the point, more than decimal(%d,%d) allows (%d)", intDigits, t.precision, t.scale, t.precision-t.scale)
	}
	zeros := d.exp + t.scale
	if len(d.digits)+zeros <= 18 { // fits an int64: no big.Int
		var n int64
		for _, c := range []byte(d.digits) {
			n = n*10 + int64(c-'0')
		}
		for range zeros {
			n *= 10
		}
		if d.neg {
			n = -n
		}
		size := t.size
		if t.kind == kBytes {
			for size = 1; size < 8 && (n < -1<<(8*size-1) || n >= 1<<(8*size-1)); size++ {
			}
			b = appendLong(b, int64(size))
		}
		for i := size - 1; i >= 0; i-- {
			b = append(b, byte(n>>min(8*i, 63))) // beyond 8 bytes: the sign
		}
		return b, nil
	}
	n, _ := new(big.Int).SetString(d.digits+strings.Repeat("0", zeros), 10)
	if d.neg {
		n.Neg(n)
	}
	size := t.size
	if t.kind == kBytes {
		magnitude := n // what the bits besides the sign hold: n, or -n-1 when negative
		if n.Sign() < 0 {
			magnitude = new(big.Int).Not(n)
		}
		size = magnitude.BitLen()/8 + 1
		b = appendLong(b, int64(size))
	}
	if n.Sign() < 0 {
		n.Add(n, new(big.Int).Lsh(big.NewInt(1), uint(8*size)))
	}
	return append(b, n.FillBytes(make([]byte, size))...), nil
}

func (t *typ) timestamp(v any, numericUnit time.Duration) (int64, error) {
	unit := t.unit()
	if s, ok := v.(string); ok {
		if _, isNum := scanNumber(s); !isNum {
			tm, err := time.Parse(time.RFC3339Nano, s)
			if err != nil && (t.logical == lLocalMillis || t.logical == lLocalMicros) {
				tm, err = time.Parse("2006-01-02T15:04:05.999999999", s)
			}
			if err != nil {
				return 0, badValue(v, "want an RFC 3339 time such as 2024-01-02T03:04:05Z, or an epoch number")
			}
			// Seconds and nanoseconds apart, as goavro does: no overflow in years 0-9999, and
			// what is below the unit is dropped towards the past.
			return tm.Unix()*int64(time.Second/unit) + int64(time.Duration(tm.Nanosecond())/unit), nil
		}
	}
	if numericUnit <= 0 {
		numericUnit = unit
	}
	return t.epoch(v, numericUnit, unit)
}

// epoch converts a count of from since the epoch to a count of to, rounding towards the past.
func (t *typ) epoch(v any, from, to time.Duration) (int64, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		s = x
	case float64:
		if n := int64(x); float64(n) == x && math.Abs(x) < 1<<53 {
			if r, ok := scaleInt(n, from, to); ok {
				return r, nil
			}
		}
		s = strconv.FormatFloat(x, 'g', -1, 64)
	default:
		return 0, badValue(v, "want an RFC 3339 time or an epoch number")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if r, ok := scaleInt(n, from, to); ok {
			return r, nil
		}
	}
	num, ok := scanNumber(s)
	if !ok {
		return 0, badValue(v, "want an RFC 3339 time or an epoch number")
	}
	// Exact arithmetic, the magnitude bounded first so that 1e999999999 costs nothing.
	d := num.decimal()
	switch mag := len(d.digits) + d.exp; {
	case d.digits == "":
		return 0, nil
	case mag > 40:
		return 0, badValue(v, "out of range for %s", t.label())
	case mag < -40: // far below one unit for any ratio of durations
		if d.neg {
			return -1, nil
		}
		return 0, nil
	}
	r, _ := new(big.Rat).SetString(s)
	r.Mul(r, new(big.Rat).SetFrac64(int64(from), int64(to)))
	q := new(big.Int).Div(r.Num(), r.Denom()) // Euclidean, by a positive denominator: the floor
	if !q.IsInt64() {
		return 0, badValue(v, "out of range for %s", t.label())
	}
	return q.Int64(), nil
}

// scaleInt is epoch's fast path, for whole numbers and units that divide each other.
func scaleInt(n int64, from, to time.Duration) (int64, bool) {
	switch {
	case from == to:
		return n, true
	case from > to && from%to == 0:
		m := int64(from / to)
		if n > math.MaxInt64/m || n < math.MinInt64/m {
			return 0, false
		}
		return n * m, true
	case to > from && to%from == 0:
		d := int64(to / from)
		q := n / d
		if n%d != 0 && n < 0 {
			q--
		}
		return q, true
	}
	return 0, false
}

func (t *typ) timeOfDay(v any) (int64, error) {
	unit := t.unit()
	limit := int64(24 * time.Hour / unit)
	var n int64
	var err error
	if s, ok := v.(string); !ok {
		n, err = toInt(v)
	} else if d, ok := parseClock(s); ok {
		n = int64(d / unit)
	} else {
		n, err = toInt(v)
	}
	if err != nil || n < 0 || n >= limit {
		name := "ms"
		if unit == time.Microsecond {
			name = "µs"
		}
		return 0, badValue(v, "want a time of day HH:MM:SS[.fraction], or an integer from 0 to %d (%s since midnight)", limit-1, name)
	}
	return n, nil
}

// parseClock reads HH:MM:SS[.fraction].
func parseClock(s string) (time.Duration, bool) {
	two := func(i, most int) (int, bool) {
		if i+2 > len(s) || s[i] < '0' || s[i] > '9' || s[i+1] < '0' || s[i+1] > '9' {
			return 0, false
		}
		n := int(s[i]-'0')*10 + int(s[i+1]-'0')
		return n, n <= most
	}
	h, ok1 := two(0, 23)
	m, ok2 := two(3, 59)
	sec, ok3 := two(6, 59)
	if !ok1 || !ok2 || !ok3 || s[2] != ':' || s[5] != ':' {
		return 0, false
	}
	d := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
	if len(s) == 8 {
		return d, true
	}
	if s[8] != '.' || len(s) == 9 {
		return 0, false
	}
	scale := time.Second
	for i := 9; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		scale /= 10 // 0 after nine digits: the rest is below a nanosecond
		d += time.Duration(s[i]-'0') * scale
	}
	return d, true
}

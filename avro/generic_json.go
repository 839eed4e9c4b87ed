package avro

import (
	"encoding/base64"
	"math"
	"math/big"
	"strconv"
	"time"
	"unicode/utf8"
)

// plain turns goavro's native form into the plain JSON value that JSON documents.
func (t *typ) plain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		switch t.kind {
		case kUnion:
			for name, inner := range x {
				for _, b := range t.branches {
					if b.branch == name {
						return b.plain(inner)
					}
				}
			}
			return v
		case kRecord:
			out := make(map[string]any, len(t.fields))
			for _, f := range t.fields {
				out[f.name] = f.typ.plain(x[f.name])
			}
			return out
		}
		out := make(map[string]any, len(x))
		for k, inner := range x {
			out[k] = t.items.plain(inner)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, inner := range x {
			out[i] = t.items.plain(inner)
		}
		return out
	case *big.Rat:
		return x.FloatString(t.scale)
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return base64.StdEncoding.EncodeToString(x)
	case float32:
		// Through its shortest text: float32 0.1 is 0.1, not 0.10000000149011612.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		return plainFloat(f)
	case float64:
		return plainFloat(x)
	case time.Time, time.Duration, int64:
		return t.plainTime(v)
	}
	return v
}

func plainFloat(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}

// plainTime writes the time logical types. A time that RFC 3339 or a clock cannot write stays
// the number it is encoded as, which Append reads back the same.
func (t *typ) plainTime(v any) any {
	inYears := func(tm time.Time) bool { return tm.Year() >= 0 && tm.Year() <= 9999 }
	switch x := v.(type) {
	case time.Time: // date, timestamp-millis, timestamp-micros
		x = x.UTC()
		switch {
		case t.logical == lDate && inYears(x):
			return x.Format(time.DateOnly)
		case t.logical == lDate:
			return int32(x.Unix() / 86400)
		case inYears(x):
			return x.Format(time.RFC3339Nano)
		case t.logical == lTimestampMillis:
			return x.UnixMilli()
		}
		return x.UnixMicro()
	case time.Duration: // time-millis, time-micros
		n := int64(x / t.unit())
		switch {
		case x >= 0 && x < 24*time.Hour:
			return time.Unix(0, 0).UTC().Add(x).Format("15:04:05.999999999")
		case t.kind == kInt:
			return int32(n)
		}
		return n
	case int64: // local-timestamp-*, which goavro leaves a long
		tm := time.UnixMicro(x).UTC()
		if t.logical == lLocalMillis {
			tm = time.UnixMilli(x).UTC()
		}
		if (t.logical == lLocalMillis || t.logical == lLocalMicros) && inYears(tm) {
			return tm.Format("2006-01-02T15:04:05.999999999")
		}
	}
	return v
}

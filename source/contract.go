package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/cursor"
)

// Contract describes a keyset API: the query parameters of a page request and where the
// records, the next token, the id and the update time sit in its answers. The zero value is
// not valid; DefaultContract is the fivetran-api-playground's /pagination/keyset.
//
// What keysetsync relies on, whatever the names: the records of a page are sorted by update
// time (ascending), and SinceParam is inclusive (update time >= the value). With
// AfterIDParam, the API also accepts a compound keyset: SinceParam=T and AfterIDParam=X
// select the records with (update time, id) > (T, X), sorted by update time then id.
type Contract struct {
	// SinceParam carries the update time a request starts from (inclusive).
	SinceParam string
	// TokenParam carries the next token of the previous page (the API's own continuation,
	// exclusive of that page's last update time); it is sent alone.
	TokenParam string
	// AfterIDParam, when set, is sent with SinceParam to continue after the last record of a
	// page: ties on the update time are then paged through exactly, however wide.
	AfterIDParam string
	// PageSizeParam and PageSize, when set, are sent with every request.
	PageSizeParam string
	PageSize      int
	// RecordsPath is where the array of records is in an answer; NextPath where the next
	// token is (a string or number; null, "", false or no such field end the pass; true
	// continues without a token); TotalPath, optional, where the API says how many records
	// the request matches (read from the first page of a pass for progress estimates).
	RecordsPath, NextPath, TotalPath Path
	// IDPath and UpdatedAtPath locate the id (a string or an integer) and the update time
	// in a record.
	IDPath, UpdatedAtPath Path
	// TimeFormat is how update times are written in records and in SinceParam.
	TimeFormat TimeFormat
}

// DefaultContract is the contract of the fivetran-api-playground's keyset endpoint:
// updated_since / scroll_param, {"data": [...], "scroll_param": ...}, id and updatedAt in
// YYYY-MM-DDTHH:MM:SSZ.
func DefaultContract() Contract {
	return Contract{
		SinceParam:    "updated_since",
		TokenParam:    "scroll_param",
		RecordsPath:   Path{"data"},
		NextPath:      Path{"scroll_param"},
		IDPath:        Path{"id"},
		UpdatedAtPath: Path{"updatedAt"},
		TimeFormat:    TimeSeconds,
	}
}

// isDefault tells whether c is DefaultContract: its pages then take the one-pass decoder.
func (c Contract) isDefault() bool {
	d := DefaultContract()
	return c.SinceParam == d.SinceParam && c.TokenParam == d.TokenParam && c.AfterIDParam == "" &&
		c.PageSizeParam == "" && c.RecordsPath.String() == "data" && c.NextPath.String() == "scroll_param" &&
		len(c.TotalPath) == 0 && c.IDPath.String() == "id" && c.UpdatedAtPath.String() == "updatedAt" &&
		c.TimeFormat == TimeSeconds
}

// Validate reports every problem of c at once.
func (c Contract) Validate() error {
	var errs []error
	params := map[string]string{}
	for _, p := range []struct{ flag, name string }{
		{"since param", c.SinceParam}, {"token param", c.TokenParam}, {"after-id param", c.AfterIDParam}, {"page-size param", c.PageSizeParam},
	} {
		if p.name == "" {
			if p.flag == "since param" || p.flag == "token param" {
				errs = append(errs, fmt.Errorf("%s is empty", p.flag))
			}
			continue
		}
		if other, dup := params[p.name]; dup {
			errs = append(errs, fmt.Errorf("%s and %s are both %q", other, p.flag, p.name))
		}
		params[p.name] = p.flag
	}
	if (c.PageSizeParam == "") != (c.PageSize <= 0) {
		errs = append(errs, fmt.Errorf("page-size param %q and page size %d: set both or neither", c.PageSizeParam, c.PageSize))
	}
	for _, p := range []struct {
		name string
		path Path
	}{{"records path", c.RecordsPath}, {"next path", c.NextPath}, {"id path", c.IDPath}, {"updated-at path", c.UpdatedAtPath}} {
		if len(p.path) == 0 {
			errs = append(errs, fmt.Errorf("%s is empty", p.name))
		}
	}
	if _, err := ParseTimeFormat(string(c.TimeFormat)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// query is the request of q under c, added to base (the API URL's own parameters).
func (c Contract) query(base url.Values, q Query) url.Values {
	v := url.Values{}
	for k, vs := range base {
		v[k] = vs
	}
	switch {
	case q.Token != nil:
		v.Set(c.TokenParam, *q.Token)
	default:
		v.Set(c.SinceParam, c.TimeFormat.Format(q.Since))
		if q.AfterID != "" {
			v.Set(c.AfterIDParam, q.AfterID)
		}
	}
	if c.PageSizeParam != "" {
		v.Set(c.PageSizeParam, strconv.Itoa(c.PageSize))
	}
	return v
}

// splitPage finds the records, the next token and the total of an answer: a RawPage of body
// without its URL.
func (c Contract) splitPage(body []byte) (*RawPage, error) {
	env := &envelope{body: body}
	raw, ok, err := env.find(c.RecordsPath)
	if err != nil {
		return nil, fmt.Errorf("body is not a page with records at %q: %w", c.RecordsPath, err)
	}
	if !ok || isNull(raw) {
		return nil, fmt.Errorf("no %q array in the answer", c.RecordsPath)
	}
	p := &RawPage{Bytes: len(body), body: body}
	if err := json.Unmarshal(raw, &p.records); err != nil {
		return nil, fmt.Errorf("%q is not an array: %w", c.RecordsPath, err)
	}
	if p.records == nil {
		p.records = []json.RawMessage{}
	}
	if p.Next, p.More, err = c.nextToken(env); err != nil {
		return nil, err
	}
	if len(c.TotalPath) > 0 {
		if raw, ok, _ := env.find(c.TotalPath); ok {
			// An unreadable total only costs the estimate; it never fails the page.
			var n int64
			if json.Unmarshal(raw, &n) == nil && n >= 0 {
				p.Total = &n
			}
		}
	}
	return p, nil
}

// nextToken reads the next token: a string or a number is a token, true is "more, without a
// token", and null, "", false or no such field end the pass.
func (c Contract) nextToken(env *envelope) (next *string, more bool, err error) {
	raw, ok, err := env.find(c.NextPath)
	if err != nil || !ok {
		return nil, false, err
	}
	raw = bytes.TrimSpace(raw)
	switch {
	case isNull(raw), bytes.Equal(raw, []byte("false")):
		return nil, false, nil
	case bytes.Equal(raw, []byte("true")):
		return nil, true, nil
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, fmt.Errorf("next token at %q: %w", c.NextPath, err)
		}
		if s == "" {
			return nil, false, nil
		}
		return &s, true, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, false, fmt.Errorf("next token at %q is %s: want a string, a number, a boolean or null", c.NextPath, raw)
	}
	s := n.String()
	return &s, true, nil
}

// key reads a record's id and update time.
func (c Contract) key(rec map[string]any) (id string, at time.Time, field string, err error) {
	v, _ := c.IDPath.lookup(rec)
	if id, err = idOf(v); err != nil {
		return "", time.Time{}, c.IDPath.String(), err
	}
	v, ok := c.UpdatedAtPath.lookup(rec)
	if !ok || v == nil {
		return id, time.Time{}, c.UpdatedAtPath.String(), errors.New("missing or null")
	}
	at, err = c.TimeFormat.Parse(v)
	if err != nil {
		return id, time.Time{}, c.UpdatedAtPath.String(), err
	}
	return id, at, "", nil
}

// TimeFormat is how an API writes update times.
type TimeFormat string

// The time formats an API may use.
const (
	// TimeSeconds is YYYY-MM-DDTHH:MM:SSZ exactly: whole seconds in UTC (the playground).
	TimeSeconds TimeFormat = "seconds"
	// TimeRFC3339 is RFC 3339 with optional fractions and any offset; keysetsync sends
	// times back in UTC with as many fraction digits as needed.
	TimeRFC3339 TimeFormat = "rfc3339"
	// TimeEpochSeconds and TimeEpochMillis are integers (JSON numbers or strings of digits)
	// since 1970-01-01T00:00:00Z.
	TimeEpochSeconds TimeFormat = "epoch_s"
	TimeEpochMillis  TimeFormat = "epoch_ms"
)

// ParseTimeFormat checks a time format's name.
func ParseTimeFormat(s string) (TimeFormat, error) {
	switch f := TimeFormat(s); f {
	case TimeSeconds, TimeRFC3339, TimeEpochSeconds, TimeEpochMillis:
		return f, nil
	}
	return "", fmt.Errorf("time format %q: want seconds, rfc3339, epoch_s or epoch_ms", s)
}

// Unit is the unit of a number in this format (0 for the string formats); a custom schema's
// timestamp fields given as numbers are read in it.
func (f TimeFormat) Unit() time.Duration {
	switch f {
	case TimeEpochSeconds:
		return time.Second
	case TimeEpochMillis:
		return time.Millisecond
	}
	return 0
}

// Precision is the smallest step between two times this format can write: what a since
// parameter can say. A position between two such steps is asked for from the step before it.
func (f TimeFormat) Precision() time.Duration {
	switch f {
	case TimeSeconds, TimeEpochSeconds:
		return time.Second
	case TimeEpochMillis:
		return time.Millisecond
	}
	return time.Nanosecond
}

// Format writes t as the API expects it in SinceParam.
func (f TimeFormat) Format(t time.Time) string {
	switch f {
	case TimeRFC3339:
		return t.UTC().Format(time.RFC3339Nano)
	case TimeEpochSeconds, TimeEpochMillis:
		// Before the epoch is before any record: 0 asks for everything without sending an API
		// a negative time (cursor.Start is year 1).
		if t.Before(time.Unix(0, 0)) {
			return "0"
		}
		if f == TimeEpochSeconds {
			return strconv.FormatInt(t.Unix(), 10)
		}
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
	return t.UTC().Format(cursor.TimeLayout)
}

// Parse reads an update time (a JSON value decoded with UseNumber) in this format.
func (f TimeFormat) Parse(v any) (time.Time, error) {
	switch f {
	case TimeSeconds:
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("got %s, want a string YYYY-MM-DDTHH:MM:SSZ", describeJSON(v))
		}
		return parseTime(s)
	case TimeRFC3339:
		s, ok := v.(string)
		if !ok {
			return time.Time{}, fmt.Errorf("got %s, want an RFC 3339 string", describeJSON(v))
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time: %w", s, err)
		}
		return t.UTC(), nil
	}
	var digits string
	switch x := v.(type) {
	case json.Number:
		digits = x.String()
	case string:
		digits = x
	default:
		return time.Time{}, fmt.Errorf("got %s, want an integer of %s since the epoch", describeJSON(v), f.unitName())
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("%q is not a non-negative integer of %s since the epoch", digits, f.unitName())
	}
	if f == TimeEpochSeconds {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.UnixMilli(n).UTC(), nil
}

func (f TimeFormat) unitName() string {
	if f == TimeEpochSeconds {
		return "seconds"
	}
	return "milliseconds"
}

// Path is a JSON path into an answer or a record: object keys from the outside in, written
// a.b.c (a leading "$." is allowed). Keys holding a dot cannot be addressed.
type Path []string

// ParsePath reads a path written a.b.c or $.a.b.c; "" is the empty path.
func ParsePath(s string) (Path, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "$"), ".")
	if s == "" {
		return nil, nil
	}
	p := Path(strings.Split(s, "."))
	for _, k := range p {
		if k == "" {
			return nil, fmt.Errorf("path %q: empty key (write a.b.c)", s)
		}
	}
	return p, nil
}

func (p Path) String() string { return strings.Join(p, ".") }

// Set and Get make a *Path a flag.Value.
func (p *Path) Set(s string) error {
	q, err := ParsePath(s)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// envelope is an answer whose objects are decoded as the contract's paths need them, each at
// most once: decoding the body is most of the cost of a page, and the records, next-token and
// total paths usually share their first steps.
type envelope struct {
	body []byte
	objs map[string]map[string]json.RawMessage // by the path that leads to them ("" = the body)
}

// find returns the raw JSON at p, descending one object at a time: only the objects on the
// path are decoded.
func (e *envelope) find(p Path) (json.RawMessage, bool, error) {
	if e.objs == nil {
		e.objs = map[string]map[string]json.RawMessage{}
	}
	cur, at := json.RawMessage(e.body), ""
	for i, k := range p {
		obj, ok := e.objs[at]
		if !ok {
			if err := json.Unmarshal(cur, &obj); err != nil {
				if i == 0 {
					return nil, false, fmt.Errorf("not a JSON object: %w", err)
				}
				return nil, false, fmt.Errorf("%q is not an object", p[:i])
			}
			e.objs[at] = obj
		}
		if cur, ok = obj[k]; !ok {
			return nil, false, nil
		}
		at += "." + k
	}
	return cur, true, nil
}

// lookup returns the value at p in a decoded JSON object.
func (p Path) lookup(rec map[string]any) (any, bool) {
	var cur any = rec
	for _, k := range p {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// describeJSON names a decoded JSON value for an error message.
func describeJSON(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case float64:
		return "number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

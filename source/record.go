package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
)

// wireUser is a user as the API sends it. Pointers tell a missing field from an empty one; the
// id may come as a number.
type wireUser = avro.UserJSON[wireID, *string]

// DecodeUser turns one element of a page's data array into an avro.User, or a *RecordError
// naming the field that is wrong. page and index only label the error.
func DecodeUser(raw json.RawMessage, page, index int) (avro.User, error) {
	var w wireUser
	if err := json.Unmarshal(raw, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return avro.User{}, &RecordError{Page: page, Index: index, ID: peekID(raw), Field: te.Field, Err: fmt.Errorf("got JSON %s, want %s", te.Value, te.Type)}
		}
		return avro.User{}, &RecordError{Page: page, Index: index, Err: fmt.Errorf("not a JSON object: %w", err)}
	}
	return fromWire(&w, page, index)
}

// fromWire checks a decoded user: an id, an updatedAt, and times in the API's format.
func fromWire(w *wireUser, page, index int) (avro.User, error) {
	fail := func(id, field string, err error) (avro.User, error) {
		return avro.User{}, &RecordError{Page: page, Index: index, ID: id, Field: field, Err: err}
	}
	id, err := w.ID.value()
	if err != nil {
		return fail("", "id", err)
	}
	if w.UpdatedAt == nil {
		return fail(id, "updatedAt", errors.New("missing"))
	}
	updated, err := parseTime(*w.UpdatedAt)
	if err != nil {
		return fail(id, "updatedAt", err)
	}
	u := avro.User{ID: id, Name: w.Name, Email: w.Email, Address: w.Address, Company: w.Company, Job: w.Job, UpdatedAt: updated}
	if w.CreatedAt != nil {
		created, err := parseTime(*w.CreatedAt)
		if err != nil {
			return fail(id, "createdAt", err)
		}
		u.CreatedAt = &created
	}
	return u, nil
}

// parseTime accepts exactly the API's format, YYYY-MM-DDTHH:MM:SSZ: whole seconds in UTC. Any
// other form would make the cursor, which is sent back in that format, inexact. The shape is
// checked byte by byte first: time.Parse alone accepts fractional seconds and one-digit hours.
func parseTime(s string) (time.Time, error) {
	if !timeShape(s) {
		return time.Time{}, fmt.Errorf("%q is not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ", s)
	}
	t, err := time.Parse(cursor.TimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ: %w", s, err)
	}
	return t, nil
}

func timeShape(s string) bool {
	const shape = "dddd-dd-ddTdd:dd:ddZ"
	if len(s) != len(shape) {
		return false
	}
	for i := range len(shape) {
		if c := s[i]; shape[i] == 'd' && (c < '0' || c > '9') || shape[i] != 'd' && c != shape[i] {
			return false
		}
	}
	return true
}

// peekID returns the record's id for an error message when the record is otherwise broken, read
// by the rules of idOf ("" when it has no valid id).
func peekID(raw json.RawMessage) string {
	var v struct {
		ID any `json:"id"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return ""
	}
	id, _ := idOf(v.ID)
	return id
}

// wireID is a record's id as the API sent it. A string, the common case, is decoded at once; any
// other JSON value is kept as sent, so that value applies to it the rules of idOf, the same as
// the path of every other contract (Contract.key): an integer id is then accepted on the
// playground's contract too, as its decimal text.
type wireID struct {
	s   string
	raw []byte // the JSON value when it was not a string (nil: a string, null or absent)
	set bool   // s holds a JSON string
}

// UnmarshalJSON implements json.Unmarshaler. It never fails on a well-formed value: what the
// id must be is decided by value, so the error names the record and the field.
func (id *wireID) UnmarshalJSON(b []byte) error {
	*id = wireID{}
	switch {
	case len(b) > 0 && b[0] == '"':
		// Most ids are plain ASCII without escapes: their text is the string. Anything else
		// goes through the decoder, which unescapes and replaces invalid UTF-8 exactly as
		// decoding into a string does on the other path.
		if plainJSONString(b) {
			id.s = string(b[1 : len(b)-1])
		} else if err := json.Unmarshal(b, &id.s); err != nil {
			return err
		}
		id.set = true
	case string(b) == "null":
	default:
		id.raw = bytes.Clone(b) // the decoder's buffer is not ours to keep
	}
	return nil
}

// value is the id as the Kafka key, or why the record has no valid id.
func (id *wireID) value() (string, error) {
	if id.set {
		return idOf(id.s)
	}
	if id.raw == nil {
		return idOf(nil)
	}
	d := json.NewDecoder(bytes.NewReader(id.raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return "", fmt.Errorf("not JSON: %w", err)
	}
	return idOf(v)
}

// plainJSONString reports whether the JSON string literal b holds only printable ASCII without
// escapes, so its content is b without the quotes.
func plainJSONString(b []byte) bool {
	if len(b) < 2 || b[len(b)-1] != '"' {
		return false
	}
	for _, c := range b[1 : len(b)-1] {
		if c < 0x20 || c >= 0x80 || c == '\\' || c == '"' {
			return false
		}
	}
	return true
}

// idOf reads a record's id, a JSON value decoded with UseNumber (nil: null or absent), by the
// rules of every contract: a non-empty string, or an integer within int64 as its decimal text
// (the Kafka key). Any other value (a fraction, an exponent, a number beyond int64, a boolean,
// an object or an array) is refused rather than guessed at.
func idOf(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", errors.New("missing or null")
	case string:
		if x != "" {
			return x, nil
		}
	case json.Number:
		if _, err := strconv.ParseInt(x.String(), 10, 64); err != nil {
			return "", fmt.Errorf("got number %s, want a string or an integer", x)
		}
		return x.String(), nil
	}
	return "", fmt.Errorf("got %s, want a non-empty string or an integer", describeJSON(v))
}

// deletedMark reads the value of WalkOptions.DeletedField in a record (nil when the field is
// absent): true, or a non-empty string (a deletedAt time, say), marks a delete; false, null, ""
// or no such field does not. Any other JSON value is an error: guessing what 0 or {} means
// could delete a live record.
func deletedMark(v any) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	case string:
		return x != "", nil
	}
	return false, fmt.Errorf("got %s, want a boolean, a string (such as a deletion time) or null", describeJSON(v))
}

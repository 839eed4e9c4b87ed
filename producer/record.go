package producer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
)

// wireUser is a user as the API sends it. Pointers tell a missing field from an empty one.
type wireUser struct {
	ID        *string `json:"id"`
	Name      *string `json:"name"`
	Email     *string `json:"email"`
	Address   *string `json:"address"`
	Company   *string `json:"company"`
	Job       *string `json:"job"`
	CreatedAt *string `json:"createdAt"`
	UpdatedAt *string `json:"updatedAt"`
}

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
	if w.ID == nil || *w.ID == "" {
		return fail("", "id", errors.New("missing or empty"))
	}
	id := *w.ID
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

// peekID returns the record's id for an error message when the record is otherwise broken.
func peekID(raw json.RawMessage) string {
	var v struct {
		ID any `json:"id"`
	}
	if json.NewDecoder(bytes.NewReader(raw)).Decode(&v) != nil || v.ID == nil {
		return ""
	}
	return fmt.Sprint(v.ID)
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

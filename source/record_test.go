package source_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

func TestDecodeUserNamesTheField(t *testing.T) {
	cases := []struct {
		name, in string
		field    string
		id       string
		msg      string
	}{
		{name: "not an object", in: `[1,2]`, msg: "not a JSON object"},
		{name: "no id", in: `{"updatedAt":"2024-01-01T00:00:00Z"}`, field: "id", msg: "missing or null"},
		{name: "empty id", in: `{"id":"","updatedAt":"2024-01-01T00:00:00Z"}`, field: "id", msg: `got string "", want a non-empty string or an integer`},
		{name: "fractional id", in: `{"id":1.5,"updatedAt":"2024-01-01T00:00:00Z"}`, field: "id", msg: "got number 1.5, want a string or an integer"},
		{name: "integer id, name a number", in: `{"id":17,"updatedAt":"2024-01-01T00:00:00Z","name":5}`, field: "name", id: "17", msg: "got JSON number, want string"},
		{name: "no updatedAt", in: `{"id":"a"}`, field: "updatedAt", id: "a", msg: "missing"},
		{name: "updatedAt not UTC", in: `{"id":"a","updatedAt":"2024-01-01T00:00:00+02:00"}`, field: "updatedAt", id: "a", msg: "not a UTC time"},
		{name: "updatedAt with fraction", in: `{"id":"a","updatedAt":"2024-01-01T00:00:00.5Z"}`, field: "updatedAt", id: "a", msg: "YYYY-MM-DDTHH:MM:SSZ"},
		{name: "updatedAt a number", in: `{"id":"a","updatedAt":1700000000}`, field: "updatedAt", id: "a", msg: "got JSON number"},
		{name: "createdAt garbage", in: `{"id":"a","updatedAt":"2024-01-01T00:00:00Z","createdAt":"yesterday"}`, field: "createdAt", id: "a", msg: `"yesterday"`},
		{name: "name a number", in: `{"id":"a","updatedAt":"2024-01-01T00:00:00Z","name":5}`, field: "name", id: "a", msg: "got JSON number, want string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := source.DecodeUser([]byte(c.in), 4, 17)
			require.ErrorIs(t, err, source.ErrInvalidRecord)
			var re *source.RecordError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, 4, re.Page)
			assert.Equal(t, 17, re.Index)
			assert.Equal(t, c.field, re.Field)
			assert.Equal(t, c.id, re.ID)
			assert.Contains(t, err.Error(), "page 4, record 17")
			assert.Contains(t, err.Error(), c.msg)
			assert.False(t, retry.IsRetryable(err))
		})
	}
}

func TestDecodeUserTakesAnIntegerID(t *testing.T) {
	// The README: an id is a non-empty string or an integer (its decimal text), on every contract.
	u, err := source.DecodeUser([]byte(`{"id":9007199254740993,"updatedAt":"2024-01-01T00:00:00Z"}`), 1, 0)
	require.NoError(t, err)
	assert.Equal(t, "9007199254740993", u.ID, "digits kept exactly, beyond float64's precision")
}

func TestDecodeUserKeepsNullsAndUnknownFields(t *testing.T) {
	u, err := source.DecodeUser([]byte(`{"id":"a","updatedAt":"2024-01-01T00:00:00Z","name":null,"email":"e@x","extra":{"x":1}}`), 1, 0)
	require.NoError(t, err)
	assert.Nil(t, u.Name)
	require.NotNil(t, u.Email)
	assert.Equal(t, "e@x", *u.Email)
	assert.Nil(t, u.CreatedAt)
}

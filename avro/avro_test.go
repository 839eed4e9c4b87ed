package avro_test

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
)

func ptr[T any](v T) *T { return &v }

func TestRoundTrip(t *testing.T) {
	c, err := avro.NewCodec()
	require.NoError(t, err)
	created := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	cases := []struct {
		name string
		in   avro.User
	}{
		{"every field", avro.User{ID: "0b7e", Name: ptr("Zoë Ğüneş"), Email: ptr("zoe@example.com"), Address: ptr("1 Main St\nApt 2\nSpringfield"),
			Company: ptr("ACME"), Job: ptr("Engineer"), CreatedAt: &created, UpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)}},
		{"nulls stay nulls", avro.User{ID: "x", UpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)}},
		{"empty strings stay empty", avro.User{ID: "y", Name: ptr(""), Job: ptr(""), UpdatedAt: time.Unix(0, 0).UTC()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := c.Append(nil, &tc.in)
			require.NoError(t, err)
			got, err := c.Decode(b)
			require.NoError(t, err)
			assert.Equal(t, tc.in, got)
		})
	}
}

func TestAppendRefusesWhatTheSchemaRequires(t *testing.T) {
	c, err := avro.NewCodec()
	require.NoError(t, err)
	cases := []struct {
		name  string
		in    avro.User
		field string
	}{
		{"no id", avro.User{UpdatedAt: time.Now()}, "field id"},
		{"no updatedAt", avro.User{ID: "a"}, "field updatedAt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte("prefix")
			out, err := c.Append(buf, &tc.in)
			require.ErrorIs(t, err, avro.ErrInvalid)
			assert.Contains(t, err.Error(), tc.field)
			assert.Equal(t, "prefix", string(out), "a failed append leaves the buffer as it was")
		})
	}
}

func TestDecodeRejectsTrailingBytes(t *testing.T) {
	c, err := avro.NewCodec()
	require.NoError(t, err)
	b, err := c.Append(nil, &avro.User{ID: "a", UpdatedAt: time.Unix(1, 0)})
	require.NoError(t, err)
	_, err = c.Decode(append(b, 0))
	require.ErrorContains(t, err, "1 trailing bytes")
}

// The binary encoding is what consumers in other languages decode: it must not change by
// accident. The golden bytes decode with the Apache Avro reference implementation (python3-avro),
// and CI's scripts/check_topic.py decodes every message of a real sync with it.
func TestEncodingMatchesGolden(t *testing.T) {
	c, err := avro.NewCodec()
	require.NoError(t, err)
	created := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	u := avro.User{ID: "6f1c2c0e-8d0a-4e43-9a43-5c3b2a8f1e77", Name: ptr("José"), Email: ptr("jose@example.com"),
		Address: ptr("12 Rue X\n75001 Paris"), Company: nil, Job: ptr("Chef"), CreatedAt: &created,
		UpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)}
	b, err := c.Append(nil, &u)
	require.NoError(t, err)
	golden := filepath.Join("testdata", "user.golden.hex")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, []byte(hex.EncodeToString(b)+"\n"), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(want)), hex.EncodeToString(b))
}

func TestSchemaIsValidJSONWithTheContractFields(t *testing.T) {
	var s struct {
		Name   string `json:"name"`
		Fields []struct {
			Name string          `json:"name"`
			Type json.RawMessage `json:"type"`
		} `json:"fields"`
	}
	require.NoError(t, json.Unmarshal([]byte(avro.UserSchema()), &s))
	var names []string
	for _, f := range s.Fields {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"id", "name", "email", "address", "company", "job", "createdAt", "updatedAt"}, names)
}

func TestAppendMatchesGoavro(t *testing.T) {
	c, err := avro.NewCodec()
	require.NoError(t, err)
	at := func(ms int64) *time.Time { v := time.UnixMilli(ms).UTC(); return &v }
	cases := []avro.User{
		{ID: "a", UpdatedAt: time.Unix(0, 0)},
		{ID: "a", Name: ptr(""), UpdatedAt: time.UnixMilli(-1)},
		{ID: strings.Repeat("é", 200), Address: ptr(strings.Repeat("x\n", 5000)), CreatedAt: at(-62135596800000), UpdatedAt: *at(253402300799000)},
		{ID: "z", Name: ptr("n"), Email: ptr("e"), Address: ptr("a"), Company: ptr("c"), Job: ptr("j"), CreatedAt: at(1), UpdatedAt: time.UnixMilli(1 << 40)},
	}
	for i, u := range cases {
		want, err := c.AppendGoavro(nil, &u)
		require.NoError(t, err)
		got, err := c.Append([]byte("prefix"), &u)
		require.NoError(t, err)
		assert.Equal(t, append([]byte("prefix"), want...), got, "case %d", i)
	}
}

// FuzzAppendMatchesGoavro: the hand-written encoder writes exactly what goavro writes.
func FuzzAppendMatchesGoavro(f *testing.F) {
	f.Add("id", "name", "", true, false, int64(0), int64(1700000000000))
	f.Add("Zoë", "1 St\nX", "\x00", false, true, int64(-1), int64(-62135596800000))
	c, err := avro.NewCodec()
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, id, a, b string, aNil, created bool, createdMs, updatedMs int64) {
		if id == "" {
			return
		}
		u := avro.User{ID: id, Email: &b, Job: &a, UpdatedAt: time.UnixMilli(updatedMs).UTC()}
		if !aNil {
			u.Name, u.Company = &a, &b
		}
		if created {
			v := time.UnixMilli(createdMs).UTC()
			u.CreatedAt = &v
		}
		if u.UpdatedAt.IsZero() {
			return
		}
		want, err := c.AppendGoavro(nil, &u)
		if err != nil {
			return // goavro refuses (e.g. invalid UTF-8 is accepted by both; out-of-range times)
		}
		got, err := c.Append(nil, &u)
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

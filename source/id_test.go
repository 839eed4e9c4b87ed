package source_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// TestIDRulesAgreeOnBothPaths walks a one-record page through the playground's contract (the
// one-pass decoder and DecodeUser) and through the generic path that any other contract takes
// (here the same contract with a total path, which the answers lack): an id is accepted, keyed
// and encoded, or refused with the same error, whichever path reads it.
func TestIDRulesAgreeOnBothPaths(t *testing.T) {
	cases := []struct {
		name, id string // id: the JSON of the id member; "" leaves it out
		key      string // the Kafka key when accepted
		err      string // the error when refused
	}{
		{name: "string", id: `"a-1"`, key: "a-1"},
		{name: "escaped string", id: `"caf\u00e9\n"`, key: "café\n"},
		{name: "invalid surrogate", id: `"\ud800x"`, key: "\ufffdx"},
		{name: "integer", id: `17`, key: "17"},
		{name: "negative integer", id: `-5`, key: "-5"},
		{name: "zero", id: `0`, key: "0"},
		{name: "largest int64", id: `9223372036854775807`, key: "9223372036854775807"},
		{name: "smallest int64", id: `-9223372036854775808`, key: "-9223372036854775808"},
		{name: "beyond int64", id: `9223372036854775808`, err: "field id: got number 9223372036854775808, want a string or an integer"},
		{name: "fraction", id: `1.5`, err: "field id: got number 1.5, want a string or an integer"},
		{name: "integral fraction", id: `17.0`, err: "field id: got number 17.0, want a string or an integer"},
		{name: "exponent", id: `1e3`, err: "field id: got number 1e3, want a string or an integer"},
		{name: "empty string", id: `""`, err: `field id: got string "", want a non-empty string or an integer`},
		{name: "null", id: `null`, err: "field id: missing or null"},
		{name: "missing", id: ``, err: "field id: missing or null"},
		{name: "boolean", id: `true`, err: "field id: got boolean true, want a non-empty string or an integer"},
		{name: "object", id: `{"n":1}`, err: "field id: got an object, want a non-empty string or an integer"},
		{name: "array", id: `[1]`, err: "field id: got an array, want a non-empty string or an integer"},
	}
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	generic := source.DefaultContract()
	generic.TotalPath = source.Path{"total"} // not the playground's contract: the generic path
	paths := []struct{ contract source.Contract }{{source.DefaultContract()}, {generic}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			member := ""
			if c.id != "" {
				member = `"id":` + c.id + `,`
			}
			record := `{` + member + `"name":"n","updatedAt":"2024-01-01T00:00:00Z"}`
			// On the playground's contract a page decodes in one pass, unless one of its
			// records has a field of the wrong JSON type: then each record goes through
			// DecodeUser. The second body takes that way.
			bodies := []string{`{"data":[` + record + `],"scroll_param":null}`,
				`{"data":[` + record + `,{"id":"z","name":5,"updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":null}`}
			var got []source.Record
			for _, p := range []struct {
				name     string
				contract source.Contract
				body     string
			}{{"one pass", paths[0].contract, bodies[0]}, {"record by record", paths[0].contract, bodies[1]}, {"generic path", paths[1].contract, bodies[0]}} {
				body := []byte(p.body)
				src, err := source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/k", Contract: p.contract, MaxAttempts: 1,
					Client: &http.Client{Transport: staticTransport{body}}})
				require.NoError(t, err)
				w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{SkipInvalid: true, Now: fixedNow}, nil)
				recs, err := w.Next(t.Context())
				require.NoError(t, err, p.name)
				require.NotEmpty(t, recs, p.name)
				r := recs[0]
				if c.err != "" {
					require.NotNil(t, r.Invalid, "%s: accepted %q", p.name, r.ID)
					assert.ErrorIs(t, r.Invalid, source.ErrInvalidRecord)
					assert.Equal(t, "page 1, record 0, "+c.err, r.Invalid.Error(), p.name)
				} else {
					require.Nil(t, r.Invalid, p.name)
					assert.Equal(t, c.key, r.ID, p.name)
					u, err := codec.Decode(r.Value)
					require.NoError(t, err, p.name)
					assert.Equal(t, c.key, u.ID, "%s: the value's id is the key", p.name)
				}
				got = append(got, r)
			}
			assert.Equal(t, got[0].Value, got[1].Value, "both fast decoders encode the same value")
			assert.Equal(t, got[0].Value, got[2].Value, "both paths encode the same value")
		})
	}
}

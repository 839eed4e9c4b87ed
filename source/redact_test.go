package source_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/source"
)

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://user:pa55@api.example/v1/keyset?tenant=acme", "https://***@api.example/v1/keyset?tenant=acme"},
		{"https://sk_live_key:@api.example/v1", "https://***@api.example/v1"}, // a key as the user name
		{"https://token@api.example/v1", "https://***@api.example/v1"},
		{"http://u:p%40ss@127.0.0.1:5001/pagination/keyset", "http://***@127.0.0.1:5001/pagination/keyset"},
		{"https://api.example/v1?email=a@b.example", "https://api.example/v1?email=a@b.example"}, // no user info
		{"http://127.0.0.1:5001/pagination/keyset", "http://127.0.0.1:5001/pagination/keyset"},
		{"http://u:p%zz@host/x?e=a@b", "http://***@host/x?e=a@b"}, // does not parse: cut up to the authority's last '@'
		{"u:secret@host/x", "***@host/x"},
		{"", ""},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, source.RedactURL(c.in), "RedactURL(%q)", c.in)
	}
}

// TestSourceSendsURLCredentialsAndNeverShowsThem: the user info of SourceConfig.URL goes out as
// basic auth on every request, and nothing the Source shows (URL, pages, errors, logs) has it.
func TestSourceSendsURLCredentialsAndNeverShowsThem(t *testing.T) {
	var got []string
	h := &sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 503, Body: `{"error":"warming up"}`}, {Status: 200, Body: okPage}, {Status: 400, Body: `{"error":"bad since"}`}}}
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, _ := r.BasicAuth()
		got = append(got, u+":"+p)
		h.ServeHTTP(w, r)
	})
	server := httptest.NewServer(check)
	t.Cleanup(server.Close)
	srv := server.URL
	var logs logtest.Buffer
	src, err := source.NewSource(source.SourceConfig{
		URL:         strings.Replace(srv, "http://", "http://bob:hunter2-pw@", 1) + "/pagination/keyset?tenant=acme",
		MaxAttempts: 3, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	assert.Equal(t, "http://***@"+strings.TrimPrefix(srv, "http://")+"/pagination/keyset?tenant=acme", src.URL())

	p, err := src.Fetch(t.Context(), 1, source.Query{Since: cursor.Start})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(p.URL, "http://***@"), p.URL)
	assert.Contains(t, logs.String(), "api request failed, retrying")

	_, err = src.Fetch(t.Context(), 2, source.Query{Since: cursor.Start})
	require.ErrorIs(t, err, source.ErrAPI)
	assert.Contains(t, err.Error(), "http://***@")

	assert.Equal(t, []string{"bob:hunter2-pw", "bob:hunter2-pw", "bob:hunter2-pw"}, got, "every request carries the URL's credentials")
	for what, s := range map[string]string{"URL": src.URL(), "page URL": p.URL, "error": err.Error(), "logs": logs.String()} {
		assert.NotContains(t, s, "hunter2-pw", what)
		assert.NotContains(t, s, "bob", what)
	}
}

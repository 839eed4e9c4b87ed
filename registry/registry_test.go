package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/registry"
	"github.com/keysetsync/keysetsync/registry/registrytest"
	"github.com/keysetsync/keysetsync/retry"
)

func newClient(t *testing.T, cfg registry.Config) *registry.Client {
	t.Helper()
	c, err := registry.New(cfg)
	require.NoError(t, err)
	return c
}

func TestRegister(t *testing.T) {
	fake := registrytest.New()
	fake.FirstID = 0x01020304
	c := newClient(t, registry.Config{URL: fake.Start(t)})
	ctx := context.Background()

	id, err := c.Register(ctx, "users-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, 0x01020304, id)
	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, http.MethodPost, reqs[0].Method)
	assert.Equal(t, "/subjects/users-value/versions", reqs[0].Path)
	assert.Equal(t, "application/vnd.schemaregistry.v1+json", reqs[0].ContentType)
	var body map[string]string
	require.NoError(t, json.Unmarshal([]byte(reqs[0].Body), &body))
	assert.Equal(t, map[string]string{"schema": avro.UserSchema()}, body, "body is {\"schema\": <schema as a JSON string>}")

	// Cached: no second request.
	again, err := c.Register(ctx, "users-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, id, again)
	assert.Len(t, fake.Requests(), 1)

	// A new client (a restart) registering the same schema gets the same id.
	c2 := newClient(t, registry.Config{URL: c.URL()})
	again, err = c2.Register(ctx, "users-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, id, again)
	assert.Equal(t, []int{id}, fake.Subject("users-value"))

	// Another subject, same schema: same id (ids are global to the registry).
	other, err := c.Register(ctx, "orders-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, id, other)
}

func TestRegisterIncompatible(t *testing.T) {
	fake := registrytest.New()
	fake.Refuse("users-value")
	c := newClient(t, registry.Config{URL: fake.Start(t)})
	_, err := c.Register(context.Background(), "users-value", avro.UserSchema())
	require.ErrorIs(t, err, registry.ErrIncompatible)
	assert.Contains(t, err.Error(), `subject "users-value"`)
	assert.Contains(t, err.Error(), "Schema being registered is incompatible")
	assert.Contains(t, err.Error(), "409")
	assert.False(t, retry.IsRetryable(err))
}

func TestRegisterAuth(t *testing.T) {
	fake := registrytest.New()
	fake.Username, fake.Password = "svc", "s3cr3t-pa55"
	url := fake.Start(t)
	ctx := context.Background()

	_, err := newClient(t, registry.Config{URL: url}).Register(ctx, "users-value", avro.UserSchema())
	require.ErrorIs(t, err, registry.ErrUnauthorized)
	assert.Contains(t, err.Error(), "401")

	_, err = newClient(t, registry.Config{URL: url, Username: "svc", Password: "wrong-pa55"}).Register(ctx, "users-value", avro.UserSchema())
	require.ErrorIs(t, err, registry.ErrUnauthorized)
	assert.NotContains(t, err.Error(), "wrong-pa55")

	id, err := newClient(t, registry.Config{URL: url, Username: "svc", Password: "s3cr3t-pa55"}).Register(ctx, "users-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, 1, id)

	// Credentials in the URL work too and never show in errors or URL().
	withUser := strings.Replace(url, "http://", "http://svc:s3cr3t-pa55@", 1)
	c := newClient(t, registry.Config{URL: withUser})
	assert.NotContains(t, c.URL(), "s3cr3t")
	id, err = c.Register(ctx, "users-value", avro.UserSchema())
	require.NoError(t, err)
	assert.Equal(t, 1, id)
}

func TestRegisterUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	url := "http://user:hidden-pw@" + addr
	c := newClient(t, registry.Config{URL: url})
	_, err = c.Register(context.Background(), "users-value", avro.UserSchema())
	require.ErrorIs(t, err, registry.ErrUnreachable)
	assert.Contains(t, err.Error(), "http://"+addr)
	assert.NotContains(t, err.Error(), "hidden-pw")
	assert.False(t, retry.IsRetryable(err), "a registry failure at start fails fast")
	var ne net.Error
	assert.False(t, errors.As(err, &ne))
}

func TestRegisterOtherErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/prefix/subjects/bad-value/versions":
			w.WriteHeader(http.StatusUnprocessableEntity)
			w.Write([]byte(`{"error_code":42201,"message":"Invalid schema"}`))
		case "/prefix/subjects/noid-value/versions":
			w.Write([]byte(`{"version":1}`))
		case "/prefix/subjects/html-value/versions":
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte(`<html>bad gateway</html>`))
		default:
			w.Write([]byte(`{"id":7}`))
		}
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, registry.Config{URL: srv.URL + "/prefix/"})
	ctx := context.Background()
	_, err := c.Register(ctx, "bad-value", "{}")
	require.ErrorIs(t, err, registry.ErrRegistry)
	assert.Contains(t, err.Error(), "Invalid schema (error_code 42201)")
	_, err = c.Register(ctx, "noid-value", "{}")
	require.ErrorIs(t, err, registry.ErrRegistry)
	assert.Contains(t, err.Error(), "no valid id")
	_, err = c.Register(ctx, "html-value", "{}")
	require.ErrorIs(t, err, registry.ErrRegistry)
	assert.Contains(t, err.Error(), "HTTP 502: <html>bad gateway</html>")
	id, err := c.Register(ctx, "ok-value", "{}")
	require.NoError(t, err)
	assert.Equal(t, 7, id)
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "registry:8081", "ftp://x", "http://"} {
		_, err := registry.New(registry.Config{URL: u})
		assert.Error(t, err, u)
	}
	_, err := registry.New(registry.Config{URL: "ftp://u:topsecret@x"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "topsecret")
}

func TestFraming(t *testing.T) {
	h := registry.Header(0x01020304)
	assert.Equal(t, []byte{0, 1, 2, 3, 4}, h)
	v := append(h, 'a', 'b')
	id, payload, ok := registry.Unframe(v)
	assert.True(t, ok)
	assert.Equal(t, 0x01020304, id)
	assert.Equal(t, []byte("ab"), payload)
	for _, bad := range [][]byte{nil, {0, 1, 2}, {2, 0, 0, 0, 1, 9}} {
		_, p, ok := registry.Unframe(bad)
		assert.False(t, ok)
		assert.Equal(t, bad, p)
	}
	assert.Equal(t, "users-value", registry.TopicSubject("users"))
}

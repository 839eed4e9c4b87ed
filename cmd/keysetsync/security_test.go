package main

import (
	"github.com/keysetsync/keysetsync/source"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSecurityFlagsAreCheckedTogether(t *testing.T) {
	const secret = "s3cr3t-Value-9"
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"ca without tls", []string{"once", "--kafka-tls-ca", "ca.pem"}, "--kafka-tls-ca set without --kafka-tls"},
		{"cert without key", []string{"once", "--kafka-tls", "--kafka-tls-cert", "c.pem"}, "--kafka-tls-cert and --kafka-tls-key go together"},
		{"mechanism without user", []string{"verify", "--kafka-sasl-mechanism", "plain", "--kafka-sasl-password", secret}, "needs --kafka-sasl-username"},
		{"mechanism without password", []string{"tail", "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", "u"}, "needs --kafka-sasl-password-file"},
		{"both passwords", []string{"snapshot", "--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u", "--kafka-sasl-password", secret, "--kafka-sasl-password-file", "f"}, "exclude each other"},
		{"user without mechanism", []string{"cursor", "show", "--kafka-sasl-username", "u", "--kafka-sasl-password", secret}, "without --kafka-sasl-mechanism"},
		{"unknown mechanism", []string{"run", "--kafka-sasl-mechanism", "gssapi"}, `--kafka-sasl-mechanism "gssapi"`},
		{"bad api header", []string{"once", "--api-header", "X-Key " + secret}, "--api-header #1: want 'Name: value'"},
		{"two authorizations", []string{"once", "--api-bearer-token-file", "a", "--api-basic-auth-file", "b"}, "exclude each other"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := run(t.Context(), nil, c.args...)
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, c.msg)
			assert.NotContains(t, stderr, secret)
		})
	}
}

func TestMissingPasswordFileIsAUsageError(t *testing.T) {
	code, _, stderr := run(t.Context(), nil, "tail", "--brokers", "127.0.0.1:1", "--kafka-sasl-mechanism", "plain",
		"--kafka-sasl-username", "u", "--kafka-sasl-password-file", filepath.Join(t.TempDir(), "nope"))
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "--kafka-sasl-password-file")
}

func TestInsecureSkipVerifyIsLogged(t *testing.T) {
	code, _, stderr := run(t.Context(), nil, "snapshot", "--brokers", "127.0.0.1:1", "--kafka-tls", "--kafka-tls-insecure-skip-verify")
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stderr, "INSECURE: TLS certificate verification of the Kafka brokers is DISABLED")
}

func TestAPIAuthTransport(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
		return p
	}
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer other.Close()

	t.Run("bearer token and headers, only to the API's host", func(t *testing.T) {
		a := apiAuthFlags{bearerTokenFile: write("tok", "tok-123\n")}
		require.NoError(t, a.headers.Set("X-Api-Key: @"+write("key", "key-456\n")+"\nX-Tenant: acme"))
		c, err := a.client(srv.URL+"/pagination/keyset", http.DefaultTransport)
		require.NoError(t, err)
		resp, err := c.Get(srv.URL + "/pagination/keyset?x=1")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, "Bearer tok-123", got.Get("Authorization"))
		assert.Equal(t, "key-456", got.Get("X-Api-Key"))
		assert.Equal(t, "acme", got.Get("X-Tenant"))

		resp, err = c.Get(other.URL)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Empty(t, got.Get("Authorization"), "no credentials for another host")
		assert.Empty(t, got.Get("X-Api-Key"))
	})
	t.Run("basic auth", func(t *testing.T) {
		a := apiAuthFlags{basicAuthFile: write("basic", "bob:pa:ss\n")}
		c, err := a.client(srv.URL, http.DefaultTransport)
		require.NoError(t, err)
		resp, err := c.Get(srv.URL)
		require.NoError(t, err)
		resp.Body.Close()
		r := &http.Request{Header: got}
		u, p, ok := r.BasicAuth()
		assert.True(t, ok)
		assert.Equal(t, "bob", u)
		assert.Equal(t, "pa:ss", p)
	})
	t.Run("no credentials: a client on the process's API transport", func(t *testing.T) {
		var a apiAuthFlags
		base := source.NewTransport(1)
		c, err := a.client(srv.URL, base)
		require.NoError(t, err)
		assert.Same(t, base, c.Transport)
	})
	t.Run("bad files name the flag, never the content", func(t *testing.T) {
		a := apiAuthFlags{basicAuthFile: write("nocolon", "justasecret\n")}
		_, err := a.client(srv.URL, http.DefaultTransport)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "justasecret")
		a = apiAuthFlags{bearerTokenFile: write("twolines", "line1-secret\nline2\n")}
		_, err = a.client(srv.URL, http.DefaultTransport)
		require.Error(t, err)
		assert.False(t, strings.Contains(err.Error(), "line1-secret"))
	})
}

//go:build unix

// Package securitytest runs the real keysetsync binary against a dedicated real Kafka broker
// with a SASL_SSL listener (scripts/kafka.sh with KAFKA_SECURITY=sasl_ssl): SCRAM-SHA-512 and
// PLAIN over TLS, a wrong password, a wrong CA, and the credentials of the source API. The
// certificates are made by the test; the broker has its own ports and data directory, so the
// shared broker of KAFKA_BROKERS is never touched. It runs only in the real-broker tier
// (kafkatest.Real: skipped without KAFKA_BROKERS, failed under CI without it).
package securitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/playground"
)

const (
	plainPort      = 19192
	controllerPort = 19193
	saslSSLPort    = 19194

	user     = "alice"
	password = "alice-Pw.7qZr2"
	// wrongPassword is never valid; it must not appear in any output.
	wrongPassword = "wrong-Pw.X9kfJ3"
	// apiToken and apiKey are the source API's credentials; they must not appear in any output.
	apiToken = "tok-4f1c9e0b7a2d"
	apiKey   = "key-8d2e51aa90c3"
)

var saslAddr = fmt.Sprintf("127.0.0.1:%d", saslSSLPort)

// pki is a CA and a server certificate for 127.0.0.1 and localhost, as PEM files, and the
// server's PKCS12 keystore for the broker.
type pki struct {
	caPEM, keystore, keystorePassword string
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	return newCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(mrand.Int64()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	ca, caKey, caPEM := newCA(t, "keysetsync test CA")
	_, srvKey, srvPEM := newCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(mrand.Int64()), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	require.NoError(t, err)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	p := pki{caPEM: write("ca.pem", caPEM), keystore: filepath.Join(dir, "server.p12"), keystorePassword: "store-pw-1234"}
	certFile := write("server.pem", srvPEM)
	keyFile := write("server-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	out, err := exec.Command("openssl", "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-certfile", p.caPEM,
		"-name", "kafka", "-out", p.keystore, "-passout", "pass:"+p.keystorePassword).CombinedOutput()
	require.NoError(t, err, "openssl pkcs12 -export:\n%s", out)
	return p
}

// startBroker starts a dedicated broker with a SASL_SSL listener, stopped at cleanup.
func startBroker(t *testing.T, p pki) {
	t.Helper()
	proctest.NewBroker(t, plainPort, controllerPort, []int{saslSSLPort},
		"KAFKA_SECURITY=sasl_ssl", fmt.Sprintf("KAFKA_SASL_SSL_PORT=%d", saslSSLPort), "KAFKA_SSL_KEYSTORE="+p.keystore,
		"KAFKA_SSL_KEYSTORE_PASSWORD="+p.keystorePassword, "KAFKA_SASL_USERS="+user+":"+password).Start()
}

// secretFile writes s to a file of t's temporary directory.
func secretFile(t *testing.T, s string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(f, []byte(s+"\n"), 0o600))
	return f
}

// newAPI serves a playground in-process; with auth it answers 401 unless the request carries
// the bearer token and the X-Api-Key header.
func newAPI(t *testing.T, records int, auth bool) string {
	t.Helper()
	s, err := playground.New(playground.Config{Records: records, PageSize: 100, Seed: mrand.Uint64()})
	require.NoError(t, err)
	h := s.Handler()
	if auth {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+apiToken || r.Header.Get("X-Api-Key") != apiKey {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"error":"missing or wrong credentials"}`)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/pagination/keyset"
}

var verifyRE = regexp.MustCompile(`messages=(\d+) ids_in_topic=(\d+) ids_in_api=(\d+) missing=(\d+) stale=(\d+)`)

func TestSASLSSL(t *testing.T) {
	kafkatest.Real(t) // the real-broker tier: skipped without KAFKA_BROKERS, failed under CI
	t0 := time.Now()
	bin := proctest.BuildBinary(t)
	p := newPKI(t, t.TempDir())
	startBroker(t, p)
	t.Logf("binary built, certificates made and broker started in %s", time.Since(t0).Round(time.Millisecond))
	pwFile := secretFile(t, password)

	tlsArgs := []string{"--brokers", saslAddr, "--kafka-tls", "--kafka-tls-ca", p.caPEM}
	onceArgs := func(apiURL string, sec ...string) ([]string, string) {
		suffix := fmt.Sprintf("%08x", mrand.Uint32())
		dataTopic := "sec-users-" + suffix
		return append([]string{"once", "--api-url", apiURL, "--topic", dataTopic, "--cursor-topic", "sec-cursors-" + suffix,
			"--pipeline", "sec", "--topic-replication-factor", "1", "--log-format", "text"}, sec...), dataTopic
	}
	verify := func(t *testing.T, apiURL, dataTopic string, sec ...string) (messages, missing int) {
		t.Helper()
		v := proctest.Start(t, bin, append([]string{"verify", "--api-url", apiURL, "--topic", dataTopic}, sec...), proctest.Options{Name: "verify", Log: true})
		v.Wait(t, time.Minute)
		out := v.Stdout()
		t.Logf("verify: %s", strings.SplitN(out, "\n", 2)[0])
		m := verifyRE.FindStringSubmatch(out)
		require.NotNil(t, m, "verify printed no summary:\n%s\n%s", out, v.Tail(10))
		assert.Zero(t, v.ExitCode(), "verify exit status")
		fmt.Sscan(m[1], &messages)
		fmt.Sscan(m[4], &missing)
		return messages, missing
	}
	syncAndVerify := func(t *testing.T, sec []string) {
		const records = 500
		apiURL := newAPI(t, records, false)
		args, dataTopic := onceArgs(apiURL, sec...)
		o := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		o.Wait(t, 2*time.Minute)
		require.Equal(t, 0, o.ExitCode(), "once over SASL_SSL; stderr:\n%s", o.Tail(20))
		t.Logf("once took %s", o.Took().Round(time.Millisecond))
		messages, missing := verify(t, apiURL, dataTopic, sec...)
		assert.Zero(t, missing)
		assert.Equal(t, records, messages)
		assert.NotContains(t, o.Stderr(), password)
	}

	t.Run("scram-sha-512 with a password file: once, then verify missing=0", func(t *testing.T) {
		syncAndVerify(t, slices.Concat(tlsArgs, []string{"--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", user, "--kafka-sasl-password-file", pwFile}))
	})
	t.Run("plain with --kafka-sasl-password: once, then verify missing=0", func(t *testing.T) {
		syncAndVerify(t, slices.Concat(tlsArgs, []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", user, "--kafka-sasl-password", password}))
	})

	failing := func(t *testing.T, sec []string) string {
		t.Helper()
		args, _ := onceArgs(newAPI(t, 10, false), sec...)
		// --kafka-wait: even a command told to wait for Kafka must not retry a refused login.
		args = append(args, "--kafka-wait", "60s")
		o := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		o.Wait(t, time.Minute)
		stderr := o.Stderr()
		assert.NotZero(t, o.ExitCode(), "exit status")
		assert.Less(t, o.Took(), 20*time.Second, "fails at once, without retries")
		assert.Zero(t, o.Count("failed, retrying"), "an authentication or TLS error is not retried")
		t.Logf("failed in %s: %s", o.Took().Round(time.Millisecond), o.Tail(1))
		return stderr
	}
	for _, mech := range []string{"scram-sha-512", "scram-sha-256", "plain"} {
		t.Run("wrong password, "+mech+": a clear SASL error at once, the password never shown", func(t *testing.T) {
			stderr := failing(t, slices.Concat(tlsArgs, []string{"--kafka-sasl-mechanism", mech, "--kafka-sasl-username", user, "--kafka-sasl-password-file", secretFile(t, wrongPassword)}))
			assert.Contains(t, stderr, "SASL")
			assert.Contains(t, strings.ToLower(stderr), "authentication")
			assert.NotContains(t, stderr, wrongPassword)
			assert.NotContains(t, stderr, password)
		})
	}
	t.Run("wrong CA: a TLS certificate error at once", func(t *testing.T) {
		_, _, otherCA := newCA(t, "another CA")
		stderr := failing(t, []string{"--brokers", saslAddr, "--kafka-tls", "--kafka-tls-ca", secretFile(t, string(otherCA)),
			"--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", user, "--kafka-sasl-password-file", pwFile})
		assert.Contains(t, stderr, "tls: failed to verify certificate")
		assert.Contains(t, stderr, "x509")
		assert.NotContains(t, stderr, password)
	})

	sec := slices.Concat(tlsArgs, []string{"--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-username", user, "--kafka-sasl-password-file", pwFile})
	keyFile := secretFile(t, apiKey)
	t.Run("API credentials: bearer token file and --api-header @file on every request", func(t *testing.T) {
		apiURL := newAPI(t, 300, true)
		auth := []string{"--api-bearer-token-file", secretFile(t, apiToken), "--api-header", "X-Api-Key: @" + keyFile}
		args, dataTopic := onceArgs(apiURL, slices.Concat(sec, auth)...)
		o := proctest.Start(t, bin, append(args, "--log-level", "debug"), proctest.Options{Name: "once", Log: true})
		o.Wait(t, 2*time.Minute)
		require.Equal(t, 0, o.ExitCode(), "once with API credentials; stderr:\n%s", o.Tail(20))
		for _, s := range []string{apiToken, apiKey, password} {
			assert.NotContains(t, o.Stderr(), s)
		}
		messages, missing := verify(t, apiURL, dataTopic, slices.Concat(sec, auth)...)
		assert.Zero(t, missing)
		assert.Equal(t, 300, messages)
	})
	t.Run("API credentials: a wrong token fails with 401, no secret in the error or the logs", func(t *testing.T) {
		apiURL := newAPI(t, 10, true)
		wrong := "tok-WRONG-5e6f7a8b"
		args, _ := onceArgs(apiURL, slices.Concat(sec, []string{"--api-bearer-token-file", secretFile(t, wrong), "--api-header", "X-Api-Key: " + apiKey, "--log-level", "debug"})...)
		o := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		o.Wait(t, time.Minute)
		stderr := o.Stderr()
		assert.Equal(t, 1, o.ExitCode())
		assert.Contains(t, stderr, "401")
		for _, s := range []string{wrong, apiToken, apiKey, password} {
			assert.NotContains(t, stderr, s)
		}
	})
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/source"
)

// kafkaSecurityFlags are the TLS and SASL settings of every command that talks to Kafka. Secrets
// (the SASL password, the key) are read from files or flags and never logged or printed.
type kafkaSecurityFlags struct {
	kafkaSecuritySettings

	// built once by newKafkaClient (files read, warnings logged once, also across retries).
	once    sync.Once
	tlsConf *tls.Config
	sasl    kafka.SASL
	err     error
}

// kafkaSecuritySettings are the flag values, comparable: two pipelines with equal settings (and
// brokers) share one Kafka client.
type kafkaSecuritySettings struct {
	tls                bool
	caFile             string
	certFile           string
	keyFile            string
	serverName         string
	insecureSkipVerify bool
	mechanism          string
	username           string
	password           string
	passwordFile       string
}

func (k *kafkaSecurityFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to the Kafka brokers over TLS (system roots unless --kafka-tls-ca)")
	fs.StringVar(&k.caFile, "kafka-tls-ca", "", "PEM file of the CA certificate(s) that sign the brokers' certificates (needs --kafka-tls)")
	fs.StringVar(&k.certFile, "kafka-tls-cert", "", "PEM client certificate for mutual TLS (needs --kafka-tls-key)")
	fs.StringVar(&k.keyFile, "kafka-tls-key", "", "PEM private key of --kafka-tls-cert")
	fs.StringVar(&k.serverName, "kafka-tls-server-name", "", "name to verify the brokers' certificates against (default: the host of each broker address)")
	fs.BoolVar(&k.insecureSkipVerify, "kafka-tls-insecure-skip-verify", false, "DANGEROUS: do not verify the brokers' certificates (testing only; logged as a warning)")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512 (empty: no SASL)")
	fs.StringVar(&k.username, "kafka-sasl-username", "", "SASL user name")
	fs.StringVar(&k.password, "kafka-sasl-password", "", "SASL password (prefer --kafka-sasl-password-file: a flag is visible in the process list)")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password (one trailing newline is ignored)")
}

// validate checks that the settings make sense together, without reading any file.
func (k *kafkaSecurityFlags) validate() []error {
	var errs []error
	if !k.tls {
		var set []string
		for _, s := range []struct {
			name string
			on   bool
		}{{"--kafka-tls-ca", k.caFile != ""}, {"--kafka-tls-cert", k.certFile != ""}, {"--kafka-tls-key", k.keyFile != ""},
			{"--kafka-tls-server-name", k.serverName != ""}, {"--kafka-tls-insecure-skip-verify", k.insecureSkipVerify}} {
			if s.on {
				set = append(set, s.name)
			}
		}
		if len(set) > 0 {
			errs = append(errs, fmt.Errorf("%s set without --kafka-tls", strings.Join(set, ", ")))
		}
	}
	if (k.certFile == "") != (k.keyFile == "") {
		errs = append(errs, errors.New("--kafka-tls-cert and --kafka-tls-key go together: set both or neither"))
	}
	switch strings.ToLower(k.mechanism) {
	case "":
		if k.username != "" || k.password != "" || k.passwordFile != "" {
			errs = append(errs, errors.New("--kafka-sasl-username/--kafka-sasl-password[-file] set without --kafka-sasl-mechanism"))
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if k.username == "" {
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-username", k.mechanism))
		}
		switch {
		case k.password != "" && k.passwordFile != "":
			errs = append(errs, errors.New("--kafka-sasl-password and --kafka-sasl-password-file exclude each other"))
		case k.password == "" && k.passwordFile == "":
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-password-file (or --kafka-sasl-password)", k.mechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", k.mechanism))
	}
	return errs
}

// build reads the files and makes the TLS config (nil without --kafka-tls) and the SASL settings.
// Errors never contain the password.
func (k *kafkaSecurityFlags) build(log *slog.Logger) (*tls.Config, kafka.SASL, error) {
	if errs := k.validate(); len(errs) > 0 {
		return nil, kafka.SASL{}, errors.Join(errs...)
	}
	var tc *tls.Config
	if k.tls {
		tc = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: k.serverName, InsecureSkipVerify: k.insecureSkipVerify}
		if k.caFile != "" {
			pem, err := os.ReadFile(k.caFile)
			if err != nil {
				return nil, kafka.SASL{}, fmt.Errorf("--kafka-tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, kafka.SASL{}, fmt.Errorf("--kafka-tls-ca %s: no PEM certificate in it", k.caFile)
			}
			tc.RootCAs = pool
		}
		if k.certFile != "" {
			cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
			if err != nil {
				return nil, kafka.SASL{}, fmt.Errorf("--kafka-tls-cert/--kafka-tls-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		if k.insecureSkipVerify {
			log.Warn("INSECURE: TLS certificate verification of the Kafka brokers is DISABLED (--kafka-tls-insecure-skip-verify): " +
				"anyone on the network path can impersonate a broker and read the data and the SASL credentials; use --kafka-tls-ca instead")
		}
	}
	if k.mechanism == "" {
		return tc, kafka.SASL{}, nil
	}
	password := k.password
	if k.passwordFile != "" {
		b, err := os.ReadFile(k.passwordFile)
		if err != nil {
			return nil, kafka.SASL{}, fmt.Errorf("--kafka-sasl-password-file: %w", err)
		}
		password = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if password == "" {
			return nil, kafka.SASL{}, fmt.Errorf("--kafka-sasl-password-file %s is empty", k.passwordFile)
		}
	}
	if strings.EqualFold(k.mechanism, "plain") && tc == nil {
		log.Warn("INSECURE: SASL PLAIN without --kafka-tls sends the Kafka password in clear text")
	}
	return tc, kafka.SASL{Mechanism: k.mechanism, Username: k.username, Password: password}, nil
}

// newKafkaClient is the one way every command connects to Kafka: the comma-separated brokers,
// client id, TLS and SASL from the security flags. The files are read and the warnings logged on
// the first call only. An error is a usage error (exit status 2, never retried).
func newKafkaClient(k *kafkaSecurityFlags, brokers, clientID string, log *slog.Logger) (*kafka.Client, error) {
	k.once.Do(func() { k.tlsConf, k.sasl, k.err = k.build(log) })
	if k.err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, k.err)
	}
	c, err := kafka.NewClient(kafka.Config{Brokers: brokerList(brokers), ClientID: clientID, TLS: k.tlsConf, SASL: k.sasl})
	if err != nil {
		// The flags are checked already: what is left is a user name or password SASLprep refuses.
		return nil, fmt.Errorf("%w: --kafka-sasl-mechanism %s: %w", errUsage, k.mechanism, err)
	}
	return c, nil
}

// stderrLogger is a text logger for the commands without --log-format (warnings only).
func stderrLogger(e *env) *slog.Logger { return slog.New(slog.NewTextHandler(e.stderr, nil)) }

// ---------------------------------------------------------------- API authentication

// headerList is the repeatable --api-header flag. Set never fails (a failure would print the
// value, maybe a secret); apiAuthFlags.validate checks the syntax and names only the header.
type headerList []string

func (h *headerList) String() string { return "" }

// Set adds one header; an env var may hold several, one per line.
func (h *headerList) Set(v string) error {
	for _, l := range strings.Split(v, "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			*h = append(*h, l)
		}
	}
	return nil
}

// apiAuthFlags are the credentials sent with every request to the source API.
type apiAuthFlags struct {
	bearerTokenFile string
	basicAuthFile   string
	headers         headerList
}

func (a *apiAuthFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.bearerTokenFile, "api-bearer-token-file", "", "file holding a token sent as 'Authorization: Bearer <token>' with every API request")
	fs.StringVar(&a.basicAuthFile, "api-basic-auth-file", "", "file holding user:password for HTTP basic authentication of every API request")
	fs.Var(&a.headers, "api-header", "extra header of every API request, 'Name: value'; a value @FILE is read from FILE; repeatable (the env var takes one per line)")
}

// validate checks the settings without reading files; messages name headers, never values.
func (a *apiAuthFlags) validate() []error {
	var errs []error
	if a.bearerTokenFile != "" && a.basicAuthFile != "" {
		errs = append(errs, errors.New("--api-bearer-token-file and --api-basic-auth-file exclude each other (both set Authorization)"))
	}
	for i, h := range a.headers {
		name, _, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		switch {
		case !ok || name == "" || strings.ContainsAny(name, " \t\r\n"):
			errs = append(errs, fmt.Errorf("--api-header #%d: want 'Name: value'", i+1))
		case strings.EqualFold(name, "Authorization") && (a.bearerTokenFile != "" || a.basicAuthFile != ""):
			errs = append(errs, fmt.Errorf("--api-header %s conflicts with --api-bearer-token-file/--api-basic-auth-file", name))
		}
	}
	return errs
}

// client returns the HTTP client of the source API on base (the process's API transport,
// source.NewTransport): with credentials, one whose transport adds them to every request to the
// host of apiURL (not to a redirect to another host). It has no Timeout of its own: the Source
// bounds each request by --api-timeout, without the pass's wait for its slot between the
// answer's headers and its body, which a client's Timeout would count.
func (a *apiAuthFlags) client(apiURL string, base http.RoundTripper) (*http.Client, error) {
	if errs := a.validate(); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", errUsage, errors.Join(errs...))
	}
	if a.bearerTokenFile == "" && a.basicAuthFile == "" && len(a.headers) == 0 {
		return &http.Client{Transport: base}, nil
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		// Not err: it quotes the URL, password included.
		return nil, fmt.Errorf("%w: --api-url %s: not a valid URL (reserved characters of a user name or password must be percent-encoded)", errUsage, source.RedactURL(apiURL))
	}
	h := http.Header{}
	if a.bearerTokenFile != "" {
		tok, err := readSecret(a.bearerTokenFile, "--api-bearer-token-file")
		if err != nil {
			return nil, err
		}
		h.Set("Authorization", "Bearer "+tok)
	}
	if a.basicAuthFile != "" {
		s, err := readSecret(a.basicAuthFile, "--api-basic-auth-file")
		if err != nil {
			return nil, err
		}
		user, pass, ok := strings.Cut(s, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("%w: --api-basic-auth-file %s: want user:password", errUsage, a.basicAuthFile)
		}
		r := &http.Request{Header: http.Header{}}
		r.SetBasicAuth(user, pass)
		h.Set("Authorization", r.Header.Get("Authorization"))
	}
	for _, line := range a.headers {
		name, value, _ := strings.Cut(line, ":")
		name, value = http.CanonicalHeaderKey(strings.TrimSpace(name)), strings.TrimSpace(value)
		if file, ok := strings.CutPrefix(value, "@"); ok {
			if value, err = readSecret(file, "--api-header "+name); err != nil {
				return nil, err
			}
		}
		if strings.ContainsAny(value, "\r\n") {
			return nil, fmt.Errorf("%w: --api-header %s: the value has a line break", errUsage, name)
		}
		h.Add(name, value)
	}
	return &http.Client{Transport: &authTransport{base: base, host: u.Host, header: h}}, nil
}

// readSecret reads a one-line secret file (one trailing newline ignored); errors name the file
// and the flag, never the content.
func readSecret(file, flagName string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", errUsage, flagName, err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%w: %s: %s is empty", errUsage, flagName, file)
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%w: %s: %s has more than one line", errUsage, flagName, file)
	}
	return s, nil
}

// authTransport adds the API credentials to requests for host.
type authTransport struct {
	base   http.RoundTripper
	host   string
	header http.Header
}

func (t *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != t.host {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	for k, v := range t.header {
		r.Header[k] = v
	}
	return t.base.RoundTrip(r)
}

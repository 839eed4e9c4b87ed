package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Config says how to reach one Kafka cluster.
type Config struct {
	Brokers  []string // bootstrap addresses, host:port
	ClientID string   // the client.id brokers log and quote (default "keysetsync")
	TLS      *tls.Config
	SASL     SASL // Mechanism "" : none
	// DialTimeout bounds connecting to a broker (default 10s); RequestTimeout one request and
	// its answer (default 30s).
	DialTimeout, RequestTimeout time.Duration
	// Dial, when set, opens the connections to the brokers instead of a net.Dialer (a proxy,
	// or a test that cuts connections).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// WrapTransport, when set, wraps the transport every request goes through: for tests that
	// hold, fail or count requests.
	WrapTransport func(kafkago.RoundTripper) kafkago.RoundTripper
}

// SASL is a SASL mechanism and its credentials.
type SASL struct {
	Mechanism string // "", "plain", "scram-sha-256" or "scram-sha-512" (any case)
	Username  string
	Password  string
}

// Client is a pool of connections to one Kafka cluster, shared by everything a process does
// there. It is safe for concurrent use; Close releases its idle connections.
type Client struct {
	cfg       Config
	transport *kafkago.Transport
	client    *kafkago.Client
	creates   *topicCreates
}

// NewClient checks cfg and returns a Client; it does not connect yet. An error (a SASL user
// name or password that SASLprep refuses, an unknown mechanism, no broker) never contains the
// password.
func NewClient(cfg Config) (*Client, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka: no broker address")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "keysetsync"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	mech, err := cfg.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	tr := &kafkago.Transport{ClientID: cfg.ClientID, DialTimeout: cfg.DialTimeout, Dial: cfg.Dial, TLS: cfg.TLS, SASL: mech}
	var rt kafkago.RoundTripper = tr
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(tr)
	}
	c := &Client{cfg: cfg, transport: tr,
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: rt, Timeout: cfg.RequestTimeout}}
	c.creates = &topicCreates{send: c.sendCreateTopics, timeout: cfg.RequestTimeout}
	return c, nil
}

// Brokers returns the bootstrap addresses.
func (c *Client) Brokers() []string { return c.cfg.Brokers }

// Close closes the Client's idle connections.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

func (s SASL) mechanism() (sasl.Mechanism, error) {
	switch m := strings.ToLower(s.Mechanism); m {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if m == "scram-sha-512" {
			algo = scram.SHA512
		}
		mech, err := scram.Mechanism(algo, s.Username, s.Password)
		if err != nil {
			// Not err: it may quote the password.
			return nil, fmt.Errorf("kafka: SASL %s: invalid user name or password (SASLprep)", s.Mechanism)
		}
		return mech, nil
	default:
		return nil, fmt.Errorf("kafka: SASL mechanism %q: want plain, scram-sha-256 or scram-sha-512", s.Mechanism)
	}
}

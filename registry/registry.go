// Package registry registers the value schema with a Confluent-compatible schema registry and
// frames values in the Confluent wire format: magic byte 0, the schema id as a 4-byte big-endian
// integer, then the Avro binary encoding. Consumers that read through a registry (Kafka Connect's
// AvroConverter, Flink, Spark, ksqlDB, the Confluent deserializers) resolve the id to the schema.
package registry

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// MagicByte starts every framed value; HeaderLen is the length of the frame before the Avro data.
const (
	MagicByte = 0
	HeaderLen = 5
)

// ContentType is the media type of the registry's REST API (v1).
const ContentType = "application/vnd.schemaregistry.v1+json"

// Errors of Register. None of them wraps a network error, so a caller's retry logic does not
// mistake a registry failure at start for a transient Kafka problem: it fails fast.
var (
	ErrUnreachable  = errors.New("schema registry unreachable")
	ErrIncompatible = errors.New("schema incompatible with the subject's registered versions")
	ErrUnauthorized = errors.New("schema registry refused the request (authentication/authorization)")
	ErrRegistry     = errors.New("schema registry error")
)

// Config configures a Client.
type Config struct {
	// URL is the registry's base URL, e.g. http://registry:8081 (a path prefix is kept).
	URL string
	// Username and Password, when Username is set, are sent as HTTP basic authentication. They
	// never appear in errors.
	Username, Password string
	// HTTPClient defaults to a client with Timeout.
	HTTPClient *http.Client
	// Timeout of one request when HTTPClient is nil (default 10 s).
	Timeout time.Duration
}

// Client talks to one schema registry. It is safe for concurrent use and caches the ids it
// registered.
type Client struct {
	base       *url.URL
	shown      string // the URL as errors print it: no user info
	user, pass string
	http       *http.Client

	mu    sync.Mutex
	cache map[[2]string]int
}

// New checks cfg and returns a Client; it does not contact the registry.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("schema registry URL %q: want http(s)://host[:port][/path]", redact(cfg.URL))
	}
	c := &Client{base: u, user: cfg.Username, pass: cfg.Password, http: cfg.HTTPClient, cache: map[[2]string]int{}}
	if u.User != nil { // credentials in the URL: use them, never print them
		if c.user == "" {
			c.user = u.User.Username()
			c.pass, _ = u.User.Password()
		}
		u.User = nil
	}
	c.shown = u.String()
	if c.http == nil {
		t := cfg.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		c.http = &http.Client{Timeout: t}
	}
	return c, nil
}

// URL is the registry's URL as errors and logs show it (without credentials).
func (c *Client) URL() string { return c.shown }

// TopicSubject is the subject of a topic's values under the TopicNameStrategy: <topic>-value.
func TopicSubject(topic string) string { return topic + "-value" }

// Register registers schema under subject (POST /subjects/{subject}/versions) and returns its
// id. Registering a schema the subject already has returns the existing id; ids are cached, so
// only the first call per subject and schema contacts the registry.
func (c *Client) Register(ctx context.Context, subject, schema string) (int, error) {
	key := [2]string{subject, schema}
	c.mu.Lock()
	id, ok := c.cache[key]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	body, err := json.Marshal(struct {
		Schema string `json:"schema"`
	}{schema})
	if err != nil {
		return 0, err
	}
	endpoint := c.base.JoinPath("subjects", subject, "versions")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%w: register subject %q at %s: %v", ErrRegistry, subject, c.shown, err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("Accept", ContentType+", application/json")
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Not wrapped (%v): the cause is a network error, the registry is not retried.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%w: register subject %q at %s: %v", ErrUnreachable, subject, c.shown, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("%w: register subject %q at %s: read response: %v", ErrUnreachable, subject, c.shown, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := errorMessage(raw)
		kind := ErrRegistry
		switch resp.StatusCode {
		case http.StatusConflict:
			kind = ErrIncompatible
		case http.StatusUnauthorized, http.StatusForbidden:
			kind = ErrUnauthorized
		}
		return 0, fmt.Errorf("%w: register subject %q at %s: HTTP %d: %s", kind, subject, c.shown, resp.StatusCode, msg)
	}
	var out struct {
		ID *int `json:"id"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.ID == nil || *out.ID < 0 || int64(*out.ID) > 1<<31-1 {
		return 0, fmt.Errorf("%w: register subject %q at %s: answer %q has no valid id", ErrRegistry, subject, c.shown, truncate(string(raw)))
	}
	c.mu.Lock()
	c.cache[key] = *out.ID
	c.mu.Unlock()
	return *out.ID, nil
}

// errorMessage is the message of a registry error body ({"error_code":N,"message":"..."}), or
// the body itself when it is not one.
func errorMessage(raw []byte) string {
	var e struct {
		Code    int    `json:"error_code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != "" {
		if e.Code != 0 {
			return fmt.Sprintf("%s (error_code %d)", e.Message, e.Code)
		}
		return e.Message
	}
	if s := strings.TrimSpace(string(raw)); s != "" {
		return truncate(s)
	}
	return "(empty body)"
}

func truncate(s string) string {
	if len(s) > 500 {
		return s[:500] + "..."
	}
	return s
}

// redact hides the user info of a URL that might carry a password.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "xxxxx" + s[i:]
	}
	return s
}

// Header returns the 5-byte Confluent frame header of schema id.
func Header(id int) []byte {
	return AppendHeader(make([]byte, 0, HeaderLen), id)
}

// AppendHeader appends the frame header of schema id (magic byte, big-endian id) to buf.
func AppendHeader(buf []byte, id int) []byte {
	return binary.BigEndian.AppendUint32(append(buf, MagicByte), uint32(id))
}

// Unframe splits a framed value into its schema id and Avro payload; ok is false when v does
// not start with the magic byte or is shorter than the header.
func Unframe(v []byte) (id int, payload []byte, ok bool) {
	if len(v) < HeaderLen || v[0] != MagicByte {
		return 0, v, false
	}
	return int(binary.BigEndian.Uint32(v[1:HeaderLen])), v[HeaderLen:], true
}

package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/schedule"
)

// SourceConfig configures a Source.
type SourceConfig struct {
	// URL of the keyset endpoint, e.g. http://127.0.0.1:5001/pagination/keyset. Its own
	// query parameters are sent with every request, besides the contract's. User info in it
	// (https://user:password@host/...) is sent as HTTP basic authentication and never shown:
	// every URL the Source shows or hands out has it replaced by RedactURL's "***".
	URL string
	// Contract names the API's parameters and where things are in its answers; the zero
	// value is DefaultContract (the playground's).
	Contract Contract
	// Client sends the requests; nil means one with a NewTransport(1) of its own. A Timeout of the
	// client's own would also count the pass's wait for its slot between an answer's headers and
	// its body (package schedule): leave it unset, Timeout bounds the requests.
	Client *http.Client
	// Timeout bounds one request, body included, not counting the pass's wait for its slot
	// after the answer's headers.
	Timeout time.Duration
	// MaxAttempts is how many times one page is requested before the pass fails.
	MaxAttempts int
	// BackoffMin and BackoffMax bound the exponential backoff (with full jitter) between
	// attempts; a Retry-After header of a 429 or 503 answer wins over it, up to MaxRetryAfter.
	BackoffMin, BackoffMax time.Duration
	MaxRetryAfter          time.Duration
	// MaxPageBytes caps the size of one answer: a larger one is an error, not an OOM.
	MaxPageBytes int64
	Logger       *slog.Logger
}

// Source reads pages from a keyset-paginated API: the first request of a pass carries the
// since parameter, the following ones the since parameter again (with the after-id parameter
// when the API has one) or the API's next token.
type Source struct {
	cfg  SourceConfig
	base *url.URL      // the endpoint without its user info: what requests go to
	user *url.Userinfo // the user info of the configured URL, sent as basic auth; nil if none
	log  *slog.Logger
	// fast: the contract is the playground's, whose pages decode in one pass into wireUsers.
	fast bool
}

// Query is one page request: Token when set (the token parameter), otherwise Since (the
// since parameter) and, when set, AfterID (the after-id parameter).
type Query struct {
	Since   time.Time
	AfterID string
	Token   *string
}

// RawPage is one answer of the API.
type RawPage struct {
	URL   string
	Next  *string // the next token; nil when the answer had none
	More  bool    // the answer says more records follow (always, when Next is set)
	Total *int64  // records the request matches, when the contract's TotalPath found them
	Bytes int
	// Wait is how long the API took to answer, until its headers: its latency, without the
	// body's transfer or its decoding.
	Wait time.Duration

	body []byte
	// users holds the records decoded in one pass over the body, when every one of them had
	// the right JSON types (the common case); records then stays nil until an invalid record
	// needs its original JSON. Otherwise records holds each element, to be decoded one by one
	// so that an error names the record and the field.
	users   []wireUser
	records []json.RawMessage
}

// Len is the number of records on the page.
func (p *RawPage) Len() int {
	if p.users != nil {
		return len(p.users)
	}
	return len(p.records)
}

// Raw returns record i as the API sent it.
func (p *RawPage) Raw(i int) json.RawMessage {
	if p.records == nil {
		// Parsed before, when the page was fetched: it parses again.
		if split, err := DefaultContract().splitPage(p.body); err == nil {
			p.records = split.records
		}
	}
	return p.records[i]
}

// user decodes record i as a user of the playground's contract.
func (p *RawPage) user(page, i int) (avro.User, error) {
	if p.users != nil {
		return fromWire(&p.users[i], page, i)
	}
	return DecodeUser(p.records[i], page, i)
}

// object decodes record i as a JSON object, numbers as json.Number so that integers of any
// size survive.
func (p *RawPage) object(i int) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(p.Raw(i)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("got %s, want a JSON object", describeJSON(v))
	}
	return m, nil
}

// NewSource validates cfg and fills in defaults.
func NewSource(cfg SourceConfig) (*Source, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not err: url.Parse's error quotes the URL, password included.
		return nil, fmt.Errorf("%w: api url %q: want http(s)://host/path (reserved characters of a user name or password percent-encoded)", ErrConfig, RedactURL(cfg.URL))
	}
	user := u.User
	u.User = nil
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 200 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(10*time.Second, cfg.BackoffMin)
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 5 * time.Minute
	}
	if cfg.MaxPageBytes <= 0 {
		cfg.MaxPageBytes = 64 << 20
	}
	if cfg.Contract.SinceParam == "" && cfg.Contract.RecordsPath == nil {
		cfg.Contract = DefaultContract()
	}
	if err := cfg.Contract.Validate(); err != nil {
		return nil, fmt.Errorf("%w: api contract: %w", ErrConfig, err)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: NewTransport(1)}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{cfg: cfg, base: u, user: user, log: log, fast: cfg.Contract.isDefault()}, nil
}

// URL returns the endpoint as configured with its user info redacted (RedactURL), as it
// appears in message headers.
func (s *Source) URL() string { return s.shown(s.base) }

// shown is u, a URL without user info, as the Source shows it: with "***@" in place of the
// configured URL's user info, if it had any.
func (s *Source) shown(u *url.URL) string {
	if s.user == nil {
		return u.String()
	}
	return withMaskedUser(u)
}

// Contract returns the API's contract.
func (s *Source) Contract() Contract { return s.cfg.Contract }

// Fetch requests one page, retrying server errors, throttling and network failures with
// backoff. page is the page's number within the pass, used in errors and logs.
func (s *Source) Fetch(ctx context.Context, page int, q Query) (*RawPage, error) {
	return s.fetch(ctx, page, q, NopObserver{}, nil)
}

// fetch is Fetch telling obs about pages, retries and failures.
func (s *Source) fetch(ctx context.Context, page int, q Query, obs Observer, lim Limiter) (*RawPage, error) {
	u := *s.base
	u.RawQuery = s.cfg.Contract.query(u.Query(), q).Encode()
	target := u.String() // what is requested: no user info
	shown := s.shown(&u) // what errors, logs and RawPage.URL show
	var lastErr error
	attempts := 0
	for attempt := 1; ; attempt++ {
		attempts = attempt
		release, err := acquire(ctx, lim)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		p, err := s.fetchOnce(ctx, target, shown)
		release(err)
		if err == nil {
			obs.PageFetched(p.Len(), p.Bytes, time.Since(start))
			return p, nil
		}
		var pe *PageError
		if errors.As(err, &pe) {
			pe.Page = page
			obs.APIFailed(APIErrorKind(err))
			return nil, err
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !retry.IsRetryable(err) || attempt >= s.cfg.MaxAttempts {
			break
		}
		wait := s.backoff(attempt, err)
		obs.APIRetry(APIErrorKind(err))
		s.log.Warn("api request failed, retrying", "page", page, "attempt", attempt, "max_attempts", s.cfg.MaxAttempts, "wait", wait, "err", err)
		// A backoff holds no slot (package schedule): other pipelines work meanwhile.
		if err := schedule.Outside(ctx, func() error { return retry.Sleep(ctx, wait) }); err != nil {
			return nil, err
		}
	}
	obs.APIFailed(APIErrorKind(lastErr))
	if errors.Is(lastErr, ErrAPI) {
		return nil, fmt.Errorf("page %d after %d of %d attempts: %w", page, attempts, s.cfg.MaxAttempts, lastErr)
	}
	return nil, fmt.Errorf("page %d: GET %s after %d of %d attempts: %w: %w", page, shown, attempts, s.cfg.MaxAttempts, ErrAPI, lastErr)
}

func (s *Source) backoff(attempt int, err error) time.Duration {
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter > 0 {
		return min(he.RetryAfter, s.cfg.MaxRetryAfter)
	}
	ceil := s.cfg.BackoffMin << min(attempt-1, 30)
	if ceil <= 0 || ceil > s.cfg.BackoffMax {
		ceil = s.cfg.BackoffMax
	}
	// Full jitter: spread retries of many pipelines so they do not hit the API in lockstep.
	return s.cfg.BackoffMin + rand.N(ceil-s.cfg.BackoffMin+1)
}

// bodyGrace is how long a pass keeps its slot while it reads an answer's body: a body comes
// in at once from an API that is not stalled (a page of 1,000 records in about a millisecond on
// a local network), and one that stalls mid-way gives the slot to another pass after this.
const bodyGrace = 250 * time.Millisecond

// fetchOnce requests target; shown is target as errors and the page show it.
//
// The wait for the answer's headers only waits on the API: the pass's slot (package schedule)
// goes to another pipeline meanwhile, so a stalled API holds only its own pipeline. The body is
// read after the pass has its slot back: it waits in the connection, not in memory, while the
// pass queues for its slot, so the pages in memory are bounded by the slots, not by the
// pipelines (with a thousand of them a page each was most of the process's heap).
func (s *Source) fetchOnce(ctx context.Context, target, shown string) (*RawPage, error) {
	// The timeout bounds the API's answer only, not the wait for the slot after its headers:
	// with 1,000 pipelines a page answered in time may queue behind the other passes for longer
	// than the timeout, and was then thrown away and fetched again, again and again.
	rctx := newRequestContext(ctx, s.cfg.Timeout)
	defer rctx.end(context.Canceled)
	var resp *http.Response
	var body []byte
	var wait time.Duration // until the answer's headers: what the backfill weighs (Config.BackfillMinWait)
	err := schedule.Outside(ctx, func() error {
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		if s.user != nil {
			// As net/http does for user info in a request's URL (a client's transport may
			// still set its own Authorization over it); the URL itself never carries it, so
			// neither do the *url.Error messages of the client.
			pw, _ := s.user.Password()
			req.SetBasicAuth(s.user.Username(), pw)
		}
		sent := time.Now()
		resp, err = s.cfg.Client.Do(req)
		if err != nil {
			return err
		}
		wait = time.Since(sent)
		rctx.pause() // now the pass waits for its slot
		return nil
	})
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	rctx.resume()
	err = schedule.OutsideAfter(ctx, bodyGrace, func() error {
		var err error
		body, err = io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxPageBytes+1))
		if err != nil {
			return fmt.Errorf("read body of GET %s (status %d, %d bytes read): %w", shown, resp.StatusCode, len(body), &transferError{err})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, newHTTPError(shown, resp, body)
	}
	if int64(len(body)) > s.cfg.MaxPageBytes {
		return nil, &PageError{URL: shown, Err: fmt.Errorf("answer larger than the limit of %d bytes", s.cfg.MaxPageBytes)}
	}
	// One pass over the body is enough for a well-typed page of the playground's contract
	// (JSON decoding is the largest part of a sync's CPU); any other page is split along the
	// contract's paths, and its records decoded one by one, so an error names the record.
	if s.fast {
		var fast struct {
			Data        *[]wireUser `json:"data"`
			ScrollParam *string     `json:"scroll_param"`
		}
		if json.Unmarshal(body, &fast) == nil && fast.Data != nil && *fast.Data != nil && (fast.ScrollParam == nil || *fast.ScrollParam != "") {
			return &RawPage{URL: shown, Next: fast.ScrollParam, More: fast.ScrollParam != nil, Bytes: len(body), Wait: wait, body: body, users: *fast.Data}, nil
		}
	}
	p, err := s.cfg.Contract.splitPage(body)
	if err != nil {
		return nil, &PageError{URL: shown, Err: err}
	}
	p.URL, p.Wait = shown, wait
	return p, nil
}

// ParsePage splits an answer of the playground's contract into its records, still JSON, and
// its scroll_param (nil when absent, null or "": the pass ends).
func ParsePage(body []byte) (records []json.RawMessage, next *string, err error) {
	p, err := DefaultContract().splitPage(body)
	if err != nil {
		return nil, nil, err
	}
	return p.records, p.Next, nil
}

func newHTTPError(shown string, resp *http.Response, body []byte) *HTTPError {
	e := &HTTPError{URL: shown, Status: resp.StatusCode}
	var msg struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Error != "" {
		e.Message = msg.Error
	} else {
		e.Message = string(body[:min(len(body), 200)])
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = max(time.Until(t), 0)
		}
	}
	return e
}

// transferError is a failure reading the body of an answer the API had begun to send: the
// connection or stream broke off mid-transfer (an unexpected EOF, a reset, an HTTP/2 stream
// error, whose types net/http does not export). Another attempt does not meet it, so it is
// retryable whatever its cause; a cancelled request is not (retry.IsRetryable checks that first).
type transferError struct{ err error }

func (e *transferError) Error() string { return e.err.Error() }
func (e *transferError) Unwrap() error { return e.err }

// Retryable: always (see transferError).
func (e *transferError) Retryable() bool { return true }

// redactedUser is what RedactURL shows in place of a URL's user info. All of it is hidden, the
// user name too: some APIs take a key as the user name of basic authentication.
const redactedUser = "***"

// RedactURL returns s with its user info, if any, replaced by "***": https://***@host/path.
// Every URL keysetsync shows or writes (errors, logs, message and dead-letter headers, the
// config command) goes through it. A string that does not parse as a URL with an authority
// loses everything up to the last '@' of what would be its authority.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Opaque == "" { // "user:pw@host" parses, as scheme "user"
		if u.User == nil {
			return s
		}
		u.User = nil
		return withMaskedUser(u)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	} else {
		scheme += "://"
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		return scheme + redactedUser + rest[at:]
	}
	return s
}

// withMaskedUser is u, which has no user info, written with redactedUser as its user info.
func withMaskedUser(u *url.URL) string {
	// url.URL would percent-encode the '*'s of a Userinfo; write them in after the scheme.
	s := u.String()
	if rest, ok := strings.CutPrefix(s, u.Scheme+"://"); ok {
		return u.Scheme + "://" + redactedUser + "@" + rest
	}
	return s
}

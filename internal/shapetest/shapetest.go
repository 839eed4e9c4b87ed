// Package shapetest serves a fake "orders" API whose shape is deliberately unlike the
// playground's users API, so that keysetsync's configurable source contract is tested against a
// second shape: a compound (time, id) keyset instead of a time-only scroll, an opaque cursor as an
// alternative, records nested under result.orders, numeric ids, epoch times, nested objects,
// arrays, maps, decimals as strings, nullable and missing fields, and soft deletes.
//
// # Endpoint
//
//	GET /v2/orders?modified_since=<T>[&after_id=<id>][&limit=<n>]
//	GET /v2/orders?cursor=<token>[&limit=<n>]
//
// T is in Config.TimeFormat. Without after_id a page holds the records with meta.modified >= T
// (inclusive); with it, those with (meta.modified, order_id) > (T, id) in lexicographic order.
// Either way records are sorted by (meta.modified, order_id), both numerically. cursor=<token>
// means the same as the modified_since and after_id it encodes (see EncodeCursor). limit is the
// page size, 1 to MaxPageSize (default Config.PageSize).
//
// A page answers 200
//
//	{"result": {"orders": [...]}, "paging": {"next_cursor": "<token>"|null, "total_matching": n}}
//
// next_cursor is null when no record follows the page; total_matching counts the records the
// request's filter matches before the limit. Anything else (unknown or repeated parameters, bad
// values, cursor mixed with modified_since or after_id) answers 400 {"error": "..."} naming the
// parameter.
//
// # Records
//
// Records never leave the API: Delete sets meta.deleted and moves meta.modified forward, like a
// soft delete. Update and Delete stamp records with Clock() but always strictly after the newest
// meta.modified, so an update can never land behind a keyset position a client has already
// passed; sources whose clocks allow that are a different test.
//
// Orders are stored immutable and replaced on change, so pages are rendered outside the lock.
package shapetest

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed testdata/order.avsc
var orderSchema string

// Schema returns the Avro schema (JSON) of the records, the content of testdata/order.avsc.
// meta.modified is timestamp-millis whatever the TimeFormat: the mapper is told the unit.
func Schema() string { return orderSchema }

// Path is the only path Handler serves.
const Path = "/v2/orders"

// Query parameters of Path.
const (
	ParamModifiedSince = "modified_since"
	ParamAfterID       = "after_id"
	ParamCursor        = "cursor"
	ParamLimit         = "limit"
)

// TimeFormat is the representation of meta.modified, of modified_since and of the time inside
// cursor tokens.
type TimeFormat string

// The supported time formats.
const (
	// EpochMillis is integer milliseconds since the Unix epoch, a JSON number in records.
	EpochMillis TimeFormat = "epoch_ms"
	// EpochSeconds is integer seconds since the Unix epoch, a JSON number in records.
	EpochSeconds TimeFormat = "epoch_s"
	// RFC3339 is RFC 3339 in UTC with milliseconds in records (2024-01-01T00:00:00.337Z), a JSON
	// string. Queries may give 0 to 9 fractional digits but must end in Z.
	RFC3339 TimeFormat = "rfc3339"
)

// CreatedLayout is the format of meta.created in every TimeFormat, and of meta.modified in
// RFC3339.
const CreatedLayout = "2006-01-02T15:04:05.000Z"

// Defaults and limits applied by New.
const (
	DefaultRecords  = 100
	DefaultPageSize = 25
	MaxPageSize     = 500
	// MaxRecords bounds Config.Records; ids are drawn from a range proportional to it.
	MaxRecords = 1_000_000
)

// DefaultStart returns meta.modified of the oldest records when Config.Start is zero:
// 2024-01-01T00:00:00Z.
func DefaultStart() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }

// Steps between successive groups of TieWidth records: under a second where the format has
// milliseconds, so that most times have a non-zero millisecond part a client must not drop.
const (
	stepSubSecond = 337 * time.Millisecond
	stepWhole     = time.Second
)

// maxCreatedAge is how long before its first meta.modified a record may have been created.
const maxCreatedAge = 30 * 24 * time.Hour

// The values of status, in the order of the Avro enum's symbols.
const (
	StatusPending   = "pending"
	StatusPaid      = "paid"
	StatusShipped   = "shipped"
	StatusCancelled = "cancelled"
)

// Statuses returns the values of status, in the order of the Avro enum's symbols.
func Statuses() []string { return []string{StatusPending, StatusPaid, StatusShipped, StatusCancelled} }

// Order is one record. Its JSON form (see Server.Snapshot) depends on the server's TimeFormat, so
// Order has no JSON tags of its own.
type Order struct {
	OrderID  int64
	Modified time.Time // meta.modified, in the TimeFormat's precision
	Created  time.Time // meta.created, millisecond precision
	Deleted  bool      // meta.deleted
	Customer Customer
	Status   string
	Items    []Item
	Total    string            // sum of Qty*Price, two decimals
	Tags     []string          // nil: the record has no "tags" key; empty: "tags": []
	Attrs    map[string]string // never nil
}

// Customer is the customer object of an order.
type Customer struct {
	Name    string  `json:"name"`
	Email   *string `json:"email"` // nil: JSON null
	Address Address `json:"address"`
}

// Address is the customer's address.
type Address struct {
	City string `json:"city"`
	Zip  string `json:"zip"`
}

// Item is one line of an order. Price is a decimal string with two decimals.
type Item struct {
	SKU   string `json:"sku"`
	Qty   int    `json:"qty"`
	Price string `json:"price"`
}

func (o *Order) clone() *Order {
	c := *o
	c.Items = slices.Clone(o.Items)
	if o.Tags != nil {
		c.Tags = slices.Clone(o.Tags)
	}
	c.Attrs = make(map[string]string, len(o.Attrs))
	for k, v := range o.Attrs {
		c.Attrs[k] = v
	}
	if o.Customer.Email != nil {
		e := *o.Customer.Email
		c.Customer.Email = &e
	}
	return &c
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Records is the number of orders generated (default DefaultRecords, at most MaxRecords).
	Records int
	// PageSize is the page size when a request gives no limit (default DefaultPageSize, at most
	// MaxPageSize).
	PageSize int
	// TieWidth is how many consecutive records share each meta.modified (default 1). Wider than
	// a page, it proves that a client pages through ties with after_id.
	TieWidth int
	// TimeFormat is the representation of times (default EpochMillis).
	TimeFormat TimeFormat
	// Start is meta.modified of the oldest records (default DefaultStart), truncated to the
	// format's precision. Later groups of TieWidth records follow every 337 ms (every second
	// with EpochSeconds). It must be within the years 1900 to 2199.
	Start time.Time
	// Seed makes the data and the records picked by Update and Delete deterministic.
	Seed uint64
	// Clock gives the time of updates and deletes (default time.Now).
	Clock func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Records == 0 {
		c.Records = DefaultRecords
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.TieWidth == 0 {
		c.TieWidth = 1
	}
	if c.TimeFormat == "" {
		c.TimeFormat = EpochMillis
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Records < 0 || c.Records > MaxRecords {
		bad("records must be between 0 (default %d) and %d, got %d", DefaultRecords, MaxRecords, c.Records)
	}
	if c.PageSize < 1 || c.PageSize > MaxPageSize {
		bad("page size must be between 1 and %d, got %d", MaxPageSize, c.PageSize)
	}
	if c.TieWidth < 1 {
		bad("tie width must be at least 1, got %d", c.TieWidth)
	}
	if c.TimeFormat.unit() == 0 {
		bad("time format must be %q, %q or %q, got %q", EpochMillis, EpochSeconds, RFC3339, c.TimeFormat)
	}
	if y := c.Start.UTC().Year(); y < 1900 || y >= 2200 {
		bad("start must be within the years 1900 to 2199, got %s", c.Start.UTC().Format(time.RFC3339Nano))
	}
	return errors.Join(errs...)
}

// unit is the precision of the format in nanoseconds, 0 for an unknown format.
func (f TimeFormat) unit() int64 {
	switch f {
	case EpochMillis, RFC3339:
		return int64(time.Millisecond)
	case EpochSeconds:
		return int64(time.Second)
	}
	return 0
}

// format renders a time given in Unix nanoseconds, on the format's grid, as it appears in
// modified_since and in cursor tokens.
func (f TimeFormat) format(ns int64) string {
	switch f {
	case EpochSeconds:
		return strconv.FormatInt(floorDiv(ns, int64(time.Second)), 10)
	case RFC3339:
		return time.Unix(0, ns).UTC().Format(CreatedLayout)
	default:
		return strconv.FormatInt(floorDiv(ns, int64(time.Millisecond)), 10)
	}
}

// jsonValue is meta.modified as it appears in a record: a number for the epoch formats.
func (f TimeFormat) jsonValue(ns int64) any {
	switch f {
	case EpochSeconds:
		return floorDiv(ns, int64(time.Second))
	case RFC3339:
		return f.format(ns)
	default:
		return floorDiv(ns, int64(time.Millisecond))
	}
}

// parse reads a time strictly and returns it in Unix nanoseconds. Times beyond the int64
// nanosecond range are clamped: no record is that far out, so filters keep their meaning.
func (f TimeFormat) parse(v string) (int64, error) {
	switch f {
	case RFC3339:
		if !isRFC3339UTC(v) {
			return 0, fmt.Errorf("%q is not an RFC 3339 UTC time like 2024-01-01T00:00:00.337Z", v)
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return 0, fmt.Errorf("%q is not an RFC 3339 UTC time: %w", v, err)
		}
		return clampNanos(t), nil
	default:
		n, ok := parseCanonicalInt(v)
		if !ok {
			return 0, fmt.Errorf("%q is not a decimal integer of %s", v, f.describe())
		}
		return mulClamp(n, f.unit()), nil
	}
}

func (f TimeFormat) describe() string {
	if f == EpochSeconds {
		return "seconds since the Unix epoch"
	}
	return "milliseconds since the Unix epoch"
}

// isRFC3339UTC checks the shape YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z: time.Parse alone would also
// accept offsets and a comma before the fraction.
func isRFC3339UTC(v string) bool {
	const base = "dddd-dd-ddTdd:dd:dd"
	if len(v) < len(base)+1 || v[len(v)-1] != 'Z' {
		return false
	}
	for i := 0; i < len(base); i++ {
		if base[i] == 'd' {
			if v[i] < '0' || v[i] > '9' {
				return false
			}
		} else if v[i] != base[i] {
			return false
		}
	}
	frac := v[len(base) : len(v)-1]
	if frac == "" {
		return true
	}
	if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
		return false
	}
	for i := 1; i < len(frac); i++ {
		if frac[i] < '0' || frac[i] > '9' {
			return false
		}
	}
	return true
}

// parseCanonicalInt accepts a decimal int64 written the way strconv.FormatInt writes it: no
// sign other than '-', no leading zeros, no spaces.
func parseCanonicalInt(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != v {
		return 0, false
	}
	return n, true
}

func mulClamp(n, unit int64) int64 {
	switch {
	case n > math.MaxInt64/unit:
		return math.MaxInt64
	case n < math.MinInt64/unit:
		return math.MinInt64
	}
	return n * unit
}

func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// EncodeCursor returns the cursor token meaning modified_since=t&after_id=id, t being in the
// server's TimeFormat (see Server.FormatTime). Tokens are URL-safe base64 of "t:id"; clients
// are meant to treat them as opaque.
func EncodeCursor(t string, id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t + ":" + strconv.FormatInt(id, 10)))
}

func decodeCursor(f TimeFormat, token string) (since, afterID int64, err error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil {
		return 0, 0, fmt.Errorf("not a token of this API (%w)", err)
	}
	// RFC 3339 times hold colons: the id follows the last one.
	i := strings.LastIndexByte(string(b), ':')
	if i < 0 {
		return 0, 0, errors.New("not a token of this API")
	}
	t, id := string(b[:i]), string(b[i+1:])
	if since, err = f.parse(t); err != nil {
		return 0, 0, fmt.Errorf("not a token of this API: %w", err)
	}
	afterID, okID := parseCanonicalInt(id)
	if !okID {
		return 0, 0, fmt.Errorf("not a token of this API: bad id %q", id)
	}
	return since, afterID, nil
}

// entry is one record in the index, its key copied out for the binary search.
type entry struct {
	mod int64 // meta.modified, Unix nanoseconds
	id  int64
	o   *Order // never modified once in the index
}

func (e entry) less(o entry) bool {
	if e.mod != o.mod {
		return e.mod < o.mod
	}
	return e.id < o.id
}

// Server is an orders API. Its methods are safe for concurrent use.
type Server struct {
	cfg  Config
	unit int64

	mu      sync.RWMutex
	entries []entry    // sorted by (mod, id)
	rng     *rand.Rand // picks records to update; guarded by mu (write)

	stats struct {
		requests, pages, served, badRequests, updates, deletes atomic.Uint64
	}
}

// New validates cfg, applies defaults and generates the records.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("shapetest: %w", err)
	}
	unit := cfg.TimeFormat.unit()
	cfg.Start = time.Unix(0, floorDiv(cfg.Start.UnixNano(), unit)*unit).UTC()
	// Separate streams, so that the data does not depend on how Update and Delete are called.
	return &Server{
		cfg:     cfg,
		unit:    unit,
		entries: generate(cfg, rand.New(rand.NewPCG(cfg.Seed, 0xda7a))),
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x5eed_0fde)),
	}, nil
}

// generate makes cfg.Records orders sorted by (modified, id).
func generate(cfg Config, rng *rand.Rand) []entry {
	n := cfg.Records
	step := stepSubSecond
	if cfg.TimeFormat == EpochSeconds {
		step = stepWhole
	}
	// Ids are sparse and of mixed widths so that sorting them as strings would differ from the
	// numeric order the API promises.
	idRange := 50*n + 100
	seen := make(map[int64]struct{}, n)
	out := make([]entry, 0, n)
	start := cfg.Start.UnixNano()
	for i := 0; i < n; i++ {
		var id int64
		for {
			id = 1 + rng.Int64N(int64(idRange))
			if _, dup := seen[id]; !dup {
				seen[id] = struct{}{}
				break
			}
		}
		mod := start + int64(i/cfg.TieWidth)*int64(step)
		o := randomOrder(rng, id, time.Unix(0, mod).UTC())
		out = append(out, entry{mod: mod, id: id, o: o})
	}
	slices.SortFunc(out, func(a, b entry) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	return out
}

func randomOrder(rng *rand.Rand, id int64, modified time.Time) *Order {
	// Non-ASCII and quotes so that a mapper's string handling gets exercised.
	firstNames := [...]string{"Ada", "Bjørn", "Chen", "Dalia", "Emeka", "Fatima", "Grace", "Hiro", "Inès", "José", "Kai", "Lena"}
	lastNames := [...]string{"Okafor", "Lovelace", "Müller", "Nakamura", "O'Brien", "Silva", "Tanaka", "Van der Berg", "Wójcik", "Zhang"}
	cities := [...]string{"Lagos", "München", "São Paulo", "Osaka", "Dublin", "Kraków", "Austin", "Lyon"}
	tagNames := [...]string{"gift", "express", "fragile", "b2b", "repeat", "promo"}
	attrKeys := [...]string{"coupon", "gift_note", "warehouse", "source"}
	statuses := Statuses()
	first, last := firstNames[rng.IntN(len(firstNames))], lastNames[rng.IntN(len(lastNames))]
	o := &Order{
		OrderID:  id,
		Modified: modified,
		Created:  modified.Add(-time.Duration(rng.Int64N(int64(maxCreatedAge/time.Millisecond))) * time.Millisecond),
		Customer: Customer{
			Name:    first + " " + last,
			Address: Address{City: cities[rng.IntN(len(cities))], Zip: fmt.Sprintf("%05d", rng.IntN(100000))},
		},
		Status: statuses[rng.IntN(len(statuses))],
		Attrs:  map[string]string{},
	}
	if rng.IntN(5) != 0 {
		email := strings.ToLower(fmt.Sprintf("%s.%s.%d@example.com", first[:1], strings.ReplaceAll(last, " ", ""), id))
		o.Customer.Email = &email
	}
	for range 1 + rng.IntN(4) {
		o.Items = append(o.Items, Item{
			SKU:   fmt.Sprintf("%c-%d", 'A'+rng.IntN(26), 1+rng.IntN(99)),
			Qty:   1 + rng.IntN(5),
			Price: formatCents(int64(100 + rng.IntN(99900))),
		})
	}
	o.Total = totalOf(o.Items)
	if rng.IntN(4) != 0 { // a quarter of the records have no "tags" key at all
		o.Tags = []string{}
		for _, i := range rng.Perm(len(tagNames))[:rng.IntN(4)] {
			o.Tags = append(o.Tags, tagNames[i])
		}
	}
	for _, i := range rng.Perm(len(attrKeys))[:rng.IntN(3)] {
		o.Attrs[attrKeys[i]] = fmt.Sprintf("v%d", rng.IntN(1000))
	}
	return o
}

func formatCents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }

// parseCents reads prices this package wrote, so it does not need to be general.
func parseCents(p string) int64 {
	whole, frac, _ := strings.Cut(p, ".")
	w, _ := strconv.ParseInt(whole, 10, 64)
	f, _ := strconv.ParseInt(frac, 10, 64)
	return w*100 + f
}

func totalOf(items []Item) string {
	var sum int64
	for _, it := range items {
		sum += int64(it.Qty) * parseCents(it.Price)
	}
	return formatCents(sum)
}

// Config returns the configuration in effect, defaults applied and Start truncated.
func (s *Server) Config() Config { return s.cfg }

// FormatTime renders t, truncated to the TimeFormat's precision, as modified_since expects it
// (and as cursor tokens hold it).
func (s *Server) FormatTime(t time.Time) string {
	return s.cfg.TimeFormat.format(floorDiv(clampNanos(t), s.unit) * s.unit)
}

// ParseTime reads a time in the TimeFormat as strictly as modified_since is read. For the epoch
// formats v is the JSON number's text.
func (s *Server) ParseTime(v string) (time.Time, error) {
	ns, err := s.cfg.TimeFormat.parse(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("shapetest: %w", err)
	}
	return time.Unix(0, ns).UTC(), nil
}

// Stats are counters since New.
type Stats struct {
	Requests    uint64 // HTTP requests answered, errors included
	Pages       uint64 // pages answered 200
	Records     uint64 // records in those pages
	BadRequests uint64 // answers 4xx
	Updates     uint64 // records updated by Update
	Deletes     uint64 // records soft-deleted by Delete
	Orders      int    // records in the API, soft-deleted ones included
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	s.mu.RLock()
	n := len(s.entries)
	s.mu.RUnlock()
	return Stats{
		Requests:    s.stats.requests.Load(),
		Pages:       s.stats.pages.Load(),
		Records:     s.stats.served.Load(),
		BadRequests: s.stats.badRequests.Load(),
		Updates:     s.stats.updates.Load(),
		Deletes:     s.stats.deletes.Load(),
		Orders:      n,
	}
}

// Update gives min(n, live records) distinct random records that are not deleted a new
// meta.modified (see nextTime), a different status and a different total (one item's qty
// changes). It returns them, sorted by id.
func (s *Server) Update(n int) []Order {
	statuses := Statuses()
	out := s.touch(n, func(o *Order) {
		o.Status = statuses[(slices.Index(statuses, o.Status)+1+s.rng.IntN(len(statuses)-1))%len(statuses)]
		it := &o.Items[s.rng.IntN(len(o.Items))]
		it.Qty = it.Qty%5 + 1 // qty stays 1..5 and always changes, so the total does too
		o.Total = totalOf(o.Items)
	})
	s.stats.updates.Add(uint64(len(out)))
	return out
}

// Delete soft-deletes min(n, live records) distinct random records that are not deleted yet:
// meta.deleted becomes true and meta.modified moves forward as in Update. They stay in the API.
// It returns them, sorted by id.
func (s *Server) Delete(n int) []Order {
	out := s.touch(n, func(o *Order) { o.Deleted = true })
	s.stats.deletes.Add(uint64(len(out)))
	return out
}

// touch replaces up to n random live records by changed copies stamped with one new time, and
// moves them to the end of the index.
func (s *Server) touch(n int, change func(*Order)) []Order {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []int
	for i, e := range s.entries {
		if !e.o.Deleted {
			live = append(live, i)
		}
	}
	n = min(n, len(live))
	if n == 0 {
		return nil
	}
	for i := range n { // partial Fisher-Yates: live[:n] is the pick
		j := i + s.rng.IntN(len(live)-i)
		live[i], live[j] = live[j], live[i]
	}
	picked := live[:n]
	slices.Sort(picked)
	now := s.nextTimeLocked()
	moved := make([]entry, 0, n)
	for _, i := range picked {
		o := s.entries[i].o.clone()
		o.Modified = time.Unix(0, now).UTC()
		change(o)
		moved = append(moved, entry{mod: now, id: o.OrderID, o: o})
	}
	kept := make([]entry, 0, len(s.entries))
	for i, e := range s.entries {
		if _, found := slices.BinarySearch(picked, i); !found {
			kept = append(kept, e)
		}
	}
	slices.SortFunc(moved, func(a, b entry) int { return cmpInt(a.id, b.id) })
	s.entries = append(kept, moved...)
	out := make([]Order, len(moved))
	for i, e := range moved {
		out[i] = *e.o.clone()
	}
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// nextTimeLocked is Clock() in the format's precision, moved to one unit after the newest
// record when it is not already later, so appended records keep the index sorted and always
// follow every existing keyset position.
func (s *Server) nextTimeLocked() int64 {
	now := floorDiv(clampNanos(s.cfg.Clock()), s.unit) * s.unit
	if n := len(s.entries); n > 0 && now <= s.entries[n-1].mod {
		now = s.entries[n-1].mod + s.unit
	}
	return now
}

// Snapshot returns every record, soft-deleted ones included, as the JSON object the API serves
// for it, keyed by order_id in decimal.
func (s *Server) Snapshot() map[string]json.RawMessage {
	s.mu.RLock()
	orders := make([]*Order, len(s.entries))
	for i, e := range s.entries {
		orders[i] = e.o
	}
	s.mu.RUnlock()
	out := make(map[string]json.RawMessage, len(orders))
	for _, o := range orders {
		out[strconv.FormatInt(o.OrderID, 10)] = s.render(o)
	}
	return out
}

// wireOrder is the JSON form of an Order; fields are in the order the API writes them.
type wireOrder struct {
	OrderID  int64             `json:"order_id"`
	Meta     wireMeta          `json:"meta"`
	Customer Customer          `json:"customer"`
	Status   string            `json:"status"`
	Items    []Item            `json:"items"`
	Total    string            `json:"total"`
	Tags     []string          `json:"tags,omitzero"` // omitzero keeps an empty list but drops nil
	Attrs    map[string]string `json:"attrs"`
}

type wireMeta struct {
	Modified any    `json:"modified"`
	Created  string `json:"created"`
	Deleted  bool   `json:"deleted"`
}

func (s *Server) render(o *Order) json.RawMessage {
	b, err := json.Marshal(wireOrder{
		OrderID: o.OrderID,
		Meta: wireMeta{
			Modified: s.cfg.TimeFormat.jsonValue(o.Modified.UnixNano()),
			Created:  o.Created.UTC().Format(CreatedLayout),
			Deleted:  o.Deleted,
		},
		Customer: o.Customer,
		Status:   o.Status,
		Items:    o.Items,
		Total:    o.Total,
		Tags:     o.Tags,
		Attrs:    o.Attrs,
	})
	if err != nil {
		// Every field is a string, number, bool, slice or map of those: Marshal cannot fail.
		panic(fmt.Sprintf("shapetest: render order %d: %v", o.OrderID, err))
	}
	return b
}

// Page is the body of a 200 answer. Orders is never null.
type Page struct {
	Result PageResult `json:"result"`
	Paging Paging     `json:"paging"`
}

// PageResult holds the records of a page.
type PageResult struct {
	Orders []json.RawMessage `json:"orders"`
}

// Paging tells how to continue. NextCursor is nil (JSON null) when no record follows the page.
type Paging struct {
	NextCursor    *string `json:"next_cursor"`
	TotalMatching int     `json:"total_matching"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	if r.URL.Path != Path {
		s.writeError(w, http.StatusNotFound, fmt.Sprintf("no such path %q: the API is GET %s", r.URL.Path, Path))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: use GET", r.Method, Path))
		return
	}
	q, msg := s.parseQuery(r.URL.RawQuery)
	if msg != "" {
		s.writeError(w, http.StatusBadRequest, msg)
		return
	}
	orders, total := s.page(q)
	page := Page{Result: PageResult{Orders: make([]json.RawMessage, len(orders))}, Paging: Paging{TotalMatching: total}}
	for i, o := range orders {
		page.Result.Orders[i] = s.render(o)
	}
	if total > len(orders) && len(orders) > 0 {
		last := orders[len(orders)-1]
		token := EncodeCursor(s.cfg.TimeFormat.format(last.Modified.UnixNano()), last.OrderID)
		page.Paging.NextCursor = &token
	}
	s.stats.pages.Add(1)
	s.stats.served.Add(uint64(len(orders)))
	writeJSON(w, http.StatusOK, page)
}

// query is a parsed request: records after (since, afterID), or at or after since when
// !hasAfter.
type query struct {
	since    int64
	afterID  int64
	hasAfter bool
	limit    int
}

// parseQuery returns the request's filter, or a message for a 400 answer.
func (s *Server) parseQuery(raw string) (query, string) {
	q := query{limit: s.cfg.PageSize}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Sprintf("malformed query string: %v", err)
	}
	known := []string{ParamModifiedSince, ParamAfterID, ParamCursor, ParamLimit}
	var unknown []string
	for k := range vals {
		if !slices.Contains(known, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return q, fmt.Sprintf("unknown query parameters: %s (accepted: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	for _, k := range known {
		if len(vals[k]) > 1 {
			return q, fmt.Sprintf("query parameter %s given %d times: give it once", k, len(vals[k]))
		}
	}
	has := func(k string) bool { _, ok := vals[k]; return ok }
	if has(ParamLimit) {
		v := vals.Get(ParamLimit)
		n, ok := parseCanonicalInt(v)
		if !ok || n < 1 || n > MaxPageSize {
			return q, fmt.Sprintf("invalid %s %q: give an integer from 1 to %d", ParamLimit, v, MaxPageSize)
		}
		q.limit = int(n)
	}
	f := s.cfg.TimeFormat
	switch {
	case has(ParamCursor) && (has(ParamModifiedSince) || has(ParamAfterID)):
		return q, fmt.Sprintf("give either %s (with optional %s) or %s, not both", ParamModifiedSince, ParamAfterID, ParamCursor)
	case has(ParamCursor):
		v := vals.Get(ParamCursor)
		since, after, err := decodeCursor(f, v)
		if err != nil {
			return q, fmt.Sprintf("invalid %s %q: %v; pass the next_cursor of the previous page unchanged", ParamCursor, v, err)
		}
		q.since, q.afterID, q.hasAfter = since, after, true
	case has(ParamModifiedSince):
		v := vals.Get(ParamModifiedSince)
		since, err := f.parse(v)
		if err != nil {
			return q, fmt.Sprintf("invalid %s: %v", ParamModifiedSince, err)
		}
		q.since = since
		if has(ParamAfterID) {
			v := vals.Get(ParamAfterID)
			id, ok := parseCanonicalInt(v)
			if !ok {
				return q, fmt.Sprintf("invalid %s %q: give an order_id as a decimal integer", ParamAfterID, v)
			}
			q.afterID, q.hasAfter = id, true
		}
	case has(ParamAfterID):
		return q, fmt.Sprintf("%s needs %s: give the meta.modified and order_id of the last record read", ParamAfterID, ParamModifiedSince)
	default:
		return q, fmt.Sprintf("missing query parameter: give %s=<time as %s> for the first page, then %s, or %s", ParamModifiedSince, f, ParamAfterID, ParamCursor)
	}
	return q, ""
}

// page returns the first q.limit records matching q and how many match in all.
func (s *Server) page(q query) (orders []*Order, total int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := sort.Search(len(s.entries), func(i int) bool {
		e := s.entries[i]
		if e.mod != q.since {
			return e.mod > q.since
		}
		return !q.hasAfter || e.id > q.afterID
	})
	total = len(s.entries) - i
	orders = make([]*Order, 0, min(q.limit, total))
	for _, e := range s.entries[i:min(i+q.limit, len(s.entries))] {
		orders = append(orders, e.o)
	}
	return orders, total
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string) {
	s.stats.badRequests.Add(1)
	writeJSON(w, status, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

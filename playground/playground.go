// Package playground serves a fake users API with keyset pagination, modelled on the
// /pagination/keyset endpoint of Fivetran's fivetran-api-playground (a Flask app), so keysetsync
// can be developed, demonstrated and tested without a real upstream.
//
// # Endpoints
//
//	GET /pagination/keyset?updated_since=YYYY-MM-DDTHH:MM:SSZ
//	    First page: records with updatedAt >= updated_since (inclusive), ascending by
//	    (updatedAt, id), at most PageSize of them.
//	GET /pagination/keyset?scroll_param=<token>
//	    Next page: records with updatedAt > the time in the token (exclusive). The token is the
//	    standard base64 of the last returned record's updatedAt.
//	GET /snapshot   every current record as JSON lines, sorted by id (streamed).
//	GET /healthz    200 "ok".
//
// Pages answer 200 {"data":[...],"scroll_param":"<token>"|null}; scroll_param is null when no
// record follows the page. Bad requests answer 400 {"error":"..."} naming the parameter.
//
// Like the reference, the next-page filter is "updatedAt > last updatedAt": when a page ends in
// the middle of a run of records sharing one updatedAt (see Config.TieWidth), the rest of that run
// is skipped by the scroll. That loss is deliberate; clients have to cope with it.
//
// Faults (Config.FailRate, RateLimit, Latency) apply to /pagination/keyset only, so /snapshot and
// /healthz stay reliable for checks.
//
// # Storage
//
// Records are not stored as strings: a record is a number; its id, name, email, address, company
// and job are recomputed from (Seed, number, update count) when rendered. The index is a slice of
// (updatedAt, record) entries sorted by (updatedAt, id) plus a bitmap of the live ones. An update
// happens "now", which is never before any existing entry, so it marks the old entry stale and
// appends a new one at the end; pages skip stale entries through a two-level bitmap, and the
// slice is compacted when stale entries outnumber live ones. A page costs one binary search plus
// the page's records, whatever the number of records or stale entries.
//
// # Late updates
//
// Real sources commit late: a row can become visible with an updatedAt older than rows a client
// has already read (Kafka Connect JDBC's timestamp.delay.interval.ms exists for this). UpdateLate
// and Config.LateUpdatesPerSecond model it: the record gets new content with updatedAt = now -
// LateBy, never before its own current updatedAt, and its entry is inserted at its sorted place
// in the index rather than appended. Pages stay sorted by (updatedAt, id) and keep their cost, so
// a client whose cursor is already past that time misses the update unless it re-reads a window
// of at least LateBy. A late insert costs O(n): it moves the entries after it (memmove), shifts
// the bitmap and renumbers the live entries after it (about a millisecond in the middle of a
// million records, see BenchmarkUpdateLate). That is fine for tests and demo rates, not for
// thousands of late updates per second on millions of records.
package playground

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keysetsync/keysetsync/avro"
)

// TimeLayout is the format of createdAt, updatedAt, updated_since and the decoded scroll_param.
const TimeLayout = "2006-01-02T15:04:05Z"

// Defaults applied by New to zero Config fields.
const (
	DefaultRecords  = 200
	DefaultPageSize = 50
	// MaxRecords bounds Records plus every later Insert (record numbers are 32 bits).
	MaxRecords = math.MaxInt32
	// DefaultLateBy is Config.LateBy when zero and LateUpdatesPerSecond is positive.
	DefaultLateBy = 30 * time.Second
)

// DefaultStart is the updatedAt of the oldest record when Config.Start is zero (moved back if
// the records would otherwise reach the clock's present).
var DefaultStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// User is one record, with the JSON names of the reference API. Times use TimeLayout (UTC, whole
// seconds) and CreatedAt <= UpdatedAt. Address has several lines.
type User = avro.UserJSON[string, string]

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Records is the number of records generated at start (default 200).
	Records int
	// PageSize is the maximum number of records in a page (default 50, as the reference).
	PageSize int
	// Seed makes the data deterministic: the same seed gives the same records.
	Seed uint64
	// TieWidth is how many consecutive records share each updatedAt (default 1).
	TieWidth int
	// Start is the updatedAt of the oldest record (default DefaultStart); successive groups of
	// TieWidth records are one second apart. Every initial updatedAt must be before Clock().
	Start time.Time
	// UpdatesPerSecond is the rate at which RunUpdates updates random records (0: none). It is
	// also a ceiling: RunUpdates never gives more than ceil(UpdatesPerSecond) records one
	// updatedAt second (see RunUpdates).
	UpdatesPerSecond float64
	// LateUpdatesPerSecond is the rate at which RunUpdates applies late updates (0: none): a
	// random record whose updatedAt is not after now - LateBy gets new content and that time as
	// its updatedAt, placed at its sorted position in the index (see UpdateLate). A tick finding
	// no such record skips its late update. At most ceil(LateUpdatesPerSecond) late updates
	// land on one second.
	LateUpdatesPerSecond float64
	// LateBy is how far behind the clock late updates are (default DefaultLateBy when
	// LateUpdatesPerSecond is positive).
	LateBy time.Duration
	// FailRate is the fraction (0..1) of page requests answered 500.
	FailRate float64
	// RateLimit is the number of page requests per second allowed (token bucket with a burst of
	// max(1, RateLimit)); over it requests get 429 with Retry-After. 0: unlimited.
	RateLimit float64
	// Latency is added to every page request that is not rate limited.
	Latency time.Duration
	// Clock gives the current time (default time.Now); updates and inserts happen at Clock()
	// truncated to the second, and the rate limiter refills by it.
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
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.LateUpdatesPerSecond > 0 && c.LateBy == 0 {
		c.LateBy = DefaultLateBy
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Records < 0 {
		bad("records must not be negative, got %d", c.Records)
	} else if c.Records > MaxRecords {
		bad("records must be at most %d, got %d", MaxRecords, c.Records)
	}
	if c.PageSize < 1 {
		bad("page size must be at least 1, got %d", c.PageSize)
	}
	if c.TieWidth < 1 {
		bad("tie width must be at least 1, got %d", c.TieWidth)
	}
	if !(c.UpdatesPerSecond >= 0) || math.IsInf(c.UpdatesPerSecond, 0) {
		bad("updates per second must be a finite number >= 0, got %v", c.UpdatesPerSecond)
	}
	if !(c.LateUpdatesPerSecond >= 0) || math.IsInf(c.LateUpdatesPerSecond, 0) {
		bad("late updates per second must be a finite number >= 0, got %v", c.LateUpdatesPerSecond)
	}
	if c.LateBy < 0 {
		bad("late by must not be negative, got %v", c.LateBy)
	}
	if !(c.FailRate >= 0 && c.FailRate <= 1) {
		bad("fail rate must be between 0 and 1, got %v", c.FailRate)
	}
	if !(c.RateLimit >= 0) || math.IsInf(c.RateLimit, 0) {
		bad("rate limit must be a finite number of requests per second >= 0, got %v", c.RateLimit)
	}
	if c.Latency < 0 {
		bad("latency must not be negative, got %v", c.Latency)
	}
	return errors.Join(errs...)
}

// Server is a playground API. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	seed     uint64
	initialN uint32 // records generated by New; later ones are inserted
	start    int64  // unix seconds of the oldest initial updatedAt
	tieWidth uint32

	mu sync.RWMutex
	// upds and recs are the entries, sorted by (updatedAt, id of recs[i]).
	upds []int64
	recs []uint32
	live liveSet  // which entries are current
	pos  []uint32 // record -> index of its live entry
	ver  []uint32 // record -> number of updates
	// insCreated is the createdAt of inserted records, indexed by record - initialN.
	insCreated  []int64
	rng         *rand.Rand // picks records to update; guarded by mu (write)
	compactions uint64

	idMu sync.Mutex
	byID []uint32 // record numbers sorted by id; replaced, never modified, once published

	faultMu  sync.Mutex
	faultRng *rand.Rand
	tokens   float64
	refilled time.Time

	stats struct {
		requests, pages, served, s4xx, s429, s5xx, updates, lateUpdates, dropped, inserts atomic.Uint64
	}
}

// New validates cfg, applies defaults and generates the records.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("playground: %w", err)
	}
	n := cfg.Records
	groups := int64((n + cfg.TieWidth - 1) / cfg.TieWidth)
	now := cfg.Clock().Unix()
	if cfg.Start.IsZero() {
		cfg.Start = DefaultStart
		if DefaultStart.Unix()+groups > now {
			cfg.Start = time.Unix(now-groups, 0).UTC()
		}
	} else {
		cfg.Start = cfg.Start.UTC().Truncate(time.Second)
		if newest := cfg.Start.Unix() + groups - 1; newest >= now {
			return nil, fmt.Errorf("playground: start %s puts the newest of %d records at %s, not before the clock's now (%s)",
				cfg.Start.Format(TimeLayout), n, formatTime(newest), formatTime(now))
		}
	}
	if y := cfg.Start.Add(-maxCreateAge * time.Second).Year(); y < 1 {
		return nil, fmt.Errorf("playground: start %s is too early", cfg.Start.Format(TimeLayout))
	}
	s := &Server{
		cfg:      cfg,
		seed:     cfg.Seed,
		initialN: uint32(n),
		start:    cfg.Start.Unix(),
		tieWidth: uint32(cfg.TieWidth),
		upds:     make([]int64, n),
		recs:     make([]uint32, n),
		pos:      make([]uint32, n),
		ver:      make([]uint32, n),
		rng:      rand.New(rand.NewPCG(cfg.Seed^saltPick, 1)),
		faultRng: rand.New(rand.NewPCG(cfg.Seed^saltFaults, 2)),
		tokens:   max(1, cfg.RateLimit),
		refilled: cfg.Clock(),
	}
	w := cfg.TieWidth
	for g := 0; g < n; g += w {
		end := min(g+w, n)
		t := s.start + int64(g/w)
		for i := g; i < end; i++ {
			s.recs[i] = uint32(i)
			s.upds[i] = t
		}
		if end-g > 1 {
			slices.SortFunc(s.recs[g:end], s.idCmp)
		}
		for i := g; i < end; i++ {
			s.pos[s.recs[i]] = uint32(i)
		}
	}
	s.live.fill(n)
	return s, nil
}

// Config returns the configuration in effect, defaults applied (Start resolved).
func (s *Server) Config() Config { return s.cfg }

// Stats are counters since New.
type Stats struct {
	Requests      uint64 // HTTP requests answered, any endpoint
	Pages         uint64 // pages answered 200
	RecordsServed uint64 // records in those pages
	Status4xx     uint64 // answers 400-499, 429 included
	Status429     uint64 // answers 429 (rate limited)
	Status5xx     uint64 // answers 500-599
	Updates       uint64 // records updated (Update, UpdateIDs, UpdateLate, RunUpdates), late ones included
	LateUpdates   uint64 // of Updates, the late ones (UpdateLate, RunUpdates)
	// UpdatesDropped counts the updates (late ones included) RunUpdates did not make because
	// their second already had its share: the catch-up after a stall (see RunUpdates).
	UpdatesDropped uint64
	Inserts        uint64 // records inserted
	Records        int    // current number of records
	Entries        int    // index entries, stale ones included
	Compactions    uint64 // times the index was compacted
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	s.mu.RLock()
	records, entries, compactions := len(s.pos), len(s.upds), s.compactions
	s.mu.RUnlock()
	return Stats{
		Requests:       s.stats.requests.Load(),
		Pages:          s.stats.pages.Load(),
		RecordsServed:  s.stats.served.Load(),
		Status4xx:      s.stats.s4xx.Load(),
		Status429:      s.stats.s429.Load(),
		Status5xx:      s.stats.s5xx.Load(),
		Updates:        s.stats.updates.Load(),
		LateUpdates:    s.stats.lateUpdates.Load(),
		UpdatesDropped: s.stats.dropped.Load(),
		Inserts:        s.stats.inserts.Load(),
		Records:        records,
		Entries:        entries,
		Compactions:    compactions,
	}
}

// item is what rendering a record needs, copied out under the lock.
type item struct {
	rec     uint32
	ver     uint32
	created int64
	updated int64
}

func formatTime(unix int64) string { return time.Unix(unix, 0).UTC().Format(TimeLayout) }

// parseTime accepts exactly TimeLayout (time.Parse alone would also take fractional seconds).
func parseTime(v string) (int64, bool) {
	if len(v) != len(TimeLayout) {
		return 0, false
	}
	t, err := time.Parse(TimeLayout, v)
	if err != nil || t.Format(TimeLayout) != v {
		return 0, false
	}
	return t.Unix(), true
}

func (s *Server) render(it item) User {
	u := User{
		ID:        formatUUID(s.idOf(it.rec)),
		CreatedAt: formatTime(it.created),
		UpdatedAt: formatTime(it.updated),
	}
	s.person(it.rec, &u)
	s.work(it.rec, it.ver, &u)
	return u
}

func (s *Server) renderAll(items []item) []User {
	out := make([]User, len(items))
	for i, it := range items {
		out[i] = s.render(it)
	}
	return out
}

// itemLocked describes record rec; s.mu must be held.
func (s *Server) itemLocked(rec uint32) item {
	return item{rec: rec, ver: s.ver[rec], created: s.createdLocked(rec), updated: s.upds[s.pos[rec]]}
}

func (s *Server) createdLocked(rec uint32) int64 {
	if rec < s.initialN {
		return s.start + int64(rec/s.tieWidth) - s.createdOffset(rec)
	}
	return s.insCreated[rec-s.initialN]
}

// page returns up to PageSize live records with updatedAt >= since (> since if exclusive), in
// index order, and whether any live record follows them.
func (s *Server) page(since int64, exclusive bool) (items []item, more bool) {
	if exclusive {
		if since == math.MaxInt64 {
			return nil, false
		}
		since++
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, _ := slices.BinarySearch(s.upds, since)
	items = make([]item, 0, min(s.cfg.PageSize, len(s.upds)-i))
	for j := s.live.next(i); j >= 0; j = s.live.next(j + 1) {
		if len(items) == s.cfg.PageSize {
			return items, true
		}
		rec := s.recs[j]
		items = append(items, item{rec: rec, ver: s.ver[rec], created: s.createdLocked(rec), updated: s.upds[j]})
	}
	return items, false
}

// nowLocked is the time of an update or insert: Clock() truncated to the second, but never
// before the newest entry, so appending keeps the index sorted.
func (s *Server) nowLocked() int64 {
	now := s.cfg.Clock().Unix()
	if n := len(s.upds); n > 0 && s.upds[n-1] > now {
		now = s.upds[n-1]
	}
	return now
}

// Update updates n distinct random records now (all of them if n exceeds the count): new
// updatedAt, new company and job. It returns the updated records, sorted by id.
func (s *Server) Update(n int) []User {
	return s.renderAll(s.update(n, nil))
}

// update updates n random records now; with a share, only as many as the share of now's
// second has room for.
func (s *Server) update(n int, sh *share) []item {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	if sh != nil {
		n = sh.take(now, n, &s.stats.dropped)
		if n == 0 {
			return nil
		}
	}
	return s.touchLocked(now, s.pickLocked(n), false)
}

// UpdateIDs updates the records with the given ids now (each once, however often it is given).
// An unknown or malformed id is an error and nothing is updated.
func (s *Server) UpdateIDs(ids ...string) ([]User, error) {
	recs, err := s.resolve(ids)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	s.mu.Lock()
	items := s.touchLocked(s.nowLocked(), recs, false)
	s.mu.Unlock()
	return s.renderAll(items), nil
}

// resolve maps ids to distinct record numbers, in the order first given.
func (s *Server) resolve(ids []string) ([]uint32, error) {
	index := s.idIndex()
	recs := make([]uint32, 0, len(ids))
	seen := make(map[uint32]bool, len(ids))
	for _, id := range ids {
		rec, ok := s.lookup(index, id)
		if !ok {
			return nil, fmt.Errorf("playground: no record with id %q", id)
		}
		if !seen[rec] {
			seen[rec] = true
			recs = append(recs, rec)
		}
	}
	return recs, nil
}

// UpdateLate updates the records with the given ids late (each once, however often it is
// given): new company and job, and updatedAt = Clock() - by truncated to the second, placed at
// its sorted position in the index rather than at the end, so a client whose cursor is already
// past that time misses the update. A record whose updatedAt is already that time keeps it and
// only gets new content. It returns the updated records, sorted by id.
//
// It is an error, and nothing is updated, if by is negative, an id is unknown or malformed, or
// the late time is before a record's current updatedAt (the error names each such id). Each
// record costs O(number of index entries); see the package doc.
func (s *Server) UpdateLate(by time.Duration, ids ...string) ([]User, error) {
	if by < 0 {
		return nil, fmt.Errorf("playground: late by must not be negative, got %v", by)
	}
	recs, err := s.resolve(ids)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	s.mu.Lock()
	t := s.cfg.Clock().Add(-by).Unix()
	slices.SortFunc(recs, s.idCmp)
	var errs []error
	for _, r := range recs {
		if cur := s.upds[s.pos[r]]; cur > t {
			errs = append(errs, fmt.Errorf("record %s has updatedAt %s, after the late time %s (now - %v)",
				formatUUID(s.idOf(r)), formatTime(cur), formatTime(t), by))
		}
	}
	if len(errs) > 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("playground: cannot update late: %w", errors.Join(errs...))
	}
	items := s.lateLocked(t, recs)
	s.mu.Unlock()
	return s.renderAll(items), nil
}

// updateLate applies up to n late updates at Clock() - LateBy to distinct random records whose
// updatedAt is not after that time; fewer (none) if such records are few (missing) or, with a
// share, if that second's share has no room for n.
func (s *Server) updateLate(n int, sh *share) []item {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.cfg.Clock().Add(-s.cfg.LateBy).Unix()
	if sh != nil {
		n = sh.take(t, n, &s.stats.dropped)
		if n == 0 {
			return nil
		}
	}
	// Entries [0, eligible) have updatedAt <= t; their live records can be updated late.
	eligible, _ := slices.BinarySearch(s.upds, t+1)
	first := s.live.next(0)
	if first < 0 || first >= eligible {
		return nil
	}
	recs := make([]uint32, 0, n)
	seen := make(map[uint32]bool, n)
	for tries := 0; len(recs) < n && tries < 4*n; tries++ {
		j := s.live.next(s.rng.IntN(eligible))
		if j < 0 || j >= eligible {
			j = first
		}
		if r := s.recs[j]; !seen[r] {
			seen[r] = true
			recs = append(recs, r)
		}
	}
	slices.SortFunc(recs, s.idCmp)
	return s.lateLocked(t, recs)
}

// lateLocked updates the distinct records recs (sorted by id) late, at t, which must not be
// before any of their updatedAt. It returns them sorted by id.
func (s *Server) lateLocked(t int64, recs []uint32) []item {
	for _, r := range recs {
		s.ver[r]++
		old := int(s.pos[r])
		if s.upds[old] == t {
			continue // same place in the index: new content only
		}
		s.live.clear(old)
		// Every run of entries sharing an updatedAt is sorted by id, stale entries included, so
		// the place after (t, r) is found by one binary search.
		p := sort.Search(len(s.upds), func(j int) bool {
			return s.upds[j] > t || s.upds[j] == t && s.idCmp(s.recs[j], r) > 0
		})
		s.upds = slices.Insert(s.upds, p, t)
		s.recs = slices.Insert(s.recs, p, r)
		s.live.insert(p)
		for j := p; j >= 0; j = s.live.next(j + 1) {
			s.pos[s.recs[j]] = uint32(j)
		}
	}
	items := make([]item, len(recs))
	for i, r := range recs {
		items[i] = s.itemLocked(r)
	}
	s.stats.updates.Add(uint64(len(recs)))
	s.stats.lateUpdates.Add(uint64(len(recs)))
	s.maybeCompactLocked()
	return items
}

// Insert adds n new records created and updated now, and returns them sorted by id. It adds
// fewer if MaxRecords would be exceeded.
func (s *Server) Insert(n int) []User {
	if n <= 0 {
		return nil
	}
	s.mu.Lock()
	first := len(s.pos)
	n = min(n, MaxRecords-first)
	if n <= 0 {
		s.mu.Unlock()
		return nil
	}
	now := s.nowLocked()
	recs := make([]uint32, n)
	for i := range recs {
		recs[i] = uint32(first + i)
		s.pos = append(s.pos, 0)
		s.ver = append(s.ver, 0)
		s.insCreated = append(s.insCreated, now)
	}
	items := s.touchLocked(now, recs, true)
	s.mu.Unlock()
	return s.renderAll(items)
}

// pickLocked chooses min(n, records) distinct records at random.
func (s *Server) pickLocked(n int) []uint32 {
	total := len(s.pos)
	if n >= total {
		all := make([]uint32, total)
		for i := range all {
			all[i] = uint32(i)
		}
		return all
	}
	out := make([]uint32, 0, n)
	if n <= total/2 {
		seen := make(map[uint32]struct{}, n)
		for len(out) < n {
			r := uint32(s.rng.IntN(total))
			if _, dup := seen[r]; !dup {
				seen[r] = struct{}{}
				out = append(out, r)
			}
		}
		return out
	}
	// Partial Fisher-Yates with the swaps kept in a map.
	swapped := make(map[int]int, n)
	get := func(i int) int {
		if v, ok := swapped[i]; ok {
			return v
		}
		return i
	}
	for i := 0; i < n; i++ {
		j := i + s.rng.IntN(total-i)
		vi, vj := get(i), get(j)
		swapped[j] = vi
		out = append(out, uint32(vj))
	}
	return out
}

// touchLocked gives the distinct records recs a new entry at now, which must come from
// nowLocked: new records if inserted, else an update (version bump, old entry made stale).
// It returns them sorted by id.
func (s *Server) touchLocked(now int64, recs []uint32, inserted bool) []item {
	if !inserted {
		for _, r := range recs {
			s.ver[r]++
			s.live.clear(int(s.pos[r]))
		}
	}
	slices.SortFunc(recs, s.idCmp)
	s.appendLocked(now, recs)
	items := make([]item, len(recs))
	for i, r := range recs {
		items[i] = s.itemLocked(r)
	}
	if inserted {
		s.stats.inserts.Add(uint64(len(recs)))
	} else {
		s.stats.updates.Add(uint64(len(recs)))
	}
	s.maybeCompactLocked()
	return items
}

// maybeCompactLocked compacts the index when stale entries outnumber live ones.
func (s *Server) maybeCompactLocked() {
	if stale := len(s.upds) - len(s.pos); stale > len(s.pos) && stale > 1024 {
		s.compactLocked()
	}
}

// appendLocked adds entries at time t for batch (sorted by id, entries already made stale).
// t is >= every entry; if the newest entries share t, the batch is merged into them by id
// (dropping the stale ones there) to keep the (updatedAt, id) order.
func (s *Server) appendLocked(t int64, batch []uint32) {
	if n := len(s.upds); n > 0 && s.upds[n-1] == t {
		start, _ := slices.BinarySearch(s.upds, t)
		var tail []uint32
		for j := s.live.next(start); j >= 0; j = s.live.next(j + 1) {
			tail = append(tail, s.recs[j])
		}
		for j := start; j < n; j++ {
			s.live.clear(j)
		}
		s.upds, s.recs = s.upds[:start], s.recs[:start]
		merged := make([]uint32, 0, len(tail)+len(batch))
		i, j := 0, 0
		for i < len(tail) && j < len(batch) {
			if s.idCmp(tail[i], batch[j]) <= 0 {
				merged = append(merged, tail[i])
				i++
			} else {
				merged = append(merged, batch[j])
				j++
			}
		}
		merged = append(merged, tail[i:]...)
		batch = append(merged, batch[j:]...)
	}
	for _, r := range batch {
		i := len(s.upds)
		s.upds = append(s.upds, t)
		s.recs = append(s.recs, r)
		s.pos[r] = uint32(i)
		s.live.set(i)
	}
}

// compactLocked drops the stale entries.
func (s *Server) compactLocked() {
	w := 0
	for j := s.live.next(0); j >= 0; j = s.live.next(j + 1) {
		s.upds[w], s.recs[w] = s.upds[j], s.recs[j]
		s.pos[s.recs[w]] = uint32(w)
		w++
	}
	s.upds, s.recs = s.upds[:w], s.recs[:w]
	s.live.fill(w)
	s.compactions++
}

// idIndex returns every record number sorted by id, building or extending it when records were
// inserted since. The slice is never modified afterwards.
func (s *Server) idIndex() []uint32 {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	s.mu.RLock()
	total := len(s.pos)
	s.mu.RUnlock()
	have := len(s.byID)
	if have == total {
		return s.byID
	}
	fresh := make([]uint32, 0, total-have)
	for r := have; r < total; r++ {
		fresh = append(fresh, uint32(r))
	}
	slices.SortFunc(fresh, s.idCmp)
	merged := make([]uint32, 0, total)
	old := s.byID
	i, j := 0, 0
	for i < len(old) && j < len(fresh) {
		if s.idCmp(old[i], fresh[j]) <= 0 {
			merged = append(merged, old[i])
			i++
		} else {
			merged = append(merged, fresh[j])
			j++
		}
	}
	merged = append(merged, old[i:]...)
	merged = append(merged, fresh[j:]...)
	s.byID = merged
	return merged
}

func (s *Server) lookup(index []uint32, id string) (uint32, bool) {
	hi, lo, ok := parseUUID(id)
	if !ok {
		return 0, false
	}
	i, found := slices.BinarySearchFunc(index, [2]uint64{hi, lo}, func(rec uint32, key [2]uint64) int {
		h, l := s.idOf(rec)
		switch {
		case h < key[0]:
			return -1
		case h > key[0]:
			return 1
		case l < key[1]:
			return -1
		case l > key[1]:
			return 1
		}
		return 0
	})
	if !found {
		return 0, false
	}
	return index[i], true
}

// Snapshot returns every current record sorted by id.
func (s *Server) Snapshot() []User {
	index := s.idIndex()
	out := make([]User, 0, len(index))
	s.eachByID(index, func(items []item) bool {
		for _, it := range items {
			out = append(out, s.render(it))
		}
		return true
	})
	return out
}

// eachByID calls fn with the records of index in chunks, holding the read lock only while a
// chunk is copied. Each record appears once, in its state when its chunk was copied.
func (s *Server) eachByID(index []uint32, fn func([]item) bool) {
	const chunk = 1024
	buf := make([]item, 0, chunk)
	for lo := 0; lo < len(index); lo += chunk {
		hi := min(lo+chunk, len(index))
		buf = buf[:0]
		s.mu.RLock()
		for _, rec := range index[lo:hi] {
			buf = append(buf, s.itemLocked(rec))
		}
		s.mu.RUnlock()
		if !fn(buf) {
			return
		}
	}
}

// RunUpdates updates random records at Config.UpdatesPerSecond and applies late updates (see
// UpdateLate) at Config.LateUpdatesPerSecond until ctx is done (several per tick at high rates).
// It returns at once when both rates are 0.
//
// The rates are ceilings per updatedAt second as well as averages: RunUpdates never gives more
// than ceil(UpdatesPerSecond) records one updatedAt second, nor more than
// ceil(LateUpdatesPerSecond) late updates one late second, however its goroutine is scheduled.
// Updates that fall due when their second already had its share (the catch-up after a stall: a
// GC pause, -race, a loaded machine, or a Clock that stands still) are dropped and counted in
// Stats.UpdatesDropped, never piled onto one second. So the widest tie RunUpdates makes is
// ceil(UpdatesPerSecond) + ceil(LateUpdatesPerSecond) records (a live second can receive late
// updates LateBy later; a late second of the initial records holds TieWidth of them besides);
// with that below PageSize every tie fits in a page, by construction.
// Update, UpdateIDs, UpdateLate and Insert called meanwhile are not counted: they stamp what
// they are asked to.
func (s *Server) RunUpdates(ctx context.Context) {
	u := s.newUpdater()
	if u.updates.rate <= 0 && u.late.rate <= 0 {
		return
	}
	interval := max(time.Duration(float64(time.Second)/(u.updates.rate+u.late.rate)), 20*time.Millisecond)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	begin := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			u.tick(now.Sub(begin).Seconds())
		}
	}
}

// updater is the state of RunUpdates: how many updates are due, and each second's share.
type updater struct {
	s                  *Server
	updates, late      pacer
	perSecond, perLate share
}

func (s *Server) newUpdater() *updater {
	return &updater{
		s:         s,
		updates:   pacer{rate: s.cfg.UpdatesPerSecond},
		late:      pacer{rate: s.cfg.LateUpdatesPerSecond},
		perSecond: newShare(s.cfg.UpdatesPerSecond),
		perLate:   newShare(s.cfg.LateUpdatesPerSecond),
	}
}

// tick applies what is due elapsed seconds after the start.
func (u *updater) tick(elapsed float64) {
	if n := u.updates.due(elapsed); n > 0 {
		u.s.update(n, &u.perSecond)
	}
	if n := u.late.due(elapsed); n > 0 {
		u.s.updateLate(n, &u.perLate)
	}
}

// share bounds how many updates RunUpdates stamps with one second: limit per second, counted
// for the latest second it stamped.
type share struct {
	limit int
	sec   int64 // the second used counts for
	used  int
}

func newShare(rate float64) share {
	return share{limit: int(math.Ceil(rate)), sec: math.MinInt64}
}

// take returns how many of n updates at second t fit in t's share, counts them as used, and
// counts the others in dropped. Updates are stamped at seconds that never go back (nowLocked;
// late ones follow the clock); if one does (a clock set back), that second may already be
// full, so nothing is stamped there.
func (sh *share) take(t int64, n int, dropped *atomic.Uint64) int {
	switch {
	case t > sh.sec:
		sh.sec, sh.used = t, 0
	case t < sh.sec:
		dropped.Add(uint64(n))
		return 0
	}
	k := min(n, sh.limit-sh.used)
	sh.used += k
	if n > k {
		dropped.Add(uint64(n - k))
	}
	return k
}

// pacer spreads events at rate per second over ticks.
type pacer struct {
	rate    float64
	applied float64
}

// due returns how many events are due elapsed seconds after the start and counts them as done.
// After a stall (suspended process, slow machine) it gives at most one second's worth and
// drops the rest, once: the ticks after it are back on the rate.
func (p *pacer) due(elapsed float64) int {
	if p.rate <= 0 {
		return 0
	}
	total, most := math.Floor(p.rate*elapsed), math.Ceil(p.rate)
	if behind := total - p.applied; behind > most {
		p.applied = total - most
	}
	n := 0
	if due := total - p.applied; due >= 1 {
		n = int(due)
		p.applied += due
	}
	return n
}

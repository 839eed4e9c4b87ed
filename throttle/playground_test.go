package throttle_test

import (
	"context"
	"math"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
	"github.com/keysetsync/keysetsync/throttle"
)

// TestPlaygroundRateLimit runs concurrent fetchers through a Limiter against the playground with
// its rate limit on, each 429 reaching the limiter (one attempt per Fetch, the fetcher retries):
// every fetch succeeds in the end, and the 429s stay a few per time the API's bucket runs dry,
// not a storm.
func TestPlaygroundRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("real time: a few seconds")
	}
	const (
		fetchers = 16
		fetches  = 400 // in all
		rate     = 100 // the API's, requests per second (burst as many)
	)
	api, err := playground.New(playground.Config{Records: 1000, PageSize: 10, Seed: 1, RateLimit: rate, Latency: 20 * time.Millisecond})
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + playground.KeysetPath, MaxAttempts: 1})
	require.NoError(t, err)
	log, lines := logLines()
	l := throttle.New(throttle.Config{Max: fetchers, Logger: log})

	var left atomic.Int64
	left.Store(fetches)
	var overloads atomic.Int64
	minLimit := atomic.Int64{}
	minLimit.Store(fetchers)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for range fetchers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				for { // until this fetch succeeds
					release, err := l.Acquire(ctx)
					if !assert.NoError(t, err) {
						return
					}
					_, err = src.Fetch(ctx, 1, source.Query{Since: cursor.Start})
					o := source.OutcomeOf(err)
					release(o)
					if lim := int64(l.Limit()); lim < minLimit.Load() {
						minLimit.Store(lim) // racy min, for the log only
					}
					if _, over := o.IsOverloaded(); over {
						overloads.Add(1)
						continue
					}
					if !assert.NoError(t, err, "a fetch failed for another reason than the rate limit") {
						return
					}
					break
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := api.Stats()
	pauses := pausesLogged(lines())
	t.Logf("%d fetches by %d fetchers in %s: %d pages, %d answers 429, %d pauses (limit now %d, went down to %d)",
		fetches, fetchers, elapsed.Round(time.Millisecond), st.Pages, st.Status429, pauses, l.Limit(), minLimit.Load())
	assert.EqualValues(t, fetches, st.Pages, "pages served")
	assert.EqualValues(t, st.Status429, overloads.Load(), "429s the fetchers saw")
	// Not a storm: every 429 began a pause of all fetchers or was sent before it began (at most
	// Max requests are in flight), and a pause comes at most once per time the API's bucket runs
	// dry: once after the first burst, then once per second (its Retry-After), by when the
	// bucket has refilled with rate more.
	dry := int(math.Ceil(float64(fetches-rate)/rate)) + 1
	assert.LessOrEqual(t, pauses, dry, "pauses for %d fetches at %d/s", fetches, rate)
	assert.LessOrEqual(t, int(st.Status429), fetchers*pauses, "429s for %d pauses of all fetchers: a storm", pauses)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/keysetsync/keysetsync/playground"
)

// playgroundShutdownTimeout bounds the wait for requests in flight (a /snapshot download, say)
// when the playground stops.
const playgroundShutdownTimeout = 5 * time.Second

// playgroundStatsEvery is the period of the stats line logged while updates run.
const playgroundStatsEvery = 10 * time.Second

func runPlayground(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "playground", "Serve a demo users API with keyset pagination, like the /pagination/keyset endpoint of\n"+
		"fivetran-api-playground: GET /pagination/keyset?updated_since=YYYY-MM-DDTHH:MM:SSZ, then\n"+
		"?scroll_param=<token> until scroll_param is null. Also GET /snapshot (every record as JSON\n"+
		"lines, by id) and GET /healthz. Serves until SIGINT or SIGTERM.")
	addr := fs.String("addr", "127.0.0.1:5001", "listen address (host:port; port 0 picks a free one)")
	pageSize := fs.Int("page-size", playground.DefaultPageSize, "records per page")
	records := fs.Int("records", playground.DefaultRecords, "records generated at start")
	seed := fs.Uint64("seed", 1, "seed of the generated data: the same seed gives the same records")
	updates := fs.Float64("updates-per-second", 0, "random records updated per second (0: none)")
	lateUpdates := fs.Float64("late-updates-per-second", 0,
		"random records updated late per second, at now - --late-by, among older records (0: none)")
	lateBy := fs.Duration("late-by", playground.DefaultLateBy, "how far behind the clock late updates are")
	tieWidth := fs.Int("tie-width", 1, "records sharing each updatedAt (above 1, scrolling loses records as the reference does)")
	failRate := fs.Float64("fail-rate", 0, "fraction (0 to 1) of page requests answered 500")
	rateLimit := fs.Float64("rate-limit", 0, "page requests per second allowed, above which 429 with Retry-After (0: unlimited)")
	latency := fs.Duration("latency", 0, "delay added to every page request")
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	var bad []error
	if *records < 1 {
		bad = append(bad, fmt.Errorf("--records %d: must be at least 1", *records))
	}
	if *pageSize < 1 {
		bad = append(bad, fmt.Errorf("--page-size %d: must be at least 1", *pageSize))
	}
	if *tieWidth < 1 {
		bad = append(bad, fmt.Errorf("--tie-width %d: must be at least 1", *tieWidth))
	}
	if *lateBy <= 0 {
		bad = append(bad, fmt.Errorf("--late-by %v: must be positive", *lateBy))
	}
	if err := errors.Join(bad...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log, err := lf.logger(e)
	if err != nil {
		return err
	}
	srv, err := playground.New(playground.Config{
		Records: *records, PageSize: *pageSize, Seed: *seed, TieWidth: *tieWidth,
		UpdatesPerSecond: *updates, LateUpdatesPerSecond: *lateUpdates, LateBy: *lateBy,
		FailRate: *failRate, RateLimit: *rateLimit, Latency: *latency,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	cfg := srv.Config()
	log.Info("playground listening",
		"addr", ln.Addr().String(),
		"endpoint", "http://"+ln.Addr().String()+playground.KeysetPath,
		"records", cfg.Records, "page_size", cfg.PageSize, "seed", cfg.Seed, "tie_width", cfg.TieWidth,
		"oldest_updated_at", cfg.Start.Format(playground.TimeLayout),
		"updates_per_second", cfg.UpdatesPerSecond,
		"late_updates_per_second", cfg.LateUpdatesPerSecond, "late_by", cfg.LateBy, "fail_rate", cfg.FailRate,
		"rate_limit", cfg.RateLimit, "latency", cfg.Latency)

	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var wg sync.WaitGroup
	if cfg.UpdatesPerSecond > 0 || cfg.LateUpdatesPerSecond > 0 {
		wg.Go(func() { srv.RunUpdates(bg) })
		wg.Go(func() {
			t := time.NewTicker(playgroundStatsEvery)
			defer t.Stop()
			for {
				select {
				case <-bg.Done():
					return
				case <-t.C:
					logPlaygroundStats(log, "playground stats", srv.Stats())
				}
			}
		})
	}

	select {
	case err := <-served:
		stopBG()
		wg.Wait()
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	stopBG()
	wg.Wait()
	log.Info("shutting down", "timeout", playgroundShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), playgroundShutdownTimeout)
	defer cancel()
	err = hs.Shutdown(sctx)
	if err != nil {
		_ = hs.Close()
		err = fmt.Errorf("shutdown: requests still running after %v: %w", playgroundShutdownTimeout, err)
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("serve on %s: %w", ln.Addr(), serr)
	}
	logPlaygroundStats(log, "playground stopped", srv.Stats())
	return err
}

func logPlaygroundStats(log *slog.Logger, msg string, st playground.Stats) {
	log.Info(msg,
		"requests", st.Requests, "pages", st.Pages, "records_served", st.RecordsServed,
		"status_4xx", st.Status4xx, "status_429", st.Status429, "status_5xx", st.Status5xx,
		"updates", st.Updates, "late_updates", st.LateUpdates, "inserts", st.Inserts, "records", st.Records)
}

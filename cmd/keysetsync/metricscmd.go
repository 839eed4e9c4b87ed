package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/keysetsync/keysetsync/metrics"
	"github.com/keysetsync/keysetsync/pipeline"
)

// metricsFlags is --metrics-addr of once and run.
type metricsFlags struct {
	metricsAddr string
}

func (f *metricsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "listen address of the /metrics, /healthz and /readyz server, e.g. :9464 (empty: none)")
}

// serve opens the pipeline with open. With --metrics-addr it first starts the HTTP server (so
// /healthz answers while Kafka is awaited) and hands open the Observer that feeds /metrics; the
// server then shuts down with the pipeline's close, or at once if open fails.
func (f *metricsFlags) serve(ctx context.Context, log *slog.Logger, pipelineName string, open func(pipeline.Observer) (*openPipeline, error)) (*openPipeline, error) {
	if f.metricsAddr == "" {
		return open(nil)
	}
	ms := newMetricsServer(metrics.New(pipelineName))
	ln, err := net.Listen("tcp", f.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	srv := &http.Server{Handler: ms.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-served
	}
	p, err := open(ms.metrics)
	if err != nil {
		shutdown()
		return nil, err
	}
	ms.opened.Store(true)
	closePipeline := p.close
	p.close = func() {
		closePipeline()
		shutdown()
	}
	return p, nil
}

// metricsServer serves /metrics, /healthz and /readyz of one pipeline.
type metricsServer struct {
	metrics *metrics.Metrics
	opened  atomic.Bool // the pipeline is open: Kafka answered, topics exist
}

func newMetricsServer(m *metrics.Metrics) *metricsServer { return &metricsServer{metrics: m} }

func (s *metricsServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeProbe(w, http.StatusOK, "ok", "")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		degraded, why := s.metrics.Degraded()
		switch {
		case !s.opened.Load():
			writeProbe(w, http.StatusServiceUnavailable, "unavailable", "connecting to Kafka: the topics are not checked yet")
		case !s.metrics.Loaded():
			writeProbe(w, http.StatusServiceUnavailable, "unavailable", "the cursor is not loaded yet")
		case degraded:
			// Records the API cannot serve are missing for good: keep the pipeline out of
			// "ready" until an operator re-reads them (cursor set --to) and restarts it, or
			// accepts the loss (--accept-tie-overflow).
			writeProbe(w, http.StatusServiceUnavailable, "degraded", why)
		default:
			writeProbe(w, http.StatusOK, "ok", "")
		}
	})
	return mux
}

// writeProbe answers a probe with {"status":status} and, when not ok, the reason.
func writeProbe(w http.ResponseWriter, code int, status, reason string) {
	body := map[string]string{"status": status}
	if reason != "" {
		body["reason"] = reason
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Server serves /metrics (Prometheus), /healthz and /readyz of one pipeline from before its
// systems are open (so /healthz answers while Kafka is awaited) until Close.
type Server struct {
	metrics *Metrics
	opened  atomic.Bool // the pipeline is open: Kafka answered, topics exist
	srv     *http.Server
	ln      net.Listener
	served  chan struct{}
}

// Listen starts serving m on addr (host:port; port 0 picks one, see Addr).
func Listen(addr string, m *Metrics, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	s := &Server{metrics: m, ln: ln, served: make(chan struct{})}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return s, nil
}

// NewServer returns a Server of m that does not listen: Handler serves it (tests).
func NewServer(m *Metrics) *Server { return &Server{metrics: m} }

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Opened marks the pipeline open: /readyz then waits only for its cursor.
func (s *Server) Opened() { s.opened.Store(true) }

// Close shuts the server down, waiting up to 5 s for requests in flight.
func (s *Server) Close() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.served
}

// Handler serves /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
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

package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofEnv names the environment variable that, when set to host:port, serves Go's profiles
// (/debug/pprof/, e.g. heap and a CPU profile of ?seconds=N) for the life of the process: how
// bench/manypipes finds where the memory and CPU of many pipelines go. It is not a flag: it
// exposes the process's internals and is for diagnosing, not operating; keep it on loopback.
const pprofEnv = "KEYSETSYNC_PPROF_ADDR"

// servePprof starts the profile server when getenv(pprofEnv) is set; a failure to listen is
// logged, never fatal (profiling is an aid, not the job). The server lives until the process exits.
func servePprof(getenv func(string) string, log *slog.Logger) {
	addr := getenv(pprofEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("profile server not started", "env", pprofEnv, "addr", addr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Warn("profile server stopped", "err", err)
		}
	}()
	log.Info("profile server listening", "addr", ln.Addr().String(), "env", pprofEnv)
}

//go:build benchpprof

package main

// Profiling for the benchmarks only: a binary built with -tags benchpprof
// (bench/passthrough.sh does so with PROFILE=1) serves net/http/pprof on the
// loopback address in TOTPGATE_BENCH_PPROF. Release builds and the tests do
// not contain this file, so no build anyone runs in production has the
// endpoint, open or not.

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

func init() {
	addr := os.Getenv("TOTPGATE_BENCH_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		slog.Error("TOTPGATE_BENCH_PPROF must be a loopback host:port", slog.String("value", addr))
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { slog.Warn("bench pprof server stopped", slog.String("error", srv.ListenAndServe().Error())) }()
}

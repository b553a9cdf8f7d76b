package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// checkPprofListen refuses a --pprof-listen that is not loopback: the
// profiles show the node's memory, goroutines and command line to anyone
// who reaches them, without authentication.
func checkPprofListen(addr string) error {
	if addr == "" {
		return nil
	}
	if !isLoopback(addr) {
		return fmt.Errorf("--pprof-listen %q: give a loopback HOST:PORT such as 127.0.0.1:6060 (profiles are served without authentication)", addr)
	}
	return nil
}

// servePprof serves Go's runtime profiles (/debug/pprof/) on addr until
// ctx ends. It returns once the listener is open, or with the error of
// opening it.
func servePprof(ctx context.Context, addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen %s: %w (pick a free port)", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "listen", addr, "err", err)
		}
	}()
	log.Info("serving Go profiles", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { _ = srv.Close(); <-done }, nil
}

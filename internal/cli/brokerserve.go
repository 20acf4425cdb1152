package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/config"
)

// Timeouts of the broker's local HTTP server.
const (
	serveReadHeaderTimeout = 5 * time.Second
	serveReadTimeout       = 30 * time.Second
	serveWriteTimeout      = 60 * time.Second
	serveIdleTimeout       = 2 * time.Minute
	serveShutdownTimeout   = 15 * time.Second
)

func brokerServeCommand() *command {
	return &command{
		name:     "broker serve",
		summary:  "serve the broker's HTTP API on this machine",
		synopsis: "[--listen ADDR] [--public]",
		help: `Serves exactly the handler that functions/broker serves in Lambda
(POST /v1/credentials, /v1/leases/{id}/renew, /v1/leases/{id}/revoke,
/v1/admin/revoke, /v1/aws-credentials, GET /v1/health), configured from the
environment: EPHEMERA_CONFIG, EPHEMERA_POLICY_DIR, EPHEMERA_AUDIENCE,
EPHEMERA_STS_ENDPOINT, EPHEMERA_STS_HOSTS, EPHEMERA_PROOF_MAX_AGE,
EPHEMERA_STAGE, EPHEMERA_DB_TIMEOUT, EPHEMERA_DB_POOL_SIZE,
EPHEMERA_METRICS_NAMESPACE, AWS_REGION, and the admin DSN variables the
configuration names (auth: dsn, dsn_env).

Operational logs are JSON on stderr; audit lines are JSON on stdout. SIGINT or
SIGTERM stops accepting requests and lets those in flight finish (up to 15s).

The broker has no TLS (in AWS it runs behind API Gateway), so it listens only
on a loopback address unless --public is given.`,
		example: "EPHEMERA_CONFIG=broker.yaml EPHEMERA_POLICY_DIR=policies EPHEMERA_AUDIENCE=local \\\n" +
			"  EPHEMERA_STS_HOSTS=sts.us-east-1.amazonaws.com EPHEMERA_STS_ENDPOINT=http://127.0.0.1:4566 \\\n" +
			"  ephemera broker serve --listen 127.0.0.1:8080",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			listen := fs.String("listen", "127.0.0.1:8080", "`HOST:PORT` to listen on (port 0 picks a free one)")
			public := fs.Bool("public", false, "allow a non-loopback listen address (plain HTTP: put TLS in front)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return c.brokerServe(ctx, *listen, *public)
			}
		},
	}
}

// loopbackHost reports whether host names only loopback interfaces.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (c *CLI) brokerServe(ctx context.Context, listen string, public bool) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return usagef("Use host:port, e.g. --listen 127.0.0.1:8080.", "--listen %q is not host:port", listen)
	}
	if !public && !loopbackHost(host) {
		return usagef("The broker serves plain HTTP (in AWS, API Gateway terminates TLS in front of it). "+
			"Listen on 127.0.0.1, or pass --public to expose it anyway behind your own TLS proxy.",
			"refusing to listen on %s: not a loopback address", listen)
	}
	cfg, err := config.FromEnv(c.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(c.Stderr, nil))
	b, err := broker.New(ctx, broker.Options{Config: cfg, Logger: log, AuditOut: c.Stdout, Getenv: c.Getenv})
	if err != nil {
		return err
	}
	defer b.Close()
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           b.Handler(),
		ReadHeaderTimeout: serveReadHeaderTimeout,
		ReadTimeout:       serveReadTimeout,
		WriteTimeout:      serveWriteTimeout,
		IdleTimeout:       serveIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if public && !loopbackHost(host) {
		log.Warn("listening on a non-loopback address without TLS", "addr", ln.Addr().String())
	}
	log.Info("broker listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String(),
		"version", versionString(), "databases", cfg.DatabaseNames())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", serveShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serveShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

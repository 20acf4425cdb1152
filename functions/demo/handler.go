package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/extension/client"
)

const (
	// envCredential names the credential to use; default defaultCredential.
	envCredential     = "EPHEMERA_DEMO_CREDENTIAL"
	defaultCredential = "orders"
	// initTimeout bounds setup; Lambda allows 10 s for INIT.
	initTimeout = 8 * time.Second
)

// handler answers GET requests with the database user and the orders.
type handler struct {
	src  client.Source
	name string // the credential's name
	log  *slog.Logger

	mu   sync.Mutex
	pool *pgxpool.Pool // nil until the credential could be read
}

// setup builds the sandbox's one pool from src and warms one connection.
//
// When the extension has no credential yet (ErrNotReady: its broker was
// unreachable at INIT and it runs with EPHEMERA_ON_INIT_FAILURE=lazy) or
// cannot be reached, setup does not fail: it logs a warning, and each
// invocation tries to build the pool until one succeeds, answering 503
// meanwhile. Any other error (no such credential, a refused token) is
// fatal.
func setup(ctx context.Context, src client.Source, getenv func(string) string, log *slog.Logger) (*handler, error) {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	name := getenv(envCredential)
	if name == "" {
		name = defaultCredential
	}
	h := &handler{src: src, name: name, log: log}
	pool, err := h.connect(ctx)
	switch {
	case notReady(err):
		log.Warn("credentials not ready at init; the pool is built on the first invocation that can read them",
			"credential", name, "err", err)
		return h, nil
	case err != nil:
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		// Not fatal: the first invocation connects again.
		log.Warn("database not reachable at init", "credential", name, "err", err)
	}
	return h, nil
}

// connect returns the pool, building it first if it does not exist yet.
func (h *handler) connect(ctx context.Context) (*pgxpool.Pool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pool != nil {
		return h.pool, nil
	}
	cfg, err := client.PoolConfig(ctx, h.src, h.name)
	if err != nil {
		return nil, fmt.Errorf("demo: pool for credential %q: %w", h.name, err)
	}
	cfg.MaxConns = 2 // one invocation at a time per sandbox, plus slack
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("demo: pool for credential %q: %w", h.name, err)
	}
	h.pool = pool
	return pool, nil
}

// close closes the pool, if there is one.
func (h *handler) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pool != nil {
		h.pool.Close()
	}
}

// notReady reports whether err is temporary: the extension has no valid
// credential yet (503), or could not be reached.
func notReady(err error) bool {
	var ue *url.Error
	return errors.Is(err, client.ErrNotReady) || errors.As(err, &ue)
}

type order struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
	Qty  int    `json:"qty"`
}

type ordersResponse struct {
	CurrentUser    string  `json:"current_user"`
	Orders         []order `json:"orders"`
	LeaseExpiresAt string  `json:"lease_expires_at,omitempty"`
}

type errorResponse struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id,omitempty"`
}

// Handle serves one invocation and logs one line about it. It never returns
// an error: failures become a 500 whose body holds no detail, or a 503 while
// the extension has no credential to give.
func (h *handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	start := time.Now()
	var requestID string
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		requestID = lc.AwsRequestID
	}
	attrs := []slog.Attr{slog.String("request_id", requestID), slog.String("route", req.RouteKey)}

	status, body := http.StatusOK, any(nil)
	resp, err := h.orders(ctx)
	switch {
	case notReady(err):
		status, body = http.StatusServiceUnavailable, errorResponse{Error: "credentials not ready", RequestID: requestID}
		attrs = append(attrs, slog.String("error", err.Error()))
	case err != nil:
		status, body = http.StatusInternalServerError, errorResponse{Error: "internal error", RequestID: requestID}
		attrs = append(attrs, slog.String("error", err.Error()))
	default:
		body = resp
		attrs = append(attrs, slog.Int("orders", len(resp.Orders)), slog.String("lease_expires_at", resp.LeaseExpiresAt))
	}
	b, err := json.Marshal(body)
	if err != nil { // cannot happen with these types
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	attrs = append(attrs, slog.Int("status", status), slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	level := slog.LevelInfo
	switch status {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		level = slog.LevelWarn
	default:
		level = slog.LevelError
	}
	h.log.LogAttrs(ctx, level, "invocation", attrs...)
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       string(b),
	}, nil
}

// orders runs both queries on one connection, so that current_user and
// lease_expires_at describe the login that read the orders.
func (h *handler) orders(ctx context.Context) (*ordersResponse, error) {
	pool, err := h.connect(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	var resp ordersResponse
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&resp.CurrentUser); err != nil {
		return nil, fmt.Errorf("current_user: %w", err)
	}
	rows, _ := conn.Query(ctx, "SELECT id, item, qty FROM public.orders ORDER BY id")
	resp.Orders, err = pgx.CollectRows(rows, pgx.RowToStructByPos[order])
	if err != nil {
		return nil, fmt.Errorf("orders: %w", err)
	}
	if resp.Orders == nil {
		resp.Orders = []order{}
	}
	if exp, ok := client.ConnExpiry(conn.Conn()); ok {
		resp.LeaseExpiresAt = exp.UTC().Format(time.RFC3339)
	}
	return &resp, nil
}

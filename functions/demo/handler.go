package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
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
	pool *pgxpool.Pool
	log  *slog.Logger
}

// setup builds the sandbox's one pool from src and warms one connection.
func setup(ctx context.Context, src client.Source, getenv func(string) string, log *slog.Logger) (*handler, error) {
	ctx, cancel := context.WithTimeout(ctx, initTimeout)
	defer cancel()
	name := getenv(envCredential)
	if name == "" {
		name = defaultCredential
	}
	cfg, err := client.PoolConfig(ctx, src, name)
	if err != nil {
		return nil, fmt.Errorf("demo: pool for credential %q: %w", name, err)
	}
	cfg.MaxConns = 2 // one invocation at a time per sandbox, plus slack
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("demo: pool for credential %q: %w", name, err)
	}
	if err := pool.Ping(ctx); err != nil {
		// Not fatal: the first invocation connects again.
		log.Warn("database not reachable at init", "credential", name, "err", err)
	}
	return &handler{pool: pool, log: log}, nil
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
// an error: failures become a 500 whose body holds no detail.
func (h *handler) Handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	start := time.Now()
	var requestID string
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		requestID = lc.AwsRequestID
	}
	attrs := []slog.Attr{slog.String("request_id", requestID), slog.String("route", req.RouteKey)}

	status, body := http.StatusOK, any(nil)
	resp, err := h.orders(ctx)
	if err != nil {
		status, body = http.StatusInternalServerError, errorResponse{Error: "internal error", RequestID: requestID}
		attrs = append(attrs, slog.String("error", err.Error()))
	} else {
		body = resp
		attrs = append(attrs, slog.Int("orders", len(resp.Orders)), slog.String("lease_expires_at", resp.LeaseExpiresAt))
	}
	b, err := json.Marshal(body)
	if err != nil { // cannot happen with these types
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	attrs = append(attrs, slog.Int("status", status), slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	level := slog.LevelInfo
	if status != http.StatusOK {
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
	conn, err := h.pool.Acquire(ctx)
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ephemera-sh/ephemera/extension/client"
)

func source(l login, expires time.Time) client.Static {
	return client.Static{Credential: client.Credential{
		Name: "orders", Username: l.user, Password: l.password, Host: pg.Host(), Port: pg.Port(),
		DBName: pg.Database(), SSLMode: "disable", DSN: pg.ConnString(l.user, l.password, pg.Database()),
		LeaseID: "lease-1", ExpiresAt: expires,
	}}
}

// newHandler runs setup with src and a log buffer.
func newHandler(t *testing.T, src client.Source) (*handler, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	h, err := setup(context.Background(), src, func(string) string { return "" }, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.pool.Close)
	logs.Reset() // only the invocations' lines
	return h, &logs
}

func invoke(t *testing.T, h *handler, requestID string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: requestID})
	resp, err := h.Handle(ctx, events.APIGatewayV2HTTPRequest{RouteKey: "GET /orders", RawPath: "/orders"})
	if err != nil {
		t.Fatalf("Handle returned an error: %v", err)
	}
	if ct := resp.Headers["Content-Type"]; ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	return resp
}

// logLine decodes the one line logged per invocation.
func logLine(t *testing.T, logs *bytes.Buffer) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want 1:\n%s", len(lines), logs)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("log line is not JSON: %v\n%s", err, lines[0])
	}
	return m
}

func TestHandleListsOrders(t *testing.T) {
	expires := time.Now().Add(15 * time.Minute).UTC().Truncate(time.Second)
	h, logs := newHandler(t, source(reader, expires))

	resp := invoke(t, h, "req-1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
	}
	want := `{"current_user":"` + reader.user + `","orders":[` +
		`{"id":1,"item":"espresso beans","qty":3},{"id":2,"item":"teapot","qty":1},{"id":3,"item":"mug","qty":6}],` +
		`"lease_expires_at":"` + expires.Format(time.RFC3339) + `"}`
	if resp.Body != want {
		t.Errorf("body\n got %s\nwant %s", resp.Body, want)
	}

	line := logLine(t, logs)
	if line["request_id"] != "req-1" || line["status"] != float64(200) || line["orders"] != float64(3) || line["level"] != "INFO" {
		t.Errorf("log line %v", line)
	}
	if strings.Contains(logs.String(), reader.password) || strings.Contains(resp.Body, reader.password) {
		t.Error("the password leaked into the log or the response")
	}

	// A second invocation reuses the pool's connection.
	logs.Reset()
	if resp := invoke(t, h, "req-2"); resp.StatusCode != 200 || logLine(t, logs)["request_id"] != "req-2" {
		t.Errorf("second invocation: %d %s", resp.StatusCode, resp.Body)
	}
	if n := h.pool.Stat().NewConnsCount(); n != 1 {
		t.Errorf("%d connections made, want 1", n)
	}
}

func TestHandleFailureRevealsNothing(t *testing.T) {
	h, logs := newHandler(t, source(stranger, time.Now().Add(15*time.Minute)))

	resp := invoke(t, h, "req-3")
	if resp.StatusCode != 500 || resp.Body != `{"error":"internal error","request_id":"req-3"}` {
		t.Errorf("got %d %s", resp.StatusCode, resp.Body)
	}
	line := logLine(t, logs)
	if line["request_id"] != "req-3" || line["status"] != float64(500) || line["level"] != "ERROR" ||
		!strings.Contains(line["error"].(string), "permission denied") {
		t.Errorf("log line %v", line)
	}
	if strings.Contains(logs.String(), stranger.password) {
		t.Error("the password leaked into the log")
	}
}

func TestSetupCredentialName(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	src := source(reader, time.Now().Add(15*time.Minute)) // serves "orders" only
	env := map[string]string{envCredential: "billing"}
	if _, err := setup(ctx, src, func(k string) string { return env[k] }, log); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("EPHEMERA_DEMO_CREDENTIAL=billing: err = %v, want ErrNotFound", err)
	}
	env[envCredential] = "orders"
	h, err := setup(ctx, src, func(k string) string { return env[k] }, log)
	if err != nil {
		t.Fatal(err)
	}
	h.pool.Close()
}

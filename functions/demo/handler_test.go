package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	t.Cleanup(h.close)
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
	if h.pool == nil {
		t.Error("setup did not build the pool although the credential was ready")
	}
	h.close()
}

// lateSource answers 503 not_ready (as the extension does in lazy mode while
// its broker is unreachable) until it is made ready.
type lateSource struct {
	mu    sync.Mutex
	ready bool
	cred  client.Credential
	reads int
}

func (s *lateSource) Credentials(_ context.Context, name string) (*client.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if !s.ready {
		return nil, &client.Error{Name: name, StatusCode: 503, Code: "not_ready", Message: "agent: credential not ready"}
	}
	c := s.cred
	return &c, nil
}

func (s *lateSource) Refresh(ctx context.Context, name string) (*client.Credential, error) {
	return s.Credentials(ctx, name)
}

func (s *lateSource) set(ready bool) { s.mu.Lock(); s.ready = ready; s.mu.Unlock() }

// An extension that is not ready at init (lazy mode) does not stop the
// demo: every invocation tries again, answering 503 until the credential
// can be read, then the pool is built once and used.
func TestSetupNotReadyBuildsPoolLazily(t *testing.T) {
	src := &lateSource{cred: source(reader, time.Now().Add(15*time.Minute)).Credential}
	var logs bytes.Buffer
	h, err := setup(context.Background(), src, func(string) string { return "" }, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("setup failed on a not-ready extension: %v", err)
	}
	t.Cleanup(h.close)
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "not ready") {
		t.Errorf("no warning at init:\n%s", logs.String())
	}

	for i, id := range []string{"req-a", "req-b"} {
		logs.Reset()
		resp := invoke(t, h, id)
		if resp.StatusCode != 503 || resp.Body != `{"error":"credentials not ready","request_id":"`+id+`"}` {
			t.Fatalf("invocation %d while not ready: %d %s", i+1, resp.StatusCode, resp.Body)
		}
		if line := logLine(t, &logs); line["status"] != float64(503) || line["level"] != "WARN" {
			t.Errorf("log line %v", line)
		}
	}
	if src.reads < 3 {
		t.Errorf("%d reads: every invocation must try again", src.reads)
	}

	src.set(true)
	logs.Reset()
	resp := invoke(t, h, "req-c")
	if resp.StatusCode != 200 || !strings.Contains(resp.Body, `"current_user":"`+reader.user+`"`) {
		t.Fatalf("invocation once ready: %d %s", resp.StatusCode, resp.Body)
	}
	pool := h.pool
	if resp := invoke(t, h, "req-d"); resp.StatusCode != 200 || h.pool != pool {
		t.Errorf("next invocation: %d %s; the pool must be built once", resp.StatusCode, resp.Body)
	}
	if n := pool.Stat().NewConnsCount(); n != 1 {
		t.Errorf("%d connections made, want 1", n)
	}
}

// An extension that cannot be reached at all is transient too.
func TestSetupUnreachableExtensionIsNotFatal(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	h, err := setup(context.Background(), client.New(client.WithBaseURL(url), client.WithToken("token")),
		func(string) string { return "" }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("setup failed on an unreachable extension: %v", err)
	}
	t.Cleanup(h.close)
	if resp := invoke(t, h, "req-e"); resp.StatusCode != 503 {
		t.Errorf("invocation: %d %s, want 503", resp.StatusCode, resp.Body)
	}
}

// Other errors stay fatal at init: a refused token.
func TestSetupUnauthorizedIsFatal(t *testing.T) {
	unauthorized := sourceFunc(func(name string) (*client.Credential, error) {
		return nil, &client.Error{Name: name, StatusCode: 401, Code: "unauthorized"}
	})
	if _, err := setup(context.Background(), unauthorized, func(string) string { return "" }, slog.New(slog.DiscardHandler)); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("err = %v, want ErrUnauthorized", err)
	}
}

type sourceFunc func(name string) (*client.Credential, error)

func (f sourceFunc) Credentials(_ context.Context, name string) (*client.Credential, error) {
	return f(name)
}
func (f sourceFunc) Refresh(_ context.Context, name string) (*client.Credential, error) {
	return f(name)
}

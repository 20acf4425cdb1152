package extapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/extapi"
	"github.com/ephemera-sh/ephemera/extension/internal/extapitest"
)

func client(t *testing.T, f *extapitest.Server) *extapi.Client {
	t.Helper()
	c, err := extapi.New(f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRegisterAndNext(t *testing.T) {
	ctx := context.Background()
	f := extapitest.Start(t)
	c := client(t, f)
	if _, err := c.Next(ctx); !errors.Is(err, extapi.ErrNotRegistered) {
		t.Fatalf("Next before Register: %v", err)
	}
	id, err := c.Register(ctx, "ephemera", extapi.Invoke, extapi.Shutdown)
	if err != nil {
		t.Fatal(err)
	}
	if id != extapitest.ID || c.ID() != extapitest.ID || c.Info().FunctionName != "orders-fn" {
		t.Fatalf("id %q info %+v", id, c.Info())
	}
	if name, events, n := f.Registration(); name != "ephemera" || strings.Join(events, ",") != "INVOKE,SHUTDOWN" || n != 1 {
		t.Fatalf("registration %q %v %d", name, events, n)
	}

	deadline := time.Date(2026, 11, 22, 8, 0, 3, 250e6, time.UTC)
	f.Invoke("req-1", deadline)
	ev, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != extapi.Invoke || !ev.Deadline.Equal(deadline) || ev.RequestID != "req-1" ||
		ev.Tracing.Type != "X-Amzn-Trace-Id" || !strings.HasPrefix(ev.Tracing.Value, "Root=") ||
		!strings.HasSuffix(ev.InvokedFunctionARN, ":function:orders-fn") {
		t.Fatalf("event %+v", ev)
	}
	f.Shutdown("spindown", deadline)
	ev, err = c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != extapi.Shutdown || ev.ShutdownReason != "spindown" || !ev.Deadline.Equal(deadline) {
		t.Fatalf("event %+v", ev)
	}
	f.Queue(`{"eventType":"RESTART"}`)
	if _, err := c.Next(ctx); err == nil || !strings.HasPrefix(err.Error(), "extapi: next: unknown event type") {
		t.Fatalf("unknown event: %v", err)
	}
	f.Queue(`not json`)
	if _, err := c.Next(ctx); err == nil || !strings.HasPrefix(err.Error(), "extapi: next: decoding the event") {
		t.Fatalf("bad event: %v", err)
	}
}

func TestNextStopsWithContext(t *testing.T) {
	f := extapitest.Start(t)
	c := client(t, f)
	if _, err := c.Register(context.Background(), "ephemera", extapi.Invoke); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Next(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "extapi: next: ") {
		t.Fatalf("Next: %v", err)
	}
}

func TestErrorReports(t *testing.T) {
	ctx := context.Background()
	f := extapitest.Start(t)
	c := client(t, f)
	if err := c.InitError(ctx, "Extension.ConfigInvalid", errors.New("x")); !errors.Is(err, extapi.ErrNotRegistered) {
		t.Fatalf("InitError before Register: %v", err)
	}
	if _, err := c.Register(ctx, "ephemera", extapi.Invoke, extapi.Shutdown); err != nil {
		t.Fatal(err)
	}
	if err := c.InitError(ctx, "Extension.ConfigInvalid", errors.New("config: EPHEMERA_PORT: bad")); err != nil {
		t.Fatal(err)
	}
	if err := c.ExitError(ctx, "Extension.BrokerUnavailable", errors.New("gone")); err != nil {
		t.Fatal(err)
	}
	want := []extapitest.Report{
		{Path: "/init/error", ID: extapitest.ID, ErrorType: "Extension.ConfigInvalid", Message: "config: EPHEMERA_PORT: bad"},
		{Path: "/exit/error", ID: extapitest.ID, ErrorType: "Extension.BrokerUnavailable", Message: "gone"},
	}
	got := f.Reports()
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("reports %+v", got)
	}
}

func TestStatusError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"errorMessage":"boom","errorType":"Extension.Unknown"}`)
	}))
	defer srv.Close()
	c, err := extapi.New(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Register(context.Background(), "ephemera", extapi.Invoke)
	var se *extapi.StatusError
	if !errors.As(err, &se) || se.Status != 500 || se.Type != "Extension.Unknown" || se.Message != "boom" {
		t.Fatalf("err %v", err)
	}
	if err.Error() != "extapi: register: status 500 Extension.Unknown: boom" {
		t.Errorf("text %q", err)
	}
}

func TestRegisterNeedsIdentifier(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") }))
	defer srv.Close()
	c, _ := extapi.New(strings.TrimPrefix(srv.URL, "http://"))
	if _, err := c.Register(context.Background(), "ephemera", extapi.Invoke); err == nil || !strings.Contains(err.Error(), extapi.HeaderIdentifier) {
		t.Fatalf("err %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, v := range []string{"", "  ", "http://127.0.0.1:9001"} {
		if _, err := extapi.New(v); err == nil || !strings.HasPrefix(err.Error(), "extapi: ") {
			t.Errorf("New(%q) = %v", v, err)
		}
	}
}

// An event that encoding/json would read one way and a stricter reader another is a failed
// call, never an event: duplicate keys, keys that differ from a field only in case, NULs.
// A field Lambda adds later is ignored.
func TestNextDecodesStrictly(t *testing.T) {
	ctx := context.Background()
	f := extapitest.Start(t)
	c := client(t, f)
	if _, err := c.Register(ctx, "ephemera", extapi.Invoke, extapi.Shutdown); err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		`{"eventType":"INVOKE","eventType":"SHUTDOWN","deadlineMs":1}`,
		`{"eventType":"INVOKE","EventType":"SHUTDOWN","deadlineMs":1}`,
		`{"EVENTTYPE":"SHUTDOWN","deadlineMs":1}`,
		`{"eventType":"INVOKE","requestId":"a\u0000b","deadlineMs":1}`,
	} {
		f.Queue(doc)
		if ev, err := c.Next(ctx); err == nil || !strings.Contains(err.Error(), "decoding the event") {
			t.Errorf("%s: event %+v, error %v", doc, ev, err)
		}
	}
	f.Queue(`{"eventType":"SHUTDOWN","deadlineMs":1,"shutdownReason":"spindown","newField":{"x":1}}`)
	if ev, err := c.Next(ctx); err != nil || ev.Type != extapi.Shutdown {
		t.Fatalf("an added field: %+v %v", ev, err)
	}
}

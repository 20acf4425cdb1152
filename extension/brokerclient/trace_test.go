package brokerclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ephemera-sh/ephemera/extension/brokerclient"
)

// The invocation's X-Ray header travels with the broker call, so the trace
// continues at the broker; without one, no header is sent.
func TestTraceHeaderPropagated(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Amzn-Trace-Id"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no","request_id":"r"}}`))
	}))
	defer srv.Close()
	c, err := brokerclient.New(brokerclient.Config{BaseURL: srv.URL, Audience: "a", Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "token")})
	if err != nil {
		t.Fatal(err)
	}
	const h = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
	_, _ = c.Issue(brokerclient.WithTraceHeader(context.Background(), h), "orders", "readonly", 0)
	if got.Load() != h {
		t.Fatalf("X-Amzn-Trace-Id %q, want %q", got.Load(), h)
	}
	_, _ = c.Issue(context.Background(), "orders", "readonly", 0)
	if got.Load() != "" {
		t.Fatalf("X-Amzn-Trace-Id %q sent without a trace", got.Load())
	}
}

package brokerclient_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
)

func TestAssumeAWS(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b)
	cred, err := c.AssumeAWS(context.Background(), "reports-read", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sessions := b.AWSSessions()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	s := sessions[0]
	if cred.LeaseID != s.LeaseID || cred.AccessKeyID != s.AccessKeyID || cred.SecretAccessKey != s.SecretAccessKey ||
		cred.SessionToken != s.SessionToken || !cred.Expiration.Equal(s.Expiration) {
		t.Fatalf("answer %v does not match session %+v", cred, s)
	}
	if got := s.Expiration.Sub(s.IssuedAt); got <= 30*time.Minute-time.Second || got > 30*time.Minute {
		t.Errorf("duration %v", got)
	}
	// The default is left to the broker: no ttl_seconds.
	if _, err := c.AssumeAWS(context.Background(), "reports-read", 0); err != nil {
		t.Fatal(err)
	}
	calls := b.Calls()
	if len(calls) != 2 || calls[0].Op != "assume" || calls[0].Profile != "reports-read" || calls[0].TTLSeconds != 1800 ||
		calls[1].TTLSeconds != 0 {
		t.Fatalf("calls %+v", calls)
	}
	for i, call := range calls {
		if call.Nonce == "" || call.SigV4Err != nil {
			t.Errorf("call %d: nonce %q, SigV4 %v", i, call.Nonce, call.SigV4Err)
		}
	}
	if calls[0].Nonce == calls[1].Nonce {
		t.Error("a proof was reused")
	}
}

// AssumeAWS retries like the other calls: 5xx and network failures, never 4xx.
func TestAssumeAWSRetries(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b)
	var s sleeps
	c.SetSleep(s.sleep)
	b.FailNext(2, 503, "sts_unavailable")
	if _, err := c.AssumeAWS(context.Background(), "reports-read", 0); err != nil {
		t.Fatal(err)
	}
	if n := b.Count("assume"); n != 3 || len(s.d) != 2 {
		t.Fatalf("%d attempts, waits %v", n, s.d)
	}
	calls := b.Calls()
	if calls[0].Nonce == calls[1].Nonce || calls[1].Nonce == calls[2].Nonce {
		t.Error("a retry reused a proof")
	}

	b.Reset()
	_, err := c.AssumeAWS(context.Background(), "root", 0)
	if api.CodeOf(err) != "not_found" || brokerclient.StatusOf(err) != 404 || brokerclient.Retryable(err) {
		t.Fatalf("unknown profile: %v", err)
	}
	b.FailNext(1, 403, "access_denied")
	_, err = c.AssumeAWS(context.Background(), "reports-read", 0)
	if api.CodeOf(err) != "access_denied" || brokerclient.Retryable(err) || !strings.Contains(err.Error(), "reports-read") {
		t.Fatalf("denied: %v", err)
	}
	if n := b.Count("assume"); n != 2 {
		t.Fatalf("%d attempts for two refusals", n)
	}
}

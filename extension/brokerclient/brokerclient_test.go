package brokerclient_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
)

func newClient(t *testing.T, b *brokertest.Broker, edit ...func(*brokerclient.Config)) *brokerclient.Client {
	t.Helper()
	cfg := brokerclient.Config{
		BaseURL: b.URL(), Audience: brokertest.Audience, Region: brokertest.Region,
		Credentials: b.CredentialsProvider(), BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
	}
	return build(t, cfg, edit...)
}

// build applies the edits to cfg and returns the client it configures.
func build(t *testing.T, cfg brokerclient.Config, edit ...func(*brokerclient.Config)) *brokerclient.Client {
	t.Helper()
	for _, e := range edit {
		e(&cfg)
	}
	c, err := brokerclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sleeps records backoff waits instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return nil
}

func TestIssueRenewRevoke(t *testing.T) {
	ctx := context.Background()
	b := brokertest.Start(t)
	c := newClient(t, b)

	cred, err := c.Issue(ctx, "orders", "readonly", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := b.Lease(cred.LeaseID)
	if !ok || cred.Username != l.Username || cred.Password != l.Password || cred.Database != "orders" ||
		cred.Role != "readonly" || cred.Host != brokertest.Host || cred.Port != brokertest.Port ||
		cred.DBName != "orders" || cred.SSLMode != brokertest.SSLMode || !cred.Renewable ||
		!cred.IssuedAt.Equal(l.IssuedAt) || !cred.ExpiresAt.Equal(l.ExpiresAt) || !cred.MaxExpiresAt.Equal(l.MaxExpiresAt) {
		t.Fatalf("credential %v does not match lease %+v", cred, l)
	}
	if got := cred.ExpiresAt.Sub(cred.IssuedAt); got != 10*time.Minute {
		t.Errorf("ttl %v", got)
	}

	renewed, err := c.Renew(ctx, cred.LeaseID, 20*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.LeaseID != cred.LeaseID || !renewed.ExpiresAt.After(cred.ExpiresAt) || !renewed.MaxExpiresAt.Equal(cred.MaxExpiresAt) {
		t.Errorf("renewal %+v after %v", renewed, cred)
	}
	if err := c.Revoke(ctx, cred.LeaseID); err != nil {
		t.Fatal(err)
	}
	if err := c.Revoke(ctx, cred.LeaseID); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	_, err = c.Renew(ctx, cred.LeaseID, 0)
	if api.CodeOf(err) != "lease_revoked" || brokerclient.StatusOf(err) != 409 || brokerclient.Retryable(err) {
		t.Fatalf("renew of a revoked lease: %v", err)
	}

	calls := b.Calls()
	if len(calls) != 5 {
		t.Fatalf("%d calls", len(calls))
	}
	wantOps := []string{"issue", "renew", "revoke", "revoke", "renew"}
	wantTTL := []int64{600, 1200, 0, 0, 0}
	nonces := map[string]bool{}
	for i, call := range calls {
		if call.Op != wantOps[i] || call.TTLSeconds != wantTTL[i] {
			t.Errorf("call %d: %s ttl %d, want %s ttl %d", i, call.Op, call.TTLSeconds, wantOps[i], wantTTL[i])
		}
		// A fresh proof per call: a new nonce, dated now.
		if call.Nonce == "" || nonces[call.Nonce] {
			t.Errorf("call %d: nonce %q missing or reused", i, call.Nonce)
		}
		nonces[call.Nonce] = true
		if age := call.Arrived.Sub(call.ProofDate); age < -time.Second || age > time.Minute {
			t.Errorf("call %d: proof dated %v, arrived %v", i, call.ProofDate, call.Arrived)
		}
		// The HTTP request carries a valid SigV4 execute-api signature.
		if call.SigV4Err != nil || !strings.Contains(call.Authorization, "/"+brokertest.Region+"/execute-api/aws4_request") {
			t.Errorf("call %d: SigV4 %v, Authorization %q", i, call.SigV4Err, call.Authorization)
		}
	}
}

func TestDefaultTTLIsOmitted(t *testing.T) {
	b := brokertest.Start(t)
	cred, err := newClient(t, b).Issue(context.Background(), "orders", "readonly", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := cred.ExpiresAt.Sub(cred.IssuedAt); got != 15*time.Minute {
		t.Errorf("ttl %v, want the broker's default", got)
	}
	if b.Calls()[0].TTLSeconds != 0 {
		t.Errorf("ttl_seconds sent: %d", b.Calls()[0].TTLSeconds)
	}
}

func TestRetriesServerErrors(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b, func(cfg *brokerclient.Config) { cfg.BaseDelay, cfg.MaxDelay = 100*time.Millisecond, time.Second })
	var s sleeps
	c.SetSleep(s.sleep)
	b.FailNext(2, 500, "internal") // no Retry-After: the backoff alone decides
	if _, err := c.Issue(context.Background(), "orders", "readonly", 0); err != nil {
		t.Fatal(err)
	}
	if n := b.Count("issue"); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	if len(s.d) != 2 {
		t.Fatalf("waits %v", s.d)
	}
	// Exponential with jitter: [50ms,100ms], then [100ms,200ms].
	if s.d[0] < 50*time.Millisecond || s.d[0] > 100*time.Millisecond || s.d[1] < 100*time.Millisecond || s.d[1] > 200*time.Millisecond {
		t.Errorf("waits %v", s.d)
	}
	// Each attempt had its own proof.
	calls := b.Calls()
	if calls[0].Nonce == calls[1].Nonce || calls[1].Nonce == calls[2].Nonce {
		t.Errorf("a retry reused a proof")
	}
}

func TestRetriesNetworkErrors(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b)
	b.DropNext(1)
	cred, err := c.Issue(context.Background(), "orders", "readonly", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := b.Count("issue"); n != 2 || cred.LeaseID == "" {
		t.Fatalf("%d attempts", n)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b, func(cfg *brokerclient.Config) { cfg.MaxAttempts = 3 })
	b.FailNext(10, 500, "internal")
	_, err := c.Issue(context.Background(), "orders", "readonly", 0)
	var be *brokerclient.Error
	if !errors.As(err, &be) || be.Status != 500 || be.API == nil || be.API.Code != api.CodeInternal || be.RequestID != "req-test" || !brokerclient.Retryable(err) {
		t.Fatalf("err %v", err)
	}
	if n := b.Count("issue"); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	want := "brokerclient: issue orders/readonly: broker answered 500 internal: scripted failure (request req-test)"
	if err.Error() != want {
		t.Errorf("text %q\nwant %q", err, want)
	}
}

func TestNoRetryOnClientErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
	}{{400, "ttl_exceeds_max"}, {401, "stale_proof"}, {403, "access_denied"}, {404, "not_found"}, {409, "lease_expired"}, {429, "lease_limit"}} {
		t.Run(tc.code, func(t *testing.T) {
			b := brokertest.Start(t)
			c := newClient(t, b)
			b.FailNext(1, tc.status, tc.code)
			_, err := c.Issue(context.Background(), "orders", "readonly", 0)
			if api.CodeOf(err) != api.Code(tc.code) || brokerclient.StatusOf(err) != tc.status || brokerclient.Retryable(err) {
				t.Fatalf("err %v", err)
			}
			if n := b.Count("issue"); n != 1 {
				t.Fatalf("%d attempts, want 1", n)
			}
		})
	}
}

func TestGatewayRefusal(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b, func(cfg *brokerclient.Config) {
		cfg.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			cr := b.Credentials()
			cr.SecretAccessKey = "wrong-secret-key-value"
			return cr, nil
		})
	})
	_, err := c.Issue(context.Background(), "orders", "readonly", 0)
	var be *brokerclient.Error
	if !errors.As(err, &be) || be.Status != 403 || be.API != nil || api.CodeOf(err) != "" || be.Message != "Forbidden" {
		t.Fatalf("err %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-key-value") || strings.Contains(err.Error(), b.Credentials().SessionToken) {
		t.Fatalf("error leaks a secret: %v", err)
	}
}

func TestDeadlineRespected(t *testing.T) {
	b := brokertest.Start(t)
	b.Hang()
	c := newClient(t, b, func(cfg *brokerclient.Config) { cfg.AttemptTimeout = 100 * time.Millisecond; cfg.MaxAttempts = 1000 })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Issue(ctx, "orders", "readonly", 0)
	elapsed := time.Since(start)
	if err == nil || !brokerclient.Retryable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if elapsed > 3*time.Second { // generous: the machine is shared
		t.Fatalf("returned after %v; the deadline was 500ms", elapsed)
	}
	if n := len(b.Calls()); n < 2 {
		t.Logf("only %d attempt(s) fit in the deadline", n)
	}
}

func TestCancelIsNotRetried(t *testing.T) {
	b := brokertest.Start(t)
	b.Hang()
	c := newClient(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	err := c.Revoke(ctx, "0b0e3d1e-8d8a-4a59-9d0e-4c1b1b3f9a10")
	if !errors.Is(err, context.Canceled) || brokerclient.Retryable(err) {
		t.Fatalf("err %v", err)
	}
}

func TestBackoff(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b, func(cfg *brokerclient.Config) {
		cfg.BaseDelay, cfg.MaxDelay = 100*time.Millisecond, 500*time.Millisecond
	})
	for attempt, max := range map[int]time.Duration{1: 100, 2: 200, 3: 400, 4: 500, 10: 500, 100: 500} {
		max *= time.Millisecond
		for range 50 {
			if d := c.Backoff(attempt); d < max/2 || d > max {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", attempt, d, max/2, max)
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	b := brokertest.Start(t)
	c := newClient(t, b)
	if err := c.Revoke(context.Background(), "../x"); err == nil || brokerclient.Retryable(err) {
		t.Fatalf("err %v", err)
	}
	if _, err := brokerclient.New(brokerclient.Config{BaseURL: "ftp://x"}); err == nil ||
		!strings.Contains(err.Error(), "base URL") || !strings.Contains(err.Error(), "audience") ||
		!strings.Contains(err.Error(), "region") || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("New: %v", err)
	}
	if len(b.Calls()) != 0 {
		t.Fatal("a bad request reached the broker")
	}
}

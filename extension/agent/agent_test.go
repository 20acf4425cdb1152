package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

// clock is a settable wall clock shared by the agent and the broker double. Proofs are
// dated with real time, as the broker checks their freshness with real time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type fixture struct {
	b     *brokertest.Broker
	clock *clock
	t0    time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{b: brokertest.Start(t), clock: newClock()}
	f.t0 = f.clock.Now()
	f.b.SetClock(f.clock.Now)
	return f
}

func (f *fixture) client(t *testing.T) *brokerclient.Client {
	t.Helper()
	c, err := brokerclient.New(brokerclient.Config{
		BaseURL: f.b.URL(), Audience: brokertest.Audience, Region: brokertest.Region,
		Credentials: f.b.CredentialsProvider(), BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agent returns an agent for creds ("orders=orders/readonly:15m" when none).
func (f *fixture) agent(t *testing.T, opts agent.Options, creds ...config.Credential) *agent.Agent {
	t.Helper()
	if len(creds) == 0 {
		creds = []config.Credential{{Name: "orders", Database: "orders", Role: "readonly", TTL: 15 * time.Minute}}
	}
	return f.newAgent(t, opts, creds)
}

// newAgent returns an agent on the fixture's broker and clock (INIT timeout 10 s
// unless opts says otherwise) that revokes its leases when the test ends.
func (f *fixture) newAgent(t *testing.T, opts agent.Options, creds []config.Credential) *agent.Agent {
	t.Helper()
	opts.Clock = f.clock.Now
	if opts.InitTimeout == 0 {
		opts.InitTimeout = 10 * time.Second
	}
	a, err := agent.New(f.client(t), creds, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.RevokeAll(ctx)
	})
	return a
}

// at sets the clock to t0+d.
func (f *fixture) at(d time.Duration) { f.clock.Advance(f.t0.Add(d).Sub(f.clock.Now())) }

func (f *fixture) counts() (issue, renew, revoke int) {
	return f.b.Count("issue"), f.b.Count("renew"), f.b.Count("revoke")
}

// mustGet returns what get (Agent.Get or Agent.GetAWS) gives for name, failing the
// test on an error.
func mustGet[T any](t *testing.T, get func(context.Context, string, bool) (T, error), name string, refresh bool) T {
	t.Helper()
	c, err := get(context.Background(), name, refresh)
	if err != nil {
		t.Fatalf("get %q: %v", name, err)
	}
	return c
}

// start starts a, failing the test if INIT fails.
func start(t *testing.T, a *agent.Agent) *agent.Agent {
	t.Helper()
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// started returns an agent with default options, started, and the first read of
// the orders credential.
func (f *fixture) started(t *testing.T) (*agent.Agent, agent.Credential) {
	t.Helper()
	a := start(t, f.agent(t, agent.Options{}))
	return a, mustGet(t, a.Get, "orders", false)
}

// startHeld starts a while the broker holds its answers, and fails t unless INIT has n
// fetches in flight at once and a is ready only once they are answered.
func (f *fixture) startHeld(t *testing.T, a *agent.Agent, n int) {
	t.Helper()
	release := f.b.Hold()
	done := make(chan error, 1)
	go func() { done <- a.Start(context.Background()) }()
	eventually(t, fmt.Sprintf("%d fetches in flight at once", n), func() bool { return f.b.InFlight() == n })
	if a.Ready() {
		t.Fatal("ready before INIT ended")
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !a.Ready() {
		t.Fatal("not ready after INIT")
	}
}

// eventually polls cond for up to 10 s (the machine is shared; never a tight bound).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !observe.Until(10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestStartFetchesConcurrently(t *testing.T) {
	f := newFixture(t)
	a := f.agent(t, agent.Options{},
		config.Credential{Name: "orders", Database: "orders", Role: "readonly", TTL: 15 * time.Minute},
		config.Credential{Name: "audit", Database: "orders", Role: "auditor"})
	f.startHeld(t, a, 2)
	o, au := mustGet(t, a.Get, "orders", false), mustGet(t, a.Get, "audit", false)
	if o.Name != "orders" || o.Role != "readonly" || au.Role != "auditor" || o.Username == au.Username || o.Password == "" {
		t.Fatalf("credentials %v %v", o, au)
	}
	if got := o.ExpiresAt.Sub(f.t0); got != 15*time.Minute {
		t.Errorf("orders ttl %v", got)
	}
	if got := au.ExpiresAt.Sub(f.t0); got != 15*time.Minute {
		t.Errorf("audit ttl %v (broker default)", got)
	}
	if i, r, _ := f.counts(); i != 2 || r != 0 {
		t.Errorf("issue %d renew %d", i, r)
	}
	if _, err := a.Get(context.Background(), "nope", false); !errors.Is(err, agent.ErrUnknown) {
		t.Errorf("unknown name: %v", err)
	}
}

func TestGetWaitsForInit(t *testing.T) {
	f := newFixture(t)
	a := f.agent(t, agent.Options{})
	release := f.b.Hold()
	go func() { _ = a.Start(context.Background()) }()
	eventually(t, "INIT in flight", func() bool { return f.b.InFlight() == 1 })

	// A read whose own context ends first gives up with ErrNotReady.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Get(ctx, "orders", false); !errors.Is(err, agent.ErrNotReady) {
		t.Fatalf("Get with a short context: %v", err)
	}

	got := make(chan error, 1)
	go func() {
		c, err := a.Get(context.Background(), "orders", false)
		if err == nil && c.Username == "" {
			err = errors.New("empty credential")
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	release()
	if err := <-got; err != nil {
		t.Fatalf("Get during INIT: %v", err)
	}
	if i, _, _ := f.counts(); i != 1 {
		t.Errorf("%d issues; the waiting read must not issue its own", i)
	}
}

func TestGetWaitIsBoundedByInitTimeout(t *testing.T) {
	f := newFixture(t)
	a := f.agent(t, agent.Options{InitTimeout: 100 * time.Millisecond})
	// Start is never called.
	start := time.Now()
	if _, err := a.Get(context.Background(), "orders", false); !errors.Is(err, agent.ErrNotReady) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("returned after %v, before the init timeout", d)
	}
}

func TestRefreshMargin(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ttl      time.Duration // spec TTL; 0 = broker default
		brokerD  time.Duration // broker default TTL
		fixed    time.Duration // EPHEMERA_REFRESH_MARGIN
		quiet    time.Duration // no refresh yet at this age
		refresh  time.Duration // refresh at this age
		wantLeft time.Duration // lifetime after the renewal
	}{
		{"20% of 15m", 15 * time.Minute, time.Hour, 0, 11*time.Minute + 59*time.Second, 12*time.Minute + time.Second, 15 * time.Minute},
		{"20% of the broker default 10m", 0, 10 * time.Minute, 0, 7*time.Minute + 59*time.Second, 8*time.Minute + time.Second, 10 * time.Minute},
		{"clamped to 5m", 50 * time.Minute, time.Hour, 0, 44*time.Minute + 59*time.Second, 45*time.Minute + time.Second, 50 * time.Minute},
		{"clamped to 5s", 20 * time.Second, time.Hour, 0, 14 * time.Second, 16 * time.Second, 20 * time.Second},
		{"fixed 1m", 15 * time.Minute, time.Hour, time.Minute, 13*time.Minute + 59*time.Second, 14*time.Minute + time.Second, 15 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.b.SetTTLs(tc.brokerD, 2*time.Hour)
			a := f.agent(t, agent.Options{RefreshMargin: tc.fixed},
				config.Credential{Name: "orders", Database: "orders", Role: "readonly", TTL: tc.ttl})
			if err := a.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			first := mustGet(t, a.Get, "orders", false)
			f.at(tc.quiet)
			if c := mustGet(t, a.Get, "orders", false); c.LeaseID != first.LeaseID || !c.ExpiresAt.Equal(first.ExpiresAt) {
				t.Fatalf("refreshed too early: %v", c)
			}
			if _, r, _ := f.counts(); r != 0 {
				t.Fatalf("%d renewals before the margin", r)
			}
			f.at(tc.refresh)
			c := mustGet(t, a.Get, "orders", false)
			if i, r, _ := f.counts(); i != 1 || r != 1 {
				t.Fatalf("issue %d renew %d, want 1 and 1", i, r)
			}
			if c.LeaseID != first.LeaseID || c.Username != first.Username || c.Password != first.Password {
				t.Fatalf("a renewal changed the credential: %v -> %v", first, c)
			}
			if left := c.ExpiresAt.Sub(f.clock.Now()); left != tc.wantLeft {
				t.Fatalf("%v left after renewal, want %v", left, tc.wantLeft)
			}
			if ttl := f.b.Calls()[1].TTLSeconds; ttl != int64(tc.ttl/time.Second) {
				t.Errorf("renewal asked for %ds", ttl)
			}
		})
	}
}

func TestRenewThenReissueAtMaxTTL(t *testing.T) {
	f := newFixture(t)
	f.b.SetTTLs(15*time.Minute, 20*time.Minute)
	a := f.agent(t, agent.Options{}, config.Credential{Name: "orders", Database: "orders", Role: "readonly"})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := mustGet(t, a.Get, "orders", false)

	// 2m30s left (< 3m margin); max_expires_at 7m30s away (>= 2 × margin): renew, capped at max.
	f.at(12*time.Minute + 30*time.Second)
	renewed := mustGet(t, a.Get, "orders", false)
	if renewed.Username != first.Username || !renewed.ExpiresAt.Equal(f.t0.Add(20*time.Minute)) || renewed.Renewable {
		t.Fatalf("renewed %v", renewed)
	}
	if i, r, _ := f.counts(); i != 1 || r != 1 {
		t.Fatalf("issue %d renew %d", i, r)
	}

	// 2m30s left and max_expires_at as close: a new credential, no renewal attempt.
	f.at(17*time.Minute + 30*time.Second)
	fresh := mustGet(t, a.Get, "orders", false)
	if fresh.Username == first.Username || fresh.LeaseID == first.LeaseID {
		t.Fatalf("not a new credential: %v", fresh)
	}
	if i, r, _ := f.counts(); i != 2 || r != 1 {
		t.Fatalf("issue %d renew %d, want 2 and 1", i, r)
	}

	// SHUTDOWN revokes the new lease and the replaced one, which is still live.
	if err := a.RevokeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{first.LeaseID, fresh.LeaseID} {
		if l, _ := f.b.Lease(id); !l.Revoked {
			t.Errorf("lease %s not revoked", id)
		}
	}
}

func TestExpiredWhileFrozenIssuesNew(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	f.at(16 * time.Minute) // the sandbox slept through the expiry
	c := mustGet(t, a.Get, "orders", false)
	if c.LeaseID == first.LeaseID {
		t.Fatal("served an expired credential")
	}
	if i, r, _ := f.counts(); i != 2 || r != 0 {
		t.Fatalf("issue %d renew %d: an expired lease is not renewed", i, r)
	}
	// The expired lease is not revoked at SHUTDOWN.
	if err := a.RevokeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, rv := f.counts(); rv != 1 {
		t.Errorf("%d revocations, want 1", rv)
	}
}

func TestRenewalRefusedIssuesNew(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	f.at(13 * time.Minute)
	f.b.FailNext(1, 409, "lease_revoked")
	c := mustGet(t, a.Get, "orders", false)
	if c.LeaseID == first.LeaseID {
		t.Fatal("kept a refused lease")
	}
	if i, r, _ := f.counts(); i != 2 || r != 1 {
		t.Fatalf("issue %d renew %d", i, r)
	}
}

func TestBrokerDownServesCachedUntilExpiry(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	f.b.SetDown(true)
	f.at(13 * time.Minute)
	if c := mustGet(t, a.Get, "orders", false); c.LeaseID != first.LeaseID {
		t.Fatalf("got %v", c)
	}
	f.at(15*time.Minute + time.Second)
	_, err := a.Get(context.Background(), "orders", false)
	if !errors.Is(err, agent.ErrUnavailable) || api.CodeOf(err) != "database_unavailable" {
		t.Fatalf("after expiry: %v", err)
	}
	// A forced refresh fails rather than serve the old credential.
	f.at(time.Minute)
	if _, err := a.Get(context.Background(), "orders", true); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("forced: %v", err)
	}
	f.b.SetDown(false)
	if c := mustGet(t, a.Get, "orders", true); c.LeaseID == first.LeaseID {
		t.Fatal("forced refresh kept the lease")
	}
}

func TestBrokerRefusalIsNotUnavailable(t *testing.T) {
	f := newFixture(t)
	a := f.agent(t, agent.Options{})
	f.b.FailNext(1, 403, "access_denied")
	err := a.Start(context.Background())
	if errors.Is(err, agent.ErrUnavailable) || api.CodeOf(err) != "access_denied" {
		t.Fatalf("Start: %v", err)
	}
	// Fail mode: the read is held until its context ends, then names the refusal.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = a.Get(ctx, "orders", false)
	if !errors.Is(err, agent.ErrNotReady) || api.CodeOf(err) != "access_denied" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get: %v", err)
	}
}

func TestForcedRefresh(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	c := mustGet(t, a.Get, "orders", true)
	if c.LeaseID == first.LeaseID || c.Username == first.Username {
		t.Fatal("refresh=true kept the credential")
	}
	if i, r, _ := f.counts(); i != 2 || r != 0 {
		t.Fatalf("issue %d renew %d", i, r)
	}
	if again := mustGet(t, a.Get, "orders", false); again.LeaseID != c.LeaseID {
		t.Fatal("the forced credential is not cached")
	}
}

func TestOnInvokeRefreshesBeforeDeadline(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	ctx := context.Background()

	// 10m left, well over the margin; an invocation of 1 minute needs nothing.
	f.at(5 * time.Minute)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, r, _ := f.counts(); r != 0 {
		t.Fatalf("%d renewals for a short invocation", r)
	}
	// An invocation of 14 minutes would outlive the lease: renew on INVOKE.
	if err := a.OnInvoke(ctx, f.clock.Now().Add(14*time.Minute)); err != nil {
		t.Fatal(err)
	}
	c := mustGet(t, a.Get, "orders", false)
	if _, r, _ := f.counts(); r != 1 || c.LeaseID != first.LeaseID || !c.ExpiresAt.Equal(f.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("renewals %d, credential %v", r, c)
	}
	// The next long invocation right after does not renew again (it would gain nothing).
	f.at(5*time.Minute + 10*time.Second)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(15*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, r, _ := f.counts(); r != 1 {
		t.Fatalf("%d renewals: INVOKE refreshes thrash", r)
	}
	// Within the margin, any INVOKE refreshes.
	f.at(5*time.Minute + 13*time.Minute)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, r, _ := f.counts(); r != 2 {
		t.Fatalf("%d renewals, want 2", r)
	}
}

func TestOnInvokeIssuesWhenMaxIsBeforeDeadline(t *testing.T) {
	f := newFixture(t)
	f.b.SetTTLs(15*time.Minute, 20*time.Minute)
	a, first := f.started(t)
	f.at(10 * time.Minute) // max_expires_at is 10m away, the invocation needs 14m
	if err := a.OnInvoke(context.Background(), f.clock.Now().Add(14*time.Minute)); err != nil {
		t.Fatal(err)
	}
	c := mustGet(t, a.Get, "orders", false)
	if c.LeaseID == first.LeaseID || !c.ExpiresAt.Equal(f.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("credential %v", c)
	}
	if i, r, _ := f.counts(); i != 2 || r != 0 {
		t.Fatalf("issue %d renew %d: a renewal could not reach the deadline", i, r)
	}
}

// readTogether starts n reads while the broker double holds its answers, waits
// until one broker call (what) is in flight, lets it answer, and returns every
// read's result and error.
func readTogether[T any](t *testing.T, f *fixture, n int, what string, read func() (T, error)) ([]T, []error) {
	t.Helper()
	release := f.b.Hold()
	var wg sync.WaitGroup
	results := make([]T, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = read() })
	}
	eventually(t, what, func() bool { return f.b.InFlight() == 1 })
	time.Sleep(50 * time.Millisecond) // let the other reads join the one in flight
	release()
	wg.Wait()
	return results, errs
}

func TestConcurrentReadsCollapse(t *testing.T) {
	f := newFixture(t)
	a, first := f.started(t)
	f.at(13 * time.Minute)
	const readers = 50
	results, errs := readTogether(t, f, readers, "the renewal in flight", func() (agent.Credential, error) { return a.Get(context.Background(), "orders", false) })
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		if results[i].LeaseID != first.LeaseID || !results[i].ExpiresAt.Equal(f.t0.Add(28*time.Minute)) {
			t.Fatalf("reader %d got %v", i, results[i])
		}
	}
	if i, r, _ := f.counts(); i != 1 || r != 1 {
		t.Fatalf("issue %d renew %d: 50 reads must make one broker call", i, r)
	}
}

func TestLazyModeRecovers(t *testing.T) {
	f := newFixture(t)
	f.b.SetDown(true)
	a := f.agent(t, agent.Options{Lazy: true, InitTimeout: time.Second, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	if a.Ready() {
		t.Fatal("ready without credentials")
	}
	if _, err := a.Get(context.Background(), "orders", false); !errors.Is(err, agent.ErrNotReady) {
		t.Fatalf("Get while down: %v", err)
	}
	before := f.b.Count("issue")
	eventually(t, "background retries", func() bool { return f.b.Count("issue") > before })
	f.b.SetDown(false)
	eventually(t, "readiness", a.Ready)
	if c := mustGet(t, a.Get, "orders", false); c.Username == "" {
		t.Fatal("empty credential")
	}
	// Retries stop once ready.
	n := f.b.Count("issue")
	time.Sleep(200 * time.Millisecond)
	if m := f.b.Count("issue"); m != n {
		t.Fatalf("issues went on after recovery: %d -> %d", n, m)
	}
}

func TestFailModeDoesNotRetry(t *testing.T) {
	f := newFixture(t)
	f.b.SetDown(true)
	a := f.agent(t, agent.Options{InitTimeout: time.Second, RetryBase: 10 * time.Millisecond})
	if err := a.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded")
	}
	n := f.b.Count("issue")
	f.b.SetDown(false)
	time.Sleep(100 * time.Millisecond)
	// Neither a read (held until its context ends) nor an INVOKE fetches anything.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := a.Get(ctx, "orders", false); !errors.Is(err, agent.ErrNotReady) {
		t.Fatalf("Get: %v", err)
	}
	_ = a.OnInvoke(context.Background(), f.clock.Now().Add(time.Minute))
	if m := f.b.Count("issue"); m != n {
		t.Fatalf("fail mode retried: %d -> %d", n, m)
	}
}

// In fail mode a failed INIT holds the reads waiting for it, and later ones, until their
// own context ends: an answer would let the function exit (Runtime.ExitError) before the
// extension has reported init/error.
func TestFailModeHoldsReads(t *testing.T) {
	f := newFixture(t)
	f.b.SetDown(true)
	a := f.agent(t, agent.Options{InitTimeout: 5 * time.Second})
	release := f.b.Hold()
	started := make(chan error, 1)
	go func() { started <- a.Start(context.Background()) }()
	eventually(t, "INIT in flight", func() bool { return f.b.InFlight() == 1 })

	type result struct {
		err error
		at  time.Time
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiting := make(chan result, 1)
	go func() {
		_, err := a.Get(ctx, "orders", false)
		waiting <- result{err, time.Now()}
	}()
	time.Sleep(20 * time.Millisecond)
	release() // the broker answers 503: INIT fails
	if err := <-started; !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	failedAt := time.Now()
	select {
	case r := <-waiting:
		t.Fatalf("a read waiting for INIT was answered when INIT failed: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	// A read arriving now is held as well, also after RevokeAll (main gives back what
	// was issued before it reports).
	if err := a.RevokeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := a.Get(short, "orders", false); !errors.Is(err, agent.ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read after the failed INIT: %v, want ErrNotReady when its context ends", err)
	}
	cancel()
	r := <-waiting
	if !errors.Is(r.err, agent.ErrNotReady) || !errors.Is(r.err, context.Canceled) || api.CodeOf(r.err) != "database_unavailable" {
		t.Fatalf("the held read: %v", r.err)
	}
	if r.at.Before(failedAt) {
		t.Fatal("the held read returned before its context ended")
	}
}

// A read that began before INIT started is not answered when its InitTimeout wait ends
// while INIT is still fetching: INIT's own bound decides.
func TestGetWaitsForInitThatStartedLate(t *testing.T) {
	f := newFixture(t)
	f.b.Hang()
	a := f.agent(t, agent.Options{InitTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := a.Get(ctx, "orders", false)
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // the read waits, INIT has not begun
	if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	// The read outlived its own InitTimeout wait (INIT was fetching), saw INIT fail, and
	// is held (fail mode) until its context ends.
	if err := <-got; !errors.Is(err, agent.ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "INIT failed") {
		t.Fatalf("Get: %v", err)
	}
}

// lazyDown returns a lazy-mode agent whose INIT failed because the broker was down, and
// whose background retry never runs on its own.
func (f *fixture) lazyDown(t *testing.T, opts agent.Options) *agent.Agent {
	t.Helper()
	f.b.SetDown(true)
	opts.Lazy, opts.RetryBase, opts.RetryMax = true, time.Hour, time.Hour
	if opts.InitTimeout == 0 {
		opts.InitTimeout = time.Second
	}
	a := f.agent(t, opts)
	if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	return a
}

// In lazy mode a read of a missing credential fetches it (one flight for concurrent
// reads) instead of answering 503 at once and waiting for the background retry.
func TestLazyReadFetchesMissingCredential(t *testing.T) {
	f := newFixture(t)
	a := f.lazyDown(t, agent.Options{})
	before := f.b.Count("issue")
	// Still down: a bounded attempt, then ErrNotReady naming the broker's error.
	_, err := a.Get(context.Background(), "orders", false)
	if !errors.Is(err, agent.ErrNotReady) || api.CodeOf(err) != "database_unavailable" {
		t.Fatalf("Get while down: %v", err)
	}
	if f.b.Count("issue") == before {
		t.Fatal("the read did not try the broker")
	}

	f.b.SetDown(false)
	n := f.b.Count("issue")
	const readers = 20
	results, errs := readTogether(t, f, readers, "the issue in flight", func() (agent.Credential, error) { return a.Get(context.Background(), "orders", false) })
	for i := range readers {
		if errs[i] != nil || results[i].Username == "" || results[i].LeaseID != results[0].LeaseID {
			t.Fatalf("reader %d: %v %v", i, results[i], errs[i])
		}
	}
	if m := f.b.Count("issue"); m != n+1 {
		t.Fatalf("%d issues for %d concurrent reads, want 1", m-n, readers)
	}
	if !a.Ready() {
		t.Fatal("not ready after the read fetched the credential")
	}
}

// lazyHanging returns a lazy agent that started while the broker was down; the
// broker is then up but hangs every call until the test ends.
func (f *fixture) lazyHanging(t *testing.T, opts agent.Options) *agent.Agent {
	t.Helper()
	a := f.lazyDown(t, opts)
	f.b.SetDown(false)
	f.b.Hang()
	t.Cleanup(f.b.Unhang)
	return a
}

// The read's wait for a missing credential is bounded by FetchWait.
func TestLazyReadWaitIsBounded(t *testing.T) {
	f := newFixture(t)
	a := f.lazyHanging(t, agent.Options{FetchWait: 100 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		_, err := a.Get(context.Background(), "orders", false)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrNotReady) || !errors.Is(err, agent.ErrUnavailable) {
			t.Fatalf("Get against a hanging broker: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read of a missing credential did not give up")
	}
}

// In lazy mode an INVOKE fetches a missing credential before it returns, within the
// invocation's deadline (by the agent's clock), less 100 ms.
func TestLazyInvokeFetchesMissingCredential(t *testing.T) {
	f := newFixture(t)
	a := f.lazyDown(t, agent.Options{})
	f.b.SetDown(false)
	n := f.b.Count("issue")

	// Less than 100 ms left on the agent's clock: no time to fetch.
	if err := a.OnInvoke(context.Background(), f.clock.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if m := f.b.Count("issue"); m != n || a.Ready() {
		t.Fatalf("%d issues with 50 ms left; ready %v", m-n, a.Ready())
	}

	if err := a.OnInvoke(context.Background(), f.clock.Now().Add(3*time.Second)); err != nil {
		t.Fatalf("OnInvoke: %v", err)
	}
	if !a.Ready() {
		t.Fatal("INVOKE returned without the missing credential")
	}
	if m := f.b.Count("issue"); m != n+1 {
		t.Fatalf("%d issues, want 1", m-n)
	}
	// The function's read right after gets it from memory.
	if c := mustGet(t, a.Get, "orders", false); c.Username == "" {
		t.Fatal("empty credential")
	}
	if m := f.b.Count("issue"); m != n+1 {
		t.Fatalf("the read issued again: %d issues", m-n)
	}
}

// The fetch on INVOKE gives up in time against a broker that hangs, and reports it.
func TestLazyInvokeFetchIsBounded(t *testing.T) {
	f := newFixture(t)
	a := f.lazyHanging(t, agent.Options{InitTimeout: 200 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- a.OnInvoke(context.Background(), f.clock.Now().Add(time.Hour)) }()
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrUnavailable) {
			t.Fatalf("OnInvoke against a hanging broker: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnInvoke did not give up within InitTimeout")
	}
}

func TestStartBoundedByInitTimeout(t *testing.T) {
	f := newFixture(t)
	f.b.Hang()
	a := f.agent(t, agent.Options{InitTimeout: 200 * time.Millisecond})
	start := time.Now()
	if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Start took %v with a 200ms init timeout", d)
	}
}

// startedAB returns a started agent with two credentials, a and b.
func (f *fixture) startedAB(t *testing.T) *agent.Agent {
	t.Helper()
	a := f.agent(t, agent.Options{},
		config.Credential{Name: "a", Database: "orders", Role: "readonly"},
		config.Credential{Name: "b", Database: "orders", Role: "writer"})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRevokeAll(t *testing.T) {
	f := newFixture(t)
	a := f.startedAB(t)
	if err := a.RevokeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, l := range f.b.Leases() {
		if !l.Revoked {
			t.Errorf("lease %s not revoked", l.ID)
		}
	}
	if a.Ready() {
		t.Error("ready after shutdown")
	}
	if _, err := a.Get(context.Background(), "a", false); !errors.Is(err, agent.ErrClosed) {
		t.Errorf("Get after shutdown: %v", err)
	}
}

func TestRevokeAllWithinDeadlineWhenBrokerHangs(t *testing.T) {
	f := newFixture(t)
	a := f.startedAB(t)
	f.b.Hang()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := a.RevokeAll(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("RevokeAll took %v with a 300ms deadline", d)
	}
	if err == nil {
		t.Fatal("RevokeAll reported success against a hanging broker")
	}
	eventually(t, "both revocations sent concurrently", func() bool { return f.b.Count("revoke") == 2 })
}

func TestNewRejects(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	if _, err := agent.New(c, nil, agent.Options{}); err == nil {
		t.Error("no credentials accepted")
	}
	dup := config.Credential{Name: "a", Database: "d", Role: "r"}
	if _, err := agent.New(c, []config.Credential{dup, dup}, agent.Options{}); err == nil {
		t.Error("duplicate names accepted")
	}
}

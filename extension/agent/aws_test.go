package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

var reports = config.AWSProfile{Name: "reports", Profile: "reports-read", TTL: 15 * time.Minute}

// awsAgent returns an agent for the AWS profiles (reports when none) and no
// database credential.
func (f *fixture) awsAgent(t *testing.T, opts agent.Options, profiles ...config.AWSProfile) *agent.Agent {
	t.Helper()
	if len(profiles) == 0 {
		profiles = []config.AWSProfile{reports}
	}
	opts.AWSProfiles = profiles
	return f.newAgent(t, opts, nil)
}

// startedAWS returns an agent with default options, started, and the first read of
// the reports AWS session.
func (f *fixture) startedAWS(t *testing.T) (*agent.Agent, agent.AWSCredential) {
	t.Helper()
	a := start(t, f.awsAgent(t, agent.Options{}))
	return a, mustGet(t, a.GetAWS, "reports", false)
}

// Database credentials and AWS sessions are fetched together at INIT, each in its own
// broker call.
func TestAWSStartWithCredentials(t *testing.T) {
	f := newFixture(t)
	opts := agent.Options{AWSProfiles: []config.AWSProfile{reports, {Name: "billing", Profile: "billing-read"}}}
	a := f.agent(t, opts)
	f.startHeld(t, a, 3)
	if got := strings.Join(a.AWSNames(), ","); got != "reports,billing" {
		t.Errorf("AWSNames = %q", got)
	}
	if got := strings.Join(a.Names(), ","); got != "orders" {
		t.Errorf("Names = %q", got)
	}
	sessions := f.b.AWSSessions()
	if len(sessions) != 2 || f.b.Count("assume") != 2 || f.b.Count("issue") != 1 {
		t.Fatalf("%d sessions, %d assumes, %d issues", len(sessions), f.b.Count("assume"), f.b.Count("issue"))
	}
	byProfile := map[string]brokertest.AWSSession{}
	for _, s := range sessions {
		byProfile[s.Profile] = s
	}
	c := mustGet(t, a.GetAWS, "reports", false)
	s := byProfile["reports-read"]
	if c.Name != "reports" || c.AccessKeyID != s.AccessKeyID || c.SecretAccessKey != s.SecretAccessKey ||
		c.SessionToken != s.SessionToken || !c.Expiration.Equal(f.t0.Add(15*time.Minute)) || c.LeaseID != s.LeaseID {
		t.Fatalf("got %v, broker handed out %+v", c, s)
	}
	if c := mustGet(t, a.GetAWS, "billing", false); c.AccessKeyID != byProfile["billing-read"].AccessKeyID ||
		!c.Expiration.Equal(f.t0.Add(brokertest.AWSDefaultTTL)) {
		t.Fatalf("billing: %v", c)
	}
	for _, call := range f.b.Calls() {
		if call.Op == "assume" && call.Profile == "reports-read" && call.TTLSeconds != 900 {
			t.Errorf("reports asked for %ds", call.TTLSeconds)
		}
		if call.Op == "assume" && call.Profile == "billing-read" && call.TTLSeconds != 0 {
			t.Errorf("billing asked for %ds instead of the default", call.TTLSeconds)
		}
	}
	// The names do not mix.
	if _, err := a.GetAWS(context.Background(), "orders", false); !errors.Is(err, agent.ErrUnknown) {
		t.Errorf("GetAWS(orders): %v", err)
	}
	if _, err := a.Get(context.Background(), "reports", false); !errors.Is(err, agent.ErrUnknown) {
		t.Errorf("Get(reports): %v", err)
	}
}

// The refresh rule: a new session (never a renewal) once less than max(5m, margin) is
// left, by the wall clock at the time of the read.
func TestAWSRefreshRule(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ttl     time.Duration // profile TTL; 0 = the broker's default (15m)
		fixed   time.Duration // EPHEMERA_REFRESH_MARGIN
		quiet   time.Duration // no refresh yet at this age
		refresh time.Duration // refresh at this age
	}{
		{"15m: the SDKs' 5m window", 15 * time.Minute, 0, 9*time.Minute + 59*time.Second, 10*time.Minute + time.Second},
		{"broker default 15m", 0, 0, 9*time.Minute + 59*time.Second, 10*time.Minute + time.Second},
		{"1h: 20% clamped to 5m", time.Hour, 0, 54*time.Minute + 59*time.Second, 55*time.Minute + time.Second},
		{"fixed margin 10m", time.Hour, 10 * time.Minute, 49*time.Minute + 59*time.Second, 50*time.Minute + time.Second},
		{"fixed margin 1m is raised to 5m", 30 * time.Minute, time.Minute, 24*time.Minute + 59*time.Second, 25*time.Minute + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			a := f.awsAgent(t, agent.Options{RefreshMargin: tc.fixed},
				config.AWSProfile{Name: "reports", Profile: "reports-read", TTL: tc.ttl})
			if err := a.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			first := mustGet(t, a.GetAWS, "reports", false)
			f.at(tc.quiet)
			if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID != first.AccessKeyID {
				t.Fatalf("replaced too early: %v", c)
			}
			if n := f.b.Count("assume"); n != 1 {
				t.Fatalf("%d assumes before the margin", n)
			}
			f.at(tc.refresh)
			c := mustGet(t, a.GetAWS, "reports", false)
			if n := f.b.Count("assume"); n != 2 {
				t.Fatalf("%d assumes, want 2", n)
			}
			if c.AccessKeyID == first.AccessKeyID || c.SessionToken == first.SessionToken || !c.Expiration.After(first.Expiration) {
				t.Fatalf("not a new session: %v after %v", c, first)
			}
			if left := c.Expiration.Sub(f.clock.Now()); left < config.SDKExpiryWindow {
				t.Fatalf("a fresh session with only %v left", left)
			}
			if n := f.b.Count("renew"); n != 0 {
				t.Fatalf("%d renewals of an STS session", n)
			}
			// The new session is served from the cache until its own margin.
			if again := mustGet(t, a.GetAWS, "reports", false); again.AccessKeyID != c.AccessKeyID {
				t.Fatalf("replaced again at once: %v", again)
			}
		})
	}
}

func TestAWSForcedRefresh(t *testing.T) {
	f := newFixture(t)
	a, first := f.startedAWS(t)
	second := mustGet(t, a.GetAWS, "reports", true)
	if second.AccessKeyID == first.AccessKeyID {
		t.Fatal("a forced refresh kept the session")
	}
	if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID != second.AccessKeyID {
		t.Fatalf("the forced session was not cached: %v", c)
	}
	if n := f.b.Count("assume"); n != 2 {
		t.Fatalf("%d assumes", n)
	}
}

func TestAWSOnInvoke(t *testing.T) {
	f := newFixture(t)
	a, first := f.startedAWS(t)
	ctx := context.Background()

	// 11m left, short invocation: nothing to do.
	f.at(4 * time.Minute)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	// It would expire before a 15m deadline, but a new session would not last more than
	// the margin longer (4m+15m < 15m+5m): keep it.
	if err := a.OnInvoke(ctx, f.clock.Now().Add(15*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := f.b.Count("assume"); n != 1 {
		t.Fatalf("%d assumes", n)
	}
	// 9m left and a 12m deadline: replaced at INVOKE, before the function runs.
	f.at(6 * time.Minute)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(12*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := f.b.Count("assume"); n != 2 {
		t.Fatalf("%d assumes after an INVOKE with a deadline past the expiration", n)
	}
	second := mustGet(t, a.GetAWS, "reports", false)
	if second.AccessKeyID == first.AccessKeyID || !second.Expiration.Equal(f.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("got %v", second)
	}
	// Frozen past the margin: the next INVOKE replaces it even for a short invocation.
	f.at(6*time.Minute + 11*time.Minute)
	if err := a.OnInvoke(ctx, f.clock.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID == second.AccessKeyID || f.b.Count("assume") != 3 {
		t.Fatalf("got %v after %d assumes", c, f.b.Count("assume"))
	}
}

func TestAWSBrokerDownServesCachedUntilExpiration(t *testing.T) {
	f := newFixture(t)
	a, first := f.startedAWS(t)
	f.b.SetDown(true)
	f.at(12 * time.Minute)
	if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID != first.AccessKeyID {
		t.Fatalf("got %v", c)
	}
	f.at(15*time.Minute + time.Second)
	if _, err := a.GetAWS(context.Background(), "reports", false); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("after expiration: %v", err)
	}
	if _, err := a.GetAWS(context.Background(), "reports", true); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("forced: %v", err)
	}
	f.b.SetDown(false)
	if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID == first.AccessKeyID {
		t.Fatal("expired session served")
	}
}

func TestAWSRefusal(t *testing.T) {
	f := newFixture(t)
	a := f.awsAgent(t, agent.Options{})
	f.b.FailNext(1, 403, "access_denied")
	err := a.Start(context.Background())
	if errors.Is(err, agent.ErrUnavailable) || api.CodeOf(err) != "access_denied" || !strings.Contains(err.Error(), `"reports"`) {
		t.Fatalf("Start: %v", err)
	}
	// Fail mode: the read is held until its context ends, then names the refusal.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := a.GetAWS(ctx, "reports", false); !errors.Is(err, agent.ErrNotReady) || api.CodeOf(err) != "access_denied" ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetAWS: %v", err)
	}
}

func TestAWSConcurrentReadsCollapse(t *testing.T) {
	f := newFixture(t)
	a, first := f.startedAWS(t)
	f.at(11 * time.Minute)
	const readers = 50
	results, errs := readTogether(t, f, readers, "the assume in flight", func() (agent.AWSCredential, error) { return a.GetAWS(context.Background(), "reports", false) })
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d: %v", i, errs[i])
		}
		if results[i].AccessKeyID == first.AccessKeyID || results[i].AccessKeyID != results[0].AccessKeyID {
			t.Fatalf("reader %d got %v", i, results[i])
		}
	}
	if n := f.b.Count("assume"); n != 2 {
		t.Fatalf("%d assumes: 50 reads must make one broker call", n)
	}
}

func TestAWSLazyModeRecovers(t *testing.T) {
	f := newFixture(t)
	f.b.SetDown(true)
	a := f.awsAgent(t, agent.Options{Lazy: true, InitTimeout: time.Second, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
		t.Fatalf("Start: %v", err)
	}
	if _, err := a.GetAWS(context.Background(), "reports", false); !errors.Is(err, agent.ErrNotReady) {
		t.Fatalf("GetAWS while down: %v", err)
	}
	before := f.b.Count("assume")
	eventually(t, "background retries", func() bool { return f.b.Count("assume") > before })
	f.b.SetDown(false)
	eventually(t, "readiness", a.Ready)
	if c := mustGet(t, a.GetAWS, "reports", false); c.AccessKeyID == "" {
		t.Fatal("empty session")
	}
}

// SHUTDOWN revokes the database leases; STS sessions cannot be revoked, so they are only
// forgotten.
func TestAWSRevokeAllForgets(t *testing.T) {
	f := newFixture(t)
	var logs observe.Buffer
	a := f.agent(t, agent.Options{AWSProfiles: []config.AWSProfile{reports},
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, a.GetAWS, "reports", true)
	if err := a.RevokeAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.b.Count("revoke"); n != 1 {
		t.Fatalf("%d revocations, want 1 (the database lease only)", n)
	}
	if a.Ready() {
		t.Error("ready after shutdown")
	}
	if _, err := a.GetAWS(context.Background(), "reports", false); !errors.Is(err, agent.ErrClosed) {
		t.Errorf("GetAWS after shutdown: %v", err)
	}
	if !strings.Contains(logs.String(), "STS cannot revoke them") {
		t.Errorf("shutdown does not say why the sessions are not revoked:\n%s", logs.String())
	}
	// Never a secret access key or session token in the logs.
	if !strings.Contains(logs.String(), "AWS session issued") {
		t.Fatalf("no issue logged:\n%s", logs.String())
	}
	for _, s := range f.b.AWSSessions() {
		if strings.Contains(logs.String(), s.SecretAccessKey) || strings.Contains(logs.String(), s.SessionToken) {
			t.Fatalf("a session secret was logged:\n%s", logs.String())
		}
	}
}

func TestNewRejectsAWS(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	if _, err := agent.New(c, nil, agent.Options{}); err == nil {
		t.Error("nothing configured accepted")
	}
	orders := config.Credential{Name: "reports", Database: "orders", Role: "readonly"}
	if _, err := agent.New(c, []config.Credential{orders}, agent.Options{AWSProfiles: []config.AWSProfile{reports}}); err == nil {
		t.Error("a name used twice across the lists accepted")
	}
	if _, err := agent.New(c, nil, agent.Options{AWSProfiles: []config.AWSProfile{reports, reports}}); err == nil {
		t.Error("a duplicate AWS profile accepted")
	}
	if _, err := agent.New(dbOnly{}, nil, agent.Options{AWSProfiles: []config.AWSProfile{reports}}); err == nil {
		t.Error("a broker that cannot assume accepted")
	}
	if _, err := agent.New(dbOnly{}, []config.Credential{orders}, agent.Options{}); err != nil {
		t.Errorf("a database-only broker without AWS profiles: %v", err)
	}
}

// dbOnly is a Broker without AssumeAWS.
type dbOnly struct{}

func (dbOnly) Issue(context.Context, string, string, time.Duration) (*api.Credential, error) {
	return nil, errors.New("no")
}

func (dbOnly) Renew(context.Context, string, time.Duration) (*api.Renewal, error) {
	return nil, errors.New("no")
}
func (dbOnly) Revoke(context.Context, string) error { return errors.New("no") }

// In lazy mode a read of a missing AWS session fetches it, and so does an INVOKE.
func TestAWSLazyFetchesMissingSession(t *testing.T) {
	f := newFixture(t)
	f.b.SetDown(true)
	opts := agent.Options{Lazy: true, InitTimeout: time.Second, RetryBase: time.Hour, RetryMax: time.Hour}
	read := f.awsAgent(t, opts)
	invoke := f.awsAgent(t, opts)
	for _, a := range []*agent.Agent{read, invoke} {
		if err := a.Start(context.Background()); !errors.Is(err, agent.ErrUnavailable) {
			t.Fatalf("Start: %v", err)
		}
	}
	f.b.SetDown(false)
	if c := mustGet(t, read.GetAWS, "reports", false); c.AccessKeyID == "" {
		t.Fatal("empty session")
	}
	if err := invoke.OnInvoke(context.Background(), f.clock.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if !invoke.Ready() {
		t.Fatal("INVOKE returned without the missing session")
	}
}

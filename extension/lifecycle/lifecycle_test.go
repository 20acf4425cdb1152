package lifecycle_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/extapi"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/extension/internal/extapitest"
	"github.com/ephemera-sh/ephemera/extension/internal/localapitest"
	"github.com/ephemera-sh/ephemera/extension/lifecycle"
	"github.com/ephemera-sh/ephemera/extension/localapi"
	"github.com/ephemera-sh/ephemera/extension/localserver"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

// clock is a settable wall clock shared by the agent and the broker double.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// harness runs lifecycle.Run against the scripted Extensions API, with a real broker
// client, agent and local server talking to the broker double.
type harness struct {
	api    *extapitest.Server
	broker *brokertest.Broker
	clock  *clock
	token  string
	port   int
	logs   *observe.Buffer
	exit   chan error

	creds    []config.Credential
	profiles []config.AWSProfile
	opts     agent.Options
	lazy     bool
	setup    func(context.Context) (lifecycle.Parts, error) // overrides the default
}

func newHarness(t *testing.T) *harness {
	h := &harness{api: extapitest.Start(t), broker: brokertest.Start(t), logs: &observe.Buffer{}, exit: make(chan error, 1),
		clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	h.token = h.broker.Credentials().SessionToken
	h.creds = []config.Credential{{Name: "orders", Database: "orders", Role: "readonly", TTL: 15 * time.Minute}}
	h.opts = agent.Options{InitTimeout: 5 * time.Second}
	return h
}

func (h *harness) defaultSetup(t *testing.T) func(context.Context) (lifecycle.Parts, error) {
	return func(context.Context) (lifecycle.Parts, error) {
		bc, err := brokerclient.New(brokerclient.Config{BaseURL: h.broker.URL(), Audience: brokertest.Audience,
			Region: brokertest.Region, Credentials: h.broker.CredentialsProvider(), BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond})
		if err != nil {
			return lifecycle.Parts{}, err
		}
		opts := h.opts
		opts.Lazy, opts.AWSProfiles = h.lazy, h.profiles
		if opts.Clock == nil {
			opts.Clock = time.Now
		}
		a, err := agent.New(bc, h.creds, opts)
		if err != nil {
			return lifecycle.Parts{}, err
		}
		srv, err := localserver.Start(localserver.Config{Port: 0, Token: h.token, Source: a})
		if err != nil {
			return lifecycle.Parts{}, lifecycle.Fail(lifecycle.ErrorListenFailed, err)
		}
		_, p, _ := net.SplitHostPort(srv.Addr())
		h.port, _ = strconv.Atoi(p)
		return lifecycle.Parts{Agent: a, Server: srv}, nil
	}
}

func (h *harness) start(t *testing.T, ctx context.Context) {
	t.Helper()
	ext, err := extapi.New(h.api.Addr())
	if err != nil {
		t.Fatal(err)
	}
	setup := h.setup
	if setup == nil {
		setup = h.defaultSetup(t)
	}
	go func() {
		h.exit <- lifecycle.Run(ctx, lifecycle.Config{Name: "ephemera", Extensions: ext, Setup: setup, Lazy: h.lazy,
			Logger: slogJSON(h.logs)})
	}()
}

func (h *harness) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.exit:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return; logs:\n%s", h.logs)
		return nil
	}
}

// next waits until the extension asks for the next event (again).
func (h *harness) next(t *testing.T) {
	t.Helper()
	if !h.api.WaitNext(15 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
}

func (h *harness) read(t *testing.T, name string) (int, map[string]any) {
	t.Helper()
	return localapitest.Get(t, h.port, localapi.PathCredentials+name, localapi.HeaderToken, h.token)
}

func (h *harness) checkLogs(t *testing.T) {
	t.Helper()
	h.broker.CheckLogs(t, h.logs.String())
}

func reportType(err error) string {
	var le *lifecycle.Error
	if errors.As(err, &le) {
		return le.Type
	}
	return "(not a lifecycle error)"
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	h.start(t, context.Background())
	h.next(t)
	if name, events, _ := h.api.Registration(); name != "ephemera" || strings.Join(events, ",") != "INVOKE,SHUTDOWN" {
		t.Fatalf("registered %q for %v", name, events)
	}
	status, body := h.read(t, "orders")
	if status != 200 || body["username"] == "" || !strings.Contains(body["dsn"].(string), "user='") {
		t.Fatalf("read: %d %v", status, body)
	}
	h.api.Invoke("req-1", time.Now().Add(3*time.Second))
	h.next(t)
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if err := h.wait(t); err != nil {
		t.Fatalf("Run: %v; logs:\n%s", err, h.logs)
	}
	for _, l := range h.broker.Leases() {
		if !l.Revoked {
			t.Errorf("lease %s not revoked at SHUTDOWN", l.ID)
		}
	}
	if n := h.broker.Count("issue"); n != 1 {
		t.Errorf("%d issues", n)
	}
	if reps := h.api.Reports(); len(reps) != 0 {
		t.Errorf("error reports %+v", reps)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(h.port), 200*time.Millisecond); err == nil {
		t.Error("the local server still listens after SHUTDOWN")
	}
	h.checkLogs(t)
}

func TestBrokerUnavailableFailsInit(t *testing.T) {
	h := newHarness(t)
	h.opts.InitTimeout = time.Second
	h.broker.SetDown(true)
	h.start(t, context.Background())
	if err := h.wait(t); reportType(err) != lifecycle.ErrorBrokerUnavailable {
		t.Fatalf("Run: %v", err)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].ErrorType != "Extension.BrokerUnavailable" || !strings.Contains(reps[0].Message, `"orders"`) {
		t.Fatalf("reports %+v", reps)
	}
	h.checkLogs(t)
}

// In fail mode a read that waits for INIT is not answered when INIT fails: the extension
// reports init/error first, so that the function cannot exit on a 503 and fail INIT with
// Runtime.ExitError before the extension's report is in.
func TestFailModeReportsBeforeAnsweringReads(t *testing.T) {
	h := newHarness(t)
	h.opts.InitTimeout = time.Second
	h.broker.SetDown(true)
	release := h.broker.Hold()
	h.start(t, context.Background())
	for end := time.Now().Add(10 * time.Second); h.broker.InFlight() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("INIT never called the broker; logs:\n%s", h.logs)
		}
	}

	type outcome struct {
		status  int
		err     error
		reports int // error reports received when the read ended
	}
	done := make(chan outcome, 1)
	go func() {
		hc := &http.Client{Timeout: 15 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(h.port)+"/v1/credentials/orders", nil)
		req.Header.Set(localapi.HeaderToken, h.token)
		resp, err := hc.Do(req)
		o := outcome{err: err, reports: len(h.api.Reports())}
		if err == nil {
			o.status = resp.StatusCode
			resp.Body.Close()
		}
		done <- o
	}()
	time.Sleep(50 * time.Millisecond) // the read waits for INIT
	release()                         // the broker answers 503: INIT fails

	if err := h.wait(t); reportType(err) != lifecycle.ErrorBrokerUnavailable {
		t.Fatalf("Run: %v", err)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].Path != "/init/error" || reps[0].ErrorType != "Extension.BrokerUnavailable" {
		t.Fatalf("reports %+v", reps)
	}
	o := <-done
	if o.reports == 0 {
		t.Fatalf("the read ended (status %d, %v) before init/error was reported", o.status, o.err)
	}
	if o.status != 0 {
		t.Errorf("the read waiting for INIT was answered %d; it must stay held until the extension exits", o.status)
	}
	h.checkLogs(t)
}

func TestLazyInitServes503ThenRecovers(t *testing.T) {
	h := newHarness(t)
	h.opts.InitTimeout = time.Second
	h.lazy = true
	h.broker.SetDown(true)
	h.start(t, context.Background())
	h.next(t)
	if status, body := h.read(t, "orders"); status != 503 {
		t.Fatalf("read while down: %d %v", status, body)
	}
	h.broker.SetDown(false)
	h.api.Invoke("req-1", time.Now().Add(3*time.Second)) // an INVOKE kicks the retry
	var status int
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status, _ = h.read(t, "orders"); status == 200 {
			break
		}
	}
	if status != 200 {
		t.Fatalf("never recovered; logs:\n%s", h.logs)
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if err := h.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	h.checkLogs(t)
}

// In lazy mode the INVOKE itself fetches what INIT could not get, before the extension
// asks for the next event: the background retry is held off (RetryBase of an hour).
func TestLazyInvokeFetchesMissing(t *testing.T) {
	h := newHarness(t)
	h.opts.InitTimeout, h.opts.RetryBase, h.opts.RetryMax = time.Second, time.Hour, time.Hour
	h.lazy = true
	h.broker.SetDown(true)
	h.start(t, context.Background())
	h.next(t)
	h.broker.SetDown(false)
	before := h.broker.Count("issue")
	h.api.Invoke("req-1", time.Now().Add(5*time.Second))
	h.next(t)
	if n := h.broker.Count("issue"); n <= before {
		t.Fatalf("the INVOKE fetched nothing (%d issues before, %d after); logs:\n%s", before, n, h.logs)
	}
	if status, body := h.read(t, "orders"); status != 200 {
		t.Fatalf("read after the INVOKE: %d %v", status, body)
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if err := h.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Every INVOKE checks the wall clock: a credential with less than the refresh margin
// left, or that would expire before the invocation's deadline, is refreshed before the
// extension asks for the next event.
func TestInvokeRefreshes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		advance  time.Duration // after INIT, of a 60 s lease (margin 12 s)
		deadline time.Duration // of the INVOKE, from the advanced clock
		renewed  bool
	}{
		{"plenty left", 10 * time.Second, 3 * time.Second, false},
		{"within the margin", 50 * time.Second, 3 * time.Second, true},
		{"expires before the deadline", 30 * time.Second, 2 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.creds = []config.Credential{{Name: "orders", Database: "orders", Role: "readonly", TTL: time.Minute}}
			h.opts.Clock = h.clock.Now
			h.broker.SetClock(h.clock.Now)
			h.start(t, context.Background())
			h.next(t)
			h.clock.Advance(tc.advance)
			h.api.Invoke("req-1", h.clock.Now().Add(tc.deadline))
			h.next(t)
			if renewed := h.broker.Count("renew") > 0; renewed != tc.renewed {
				t.Fatalf("renewed %v, want %v; logs:\n%s", renewed, tc.renewed, h.logs)
			}
			h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
			if err := h.wait(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

func TestSignalStops(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	h.start(t, ctx)
	h.next(t)
	cancel()
	if err := h.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := h.broker.Count("revoke"); n != 1 {
		t.Fatalf("%d revocations", n)
	}
}

// SHUTDOWN against a broker that does not answer still ends: the revocation is tried and
// abandoned at the deadline (the lease then expires on its own).
func TestShutdownBoundedByDeadline(t *testing.T) {
	h := newHarness(t)
	h.start(t, context.Background())
	h.next(t)
	h.broker.Hang()
	h.api.Shutdown("spindown", time.Now().Add(500*time.Millisecond))
	if err := h.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The double records a hanging request when it ends, after the client gave up.
	for end := time.Now().Add(10 * time.Second); h.broker.Count("revoke") == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no revocation was tried; logs:\n%s", h.logs)
		}
	}
	if !strings.Contains(h.logs.String(), "some leases were not revoked") {
		t.Errorf("the abandoned revocation is not logged:\n%s", h.logs)
	}
}

// Both kinds together; a refused AWS profile fails INIT like a refused credential.
func TestAWSRefusedFailsInit(t *testing.T) {
	h := newHarness(t)
	h.profiles = []config.AWSProfile{{Name: "admin", Profile: "billing-admin"}}
	h.start(t, context.Background())
	if err := h.wait(t); reportType(err) != lifecycle.ErrorCredentialRefused {
		t.Fatalf("Run: %v", err)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].ErrorType != "Extension.CredentialRefused" || !strings.Contains(reps[0].Message, `"admin"`) {
		t.Fatalf("reports %+v", reps)
	}
	if n := h.broker.Count("revoke"); n != 1 {
		t.Fatalf("the database lease issued at INIT was not given back: %d revocations", n)
	}
	h.checkLogs(t)
}

// Setup's failure is reported on /init/error with the type Fail chose (ConfigInvalid
// by default), after registration.
func TestSetupFailureReported(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("config: EPHEMERA_AUDIENCE: required"), lifecycle.ErrorConfigInvalid},
		{lifecycle.Fail(lifecycle.ErrorListenFailed, errors.New("address already in use")), lifecycle.ErrorListenFailed},
	} {
		h := newHarness(t)
		h.setup = func(context.Context) (lifecycle.Parts, error) { return lifecycle.Parts{}, tc.err }
		h.start(t, context.Background())
		err := h.wait(t)
		if reportType(err) != tc.want {
			t.Fatalf("Run: %v, want type %s", err, tc.want)
		}
		reps := h.api.Reports()
		if len(reps) != 1 || reps[0].Path != "/init/error" || reps[0].ErrorType != tc.want || strings.Contains(reps[0].Message, "Extension.") {
			t.Fatalf("reports %+v", reps)
		}
		if _, _, n := h.api.Registration(); n != 1 {
			t.Fatal("the failure was not reported after registering")
		}
	}
}

// Package agent is the extension's credential cache: it fetches every configured
// credential from the broker at INIT, serves them from memory, keeps them fresh, and
// revokes them at SHUTDOWN.
//
// Lambda freezes the sandbox between invocations, so the agent trusts no timer to keep a
// credential fresh. Instead it compares the wall clock with the lease's expiry whenever
// it is asked ([Agent.Get]) and whenever an invocation starts ([Agent.OnInvoke]):
//
//   - with less than the refresh margin left, it renews the lease (same username, so open
//     connections stay valid), unless the lease's max_expires_at is less than twice the
//     margin away, or the lease already expired, or the broker refuses the renewal: then
//     it issues a new credential;
//   - on INVOKE it also refreshes a credential that would expire before the invocation's
//     deadline, when a refresh would extend it by more than the margin;
//   - concurrent refreshes of one credential collapse into one broker call.
//
// A read that finds the broker unreachable still gets the cached credential while that
// credential is valid. Leases replaced by a new credential are not revoked at once (open
// connections may still use them); [Agent.RevokeAll] revokes them with the current ones.
//
// # A failed INIT
//
// In lazy mode (Options.Lazy) the agent keeps fetching what INIT could not get, in the
// background and, so that the function recovers as soon as the broker does, also in the
// foreground: an INVOKE fetches a missing credential before it returns (within the
// invocation's deadline, at most InitTimeout), and a read of a missing credential starts
// (or joins) a fetch and waits for it, at most Options.FetchWait, before it answers
// [ErrNotReady].
//
// In fail mode (the default) a failed INIT is final: the extension reports it and the
// sandbox is torn down. Reads are then held — they wait until their own context ends
// rather than answer at once — so that the function cannot fail INIT first with an error
// of its own and hide the extension's report.
//
// # AWS sessions
//
// The agent also caches the AWS sessions of [Options.AWSProfiles] (EPHEMERA_AWS_PROFILES),
// read with [Agent.GetAWS], by the same rules with three differences:
//
//   - the refresh margin is [config.AWSMargin]: at least 5 minutes, because the AWS SDKs
//     treat container credentials with less than 5 minutes left as expired and would ask
//     again for every request;
//   - an STS session cannot be renewed: every refresh assumes the role anew, and the
//     replaced session stays valid until its own Expiration (callers may still hold it);
//   - an STS session cannot be revoked either (IAM can only deny every session of a role
//     issued before a given time), so [Agent.RevokeAll] just forgets the sessions; they
//     end at their Expiration, which is why their ttl should stay short.
//
// Both are one mechanism: a slot per configured name holds the value, and a kind says
// how a value of its type is obtained (renew or issue; assume), when it expires, what its
// margin is and which lease (if any) revokes it. Reading, the refresh rule, collapsing
// concurrent refreshes, lazy retries and shutdown exist once, for both.
//
// Typical use, as the extension's lifecycle wires it:
//
//	a, err := agent.New(brokerClient, cfg.Credentials, agent.Options{InitTimeout: cfg.InitTimeout})
//	err = a.Start(ctx)                    // INIT: fetch all, concurrently, within InitTimeout
//	cred, err := a.Get(ctx, "orders", false)
//	sess, err := a.GetAWS(ctx, "reports", false) // with Options.AWSProfiles
//	a.OnInvoke(ctx, event.Deadline)       // each INVOKE
//	a.RevokeAll(shutdownCtx)              // SHUTDOWN
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// Broker is what the agent needs from the broker; *brokerclient.Client implements it.
type Broker interface {
	Issue(ctx context.Context, database, role string, ttl time.Duration) (*api.Credential, error)
	Renew(ctx context.Context, leaseID string, ttl time.Duration) (*api.Renewal, error)
	Revoke(ctx context.Context, leaseID string) error
}

// AWSBroker is what the agent needs from the broker for AWS sessions;
// *brokerclient.Client implements it.
type AWSBroker interface {
	AssumeAWS(ctx context.Context, profile string, ttl time.Duration) (*api.AWSCredential, error)
}

var (
	_ Broker    = (*brokerclient.Client)(nil)
	_ AWSBroker = (*brokerclient.Client)(nil)
)

// Errors of Get. A broker's refusal is returned wrapped as is: classify it with
// errors.Is(err, api.ErrAccessDenied) or api.CodeOf(err).
var (
	// ErrUnknown: no credential of that name is configured.
	ErrUnknown = errors.New("agent: no such credential")
	// ErrNotReady: the credential has not been fetched yet (INIT failed or is still
	// running past the wait bound); in lazy mode the agent keeps trying.
	ErrNotReady = errors.New("agent: credential not ready")
	// ErrUnavailable: the broker could not be reached and no valid credential is cached.
	ErrUnavailable = errors.New("agent: broker unavailable")
	// ErrClosed: RevokeAll has run; the agent serves nothing more.
	ErrClosed = errors.New("agent: shut down")
)

// Defaults of Options.
const (
	DefaultRefreshTimeout = 10 * time.Second
	DefaultRetryBase      = time.Second
	DefaultRetryMax       = 30 * time.Second
	DefaultFetchWait      = 2 * time.Second
	// invokeSlack is kept free before an invocation's deadline by the fetch of a missing
	// credential on INVOKE.
	invokeSlack = 100 * time.Millisecond
)

// Options configure an Agent. The zero value is usable.
type Options struct {
	// InitTimeout bounds Start, and how long Get waits for INIT. Default config.DefaultInitTimeout.
	InitTimeout time.Duration
	// Lazy keeps retrying a failed INIT in the background (EPHEMERA_ON_INIT_FAILURE=lazy).
	Lazy bool
	// RefreshMargin is a fixed refresh margin; 0 derives it from each lease's TTL
	// (config.Margin).
	RefreshMargin time.Duration
	// RefreshTimeout bounds one refresh (including the broker client's retries).
	// Default DefaultRefreshTimeout.
	RefreshTimeout time.Duration
	// RetryBase and RetryMax shape the lazy-mode backoff. Defaults DefaultRetryBase and
	// DefaultRetryMax.
	RetryBase, RetryMax time.Duration
	// FetchWait bounds how long a read of a credential that is missing after a failed
	// INIT (lazy mode) waits for the fetch it starts or joins. Default DefaultFetchWait,
	// at most InitTimeout.
	FetchWait time.Duration
	// Clock is the wall clock expiries are compared with. Default time.Now.
	Clock func() time.Time
	// Logger receives refresh events, never a password, secret key or session token.
	// Default: discard.
	Logger *slog.Logger
	// AWSProfiles are the AWS sessions to cache besides the database credentials
	// (EPHEMERA_AWS_PROFILES). Their names must differ from the credentials' names, and
	// the broker must then implement [AWSBroker].
	AWSProfiles []config.AWSProfile
}

// Credential is a cached credential under its configured name. Printing it (String,
// GoString, slog) hides the password.
type Credential struct {
	Name string
	api.Credential
}

// String describes the credential without its password.
func (c Credential) String() string {
	return fmt.Sprintf("{%s: lease %s %s/%s user %s password [redacted] %s:%d/%s expires %s}", c.Name, c.LeaseID,
		c.Database, c.Role, c.Username, c.Host, c.Port, c.DBName, c.ExpiresAt.Format(time.RFC3339))
}

// GoString is String, so that %#v hides the password too.
func (c Credential) GoString() string { return "agent.Credential" + c.String() }

// LogValue logs the credential without its password.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("lease_id", c.LeaseID),
		slog.String("username", c.Username), slog.Time("expires_at", c.ExpiresAt))
}

// AWSCredential is a cached AWS session under its configured name. Printing it (String,
// GoString, slog) hides the secret access key and the session token.
type AWSCredential struct {
	Name string
	api.AWSCredential
}

// String describes the session without its secret access key and session token.
func (c AWSCredential) String() string {
	return fmt.Sprintf("{%s: lease %s access key %s secret [redacted] token [redacted] expires %s}",
		c.Name, c.LeaseID, c.AccessKeyID, c.Expiration.Format(time.RFC3339))
}

// GoString is String, so that %#v hides the secrets too.
func (c AWSCredential) GoString() string { return "agent.AWSCredential" + c.String() }

// LogValue logs the session without its secret access key and session token.
func (c AWSCredential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("access_key_id", c.AccessKeyID),
		slog.Time("expiration", c.Expiration))
}

// Agent is the credential cache. It is safe for concurrent use.
type Agent struct {
	broker    Broker
	awsBroker AWSBroker // nil without AWS profiles
	opts      Options
	entries   map[string]entry
	order     []entry // database credentials first, then AWS sessions, as configured
	sf        singleflight.Group

	ctx    context.Context // ends at RevokeAll: background work and flights stop
	cancel context.CancelFunc
	wake   chan struct{}
	start  sync.Once
	// started is set when Start begins; failed when a fetch of INIT failed in fail mode
	// (reads are then held, see Get).
	started, failed atomic.Bool

	mu      sync.Mutex
	closed  bool
	retired []retiredLease
}

type retiredLease struct {
	id      string
	expires time.Time
}

// New returns an agent for creds and opts.AWSProfiles, fetching nothing yet.
func New(b Broker, creds []config.Credential, opts Options) (*Agent, error) {
	if b == nil {
		return nil, errors.New("agent: broker is nil")
	}
	if len(creds) == 0 && len(opts.AWSProfiles) == 0 {
		return nil, errors.New("agent: no credentials or AWS profiles configured")
	}
	// A zero (or negative) setting takes its default: cmp.Or picks the first non-zero.
	opts.InitTimeout = cmp.Or(max(opts.InitTimeout, 0), config.DefaultInitTimeout)
	opts.RefreshTimeout = cmp.Or(max(opts.RefreshTimeout, 0), DefaultRefreshTimeout)
	opts.RetryBase = cmp.Or(max(opts.RetryBase, 0), DefaultRetryBase)
	opts.RetryMax = cmp.Or(max(opts.RetryMax, 0), DefaultRetryMax)
	opts.FetchWait = cmp.Or(max(opts.FetchWait, 0), DefaultFetchWait)
	opts.FetchWait = min(opts.FetchWait, opts.InitTimeout)
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{broker: b, opts: opts, entries: map[string]entry{}, wake: make(chan struct{}, 1)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	add := func(what, name string, e entry) error {
		if _, dup := a.entries[name]; dup {
			return fmt.Errorf("agent: %s %q: the name is configured twice (names are unique across credentials and AWS profiles)", what, name)
		}
		a.entries[name] = e
		a.order = append(a.order, e)
		return nil
	}
	for _, c := range creds {
		if err := add("credential", c.Name, newSlot[api.Credential](a, c.Name, c.TTL, dbKind{a: a, spec: c})); err != nil {
			return nil, err
		}
	}
	if len(opts.AWSProfiles) > 0 {
		ab, ok := b.(AWSBroker)
		if !ok {
			return nil, fmt.Errorf("agent: AWS profiles are configured but the broker (%T) cannot assume them", b)
		}
		a.awsBroker = ab
	}
	for _, p := range opts.AWSProfiles {
		if err := add("AWS profile", p.Name, newSlot[api.AWSCredential](a, p.Name, p.TTL, awsKind{a: a, spec: p})); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Start runs the INIT fetch: it issues every credential and assumes every AWS session
// concurrently and returns when all are cached, or with the joined errors when
// InitTimeout or ctx ends first. In lazy mode the missing ones are then retried in the
// background. In fail mode a failure holds every read from then on (see Get). Call it
// once.
func (a *Agent) Start(ctx context.Context) error {
	var err error
	a.start.Do(func() {
		a.started.Store(true)
		ctx, cancel := context.WithTimeout(ctx, a.opts.InitTimeout)
		defer cancel()
		errs := make([]error, len(a.order))
		var wg sync.WaitGroup
		for i, e := range a.order {
			wg.Go(func() {
				defer e.markFirst()
				errs[i] = e.refreshAny(ctx, false, time.Time{})
				// A failure is recorded before the waiting reads are let go (markFirst).
				if errs[i] != nil && !a.opts.Lazy {
					a.failed.Store(true)
				}
			})
		}
		wg.Wait()
		err = errors.Join(errs...)
		if err != nil && a.opts.Lazy {
			go a.retryLoop()
		}
	})
	return err
}

// Ready reports whether every credential and AWS session is cached and the agent is not
// shut down.
func (a *Agent) Ready() bool {
	if a.isClosed() {
		return false
	}
	for _, e := range a.order {
		if !e.has() {
			return false
		}
	}
	return true
}

// Names returns the configured database credential names in order.
func (a *Agent) Names() []string { return names[api.Credential](a) }

// AWSNames returns the configured AWS profile names in order.
func (a *Agent) AWSNames() []string { return names[api.AWSCredential](a) }

func names[T any](a *Agent) []string {
	out := []string{}
	for _, e := range a.order {
		if s, ok := e.(*slot[T]); ok {
			out = append(out, s.name)
		}
	}
	return out
}

// Get returns the credential called name, refreshed first if less than the margin is
// left or if refresh is true (then always a new credential). While INIT is running it
// waits for it, at most InitTimeout (longer only while INIT is still fetching) and while
// ctx lasts. A credential still missing after INIT (lazy mode) is fetched, at most
// FetchWait. After a failed INIT in fail mode it returns only when ctx ends, with
// [ErrNotReady].
func (a *Agent) Get(ctx context.Context, name string, refresh bool) (Credential, error) {
	s, ok := a.entries[name].(*slot[api.Credential])
	if !ok {
		return Credential{}, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	c, err := s.read(ctx, refresh)
	if err != nil {
		return Credential{}, err
	}
	return Credential{Name: name, Credential: *c}, nil
}

// GetAWS returns the AWS session called name, first replaced by a new one if less than
// its margin ([config.AWSMargin], at least 5 minutes) is left or if refresh is true.
// It waits for INIT, fetches a missing session and holds reads after a failed INIT in
// fail mode as [Agent.Get] does. When the broker cannot be reached it serves the cached
// session until its Expiration.
func (a *Agent) GetAWS(ctx context.Context, name string, refresh bool) (AWSCredential, error) {
	s, ok := a.entries[name].(*slot[api.AWSCredential])
	if !ok {
		return AWSCredential{}, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	c, err := s.read(ctx, refresh)
	if err != nil {
		return AWSCredential{}, err
	}
	return AWSCredential{Name: name, AWSCredential: *c}, nil
}

// OnInvoke checks every credential and AWS session at the start of an invocation that
// ends at deadline, refreshing those within the margin of expiry or expiring before
// deadline. Those still missing after a failed INIT (lazy mode) it fetches, within the
// invocation (until 100 ms before deadline, by the agent's clock, and at most
// InitTimeout), and it kicks the background retry. It returns when all are done or ctx
// ends, with their errors.
func (a *Agent) OnInvoke(ctx context.Context, deadline time.Time) error {
	if a.isClosed() {
		return ErrClosed
	}
	a.kick()
	now := a.opts.Clock()
	// The bound on fetching what is missing.
	wait := a.opts.InitTimeout
	if !deadline.IsZero() {
		wait = min(wait, deadline.Sub(now)-invokeSlack)
	}
	fetch := a.started.Load() && !a.failed.Load() && wait > 0
	errs := make([]error, len(a.order))
	var wg sync.WaitGroup
	for i, e := range a.order {
		present, due := e.check(now, deadline)
		switch {
		case !present && fetch:
			wg.Go(func() {
				errs[i] = fetchMissing(ctx, wait, func(ctx context.Context) error { return e.refreshAny(ctx, false, deadline) })
			})
		case present && due:
			wg.Go(func() { errs[i] = e.refreshAny(ctx, false, deadline) })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RevokeAll shuts the agent down: it stops background work, forgets every credential and
// AWS session, and revokes every unexpired lease it obtained, concurrently, until ctx
// ends. Leases it cannot revoke expire on their own (and the broker's reaper drops them).
// AWS sessions are only forgotten: STS cannot revoke a session, which ends at its
// Expiration.
func (a *Agent) RevokeAll(ctx context.Context) error {
	a.mu.Lock()
	a.closed = true
	retired := a.retired
	a.retired = nil
	a.mu.Unlock()
	a.cancel()

	now := a.opts.Clock()
	var ids []string
	for _, r := range retired {
		if now.Before(r.expires) {
			ids = append(ids, r.id)
		}
	}
	forgotten := 0
	for _, e := range a.order {
		id, held := e.take(now)
		switch {
		case id != "":
			ids = append(ids, id)
		case held:
			forgotten++
		}
	}
	if forgotten > 0 {
		a.opts.Logger.Info("AWS sessions forgotten; STS cannot revoke them, they end at their expiration", "sessions", forgotten)
	}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			err := a.broker.Revoke(ctx, id)
			if errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrLeaseExpired) || errors.Is(err, api.ErrLeaseRevoked) {
				err = nil
			}
			if err != nil {
				errs[i] = err
				a.opts.Logger.Warn("revoke failed; the lease will expire on its own", "lease_id", id, "error", err.Error())
				return
			}
			a.opts.Logger.Info("lease revoked", "lease_id", id)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (a *Agent) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

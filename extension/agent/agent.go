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
// Typical use, as the extension's main wires it:
//
//	a, err := agent.New(brokerClient, cfg.Credentials, agent.Options{InitTimeout: cfg.InitTimeout})
//	err = a.Start(ctx)                    // INIT: fetch all, concurrently, within InitTimeout
//	cred, err := a.Get(ctx, "orders", false)
//	sess, err := a.GetAWS(ctx, "reports", false) // with Options.AWSProfiles
//	a.OnInvoke(ctx, event.Deadline)       // each INVOKE
//	a.RevokeAll(shutdownCtx)              // SHUTDOWN
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// Broker is what the agent needs from the broker; *brokerclient.Client implements it.
type Broker interface {
	Issue(ctx context.Context, database, role string, ttl time.Duration) (*brokerclient.Credential, error)
	Renew(ctx context.Context, leaseID string, ttl time.Duration) (*brokerclient.Lease, error)
	Revoke(ctx context.Context, leaseID string) error
}

var _ Broker = (*brokerclient.Client)(nil)

// Errors of Get. A broker's refusal is returned wrapped as is (see brokerclient.CodeOf).
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

// Credential is a cached credential under its configured name.
type Credential struct {
	Name string
	brokerclient.Credential
}

// Agent is the credential cache. It is safe for concurrent use.
type Agent struct {
	broker  Broker
	opts    Options
	entries map[string]*entry
	order   []*entry
	sf      singleflight.Group

	awsBroker  AWSBroker
	awsEntries map[string]*awsEntry
	awsOrder   []*awsEntry

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

type entry struct {
	spec                          config.Credential
	slot[brokerclient.Credential] // ttl: the lease duration asked for (or the broker's default)
}

// slot is the cached value of an entry (a database credential or an AWS session) and
// the state its readers share.
type slot[T any] struct {
	first     chan struct{} // closed when the first fetch attempt has ended
	firstOnce sync.Once

	mu      sync.Mutex
	cred    *T
	ttl     time.Duration // the duration asked for (or the broker's default)
	lastErr error
}

func newSlot[T any](ttl time.Duration) slot[T] {
	return slot[T]{first: make(chan struct{}), ttl: ttl}
}

func (s *slot[T]) markFirst() { s.firstOnce.Do(func() { close(s.first) }) }

func (s *slot[T]) current() *T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cred
}

func (s *slot[T]) has() bool { return s.current() != nil }

func (s *slot[T]) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *slot[T]) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

func (s *slot[T]) leaseTTL() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ttl
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
	if opts.InitTimeout <= 0 {
		opts.InitTimeout = config.DefaultInitTimeout
	}
	if opts.RefreshTimeout <= 0 {
		opts.RefreshTimeout = DefaultRefreshTimeout
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = DefaultRetryBase
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	if opts.FetchWait <= 0 {
		opts.FetchWait = DefaultFetchWait
	}
	opts.FetchWait = min(opts.FetchWait, opts.InitTimeout)
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Agent{broker: b, opts: opts, entries: map[string]*entry{}, wake: make(chan struct{}, 1)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	for _, c := range creds {
		if _, dup := a.entries[c.Name]; dup {
			return nil, fmt.Errorf("agent: credential %q is configured twice", c.Name)
		}
		e := &entry{spec: c, slot: newSlot[brokerclient.Credential](c.TTL)}
		a.entries[c.Name] = e
		a.order = append(a.order, e)
	}
	if err := a.addAWS(b, opts.AWSProfiles); err != nil {
		return nil, err
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
		errs := make([]error, len(a.order)+len(a.awsOrder))
		// A failure is recorded before the waiting reads are let go (markFirst).
		failed := func(err error) {
			if err != nil && !a.opts.Lazy {
				a.failed.Store(true)
			}
		}
		var wg sync.WaitGroup
		for i, e := range a.order {
			wg.Go(func() {
				defer e.markFirst()
				_, errs[i] = a.refresh(ctx, e, false, time.Time{})
				failed(errs[i])
			})
		}
		for i, e := range a.awsOrder {
			wg.Go(func() {
				defer e.markFirst()
				_, errs[len(a.order)+i] = a.refreshAWS(ctx, e, false, time.Time{})
				failed(errs[len(a.order)+i])
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
	for _, e := range a.awsOrder {
		if !e.has() {
			return false
		}
	}
	return true
}

// Names returns the configured database credential names in order.
func (a *Agent) Names() []string {
	names := make([]string, len(a.order))
	for i, e := range a.order {
		names[i] = e.spec.Name
	}
	return names
}

// Get returns the credential called name, refreshed first if less than the margin is
// left or if refresh is true (then always a new credential). While INIT is running it
// waits for it, at most InitTimeout (longer only while INIT is still fetching) and while
// ctx lasts. A credential still missing after INIT (lazy mode) is fetched, at most
// FetchWait. After a failed INIT in fail mode it returns only when ctx ends, with
// [ErrNotReady].
func (a *Agent) Get(ctx context.Context, name string, refresh bool) (Credential, error) {
	e := a.entries[name]
	if e == nil {
		return Credential{}, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	c, err := read(ctx, a, name, &e.slot, refresh,
		func(ctx context.Context, force bool) (*brokerclient.Credential, error) {
			return a.refresh(ctx, e, force, time.Time{})
		},
		func(cur *brokerclient.Credential) bool { return a.due(e, cur, a.opts.Clock(), time.Time{}) },
		func(cur *brokerclient.Credential, err error) bool {
			if !a.opts.Clock().Before(cur.ExpiresAt) {
				return false
			}
			a.opts.Logger.Warn("refresh failed; serving the cached credential until it expires",
				"name", name, "lease_id", cur.LeaseID, "expires_at", cur.ExpiresAt, "error", err.Error())
			return true
		})
	if err != nil {
		return Credential{}, err
	}
	return Credential{Name: name, Credential: *c}, nil
}

// read is the common core of Get and GetAWS for the value of s called name: it waits
// for INIT (or holds the read after a failed INIT in fail mode), fetches a missing value
// (at most FetchWait), and refreshes one that is due or when refresh is true. fetch
// runs a refresh (force: always a new value); due reports whether cur needs one; when a
// refresh that was not forced fails, keep reports whether cur may still be served (and
// says so in the log).
func read[T any](ctx context.Context, a *Agent, name string, s *slot[T], refresh bool,
	fetch func(ctx context.Context, force bool) (*T, error), due func(cur *T) bool,
	keep func(cur *T, err error) bool) (*T, error) {
	if a.failed.Load() {
		return nil, a.hold(ctx, name, s.err())
	}
	if a.isClosed() {
		return nil, ErrClosed
	}
	if err := a.waitFirst(ctx, s.first, name); err != nil {
		return nil, err
	}
	if a.failed.Load() {
		return nil, a.hold(ctx, name, s.err())
	}
	cur := s.current()
	if cur == nil {
		a.kick()
		c, err := fetchMissing(ctx, a.opts.FetchWait, func(ctx context.Context) (*T, error) {
			return fetch(ctx, false)
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotReady, err)
		}
		return c, nil
	}
	if !refresh && !due(cur) {
		return cur, nil
	}
	c, err := fetch(ctx, refresh)
	if err != nil {
		if !refresh && !errors.Is(err, ErrClosed) && keep(cur, err) {
			return cur, nil
		}
		return nil, err
	}
	return c, nil
}

// waitFirst waits until the first fetch of name has ended, while ctx lasts and at most
// InitTimeout — unless INIT has started meanwhile: its fetch is bounded by InitTimeout
// itself, and a read that gave up before it ends would answer for it.
func (a *Agent) waitFirst(ctx context.Context, first <-chan struct{}, name string) error {
	select {
	case <-first:
		return nil
	default:
	}
	t := time.NewTimer(a.opts.InitTimeout)
	defer t.Stop()
	select {
	case <-first:
		return nil
	case <-t.C:
		if !a.started.Load() {
			return fmt.Errorf("%w: %q: INIT has not fetched it", ErrNotReady, name)
		}
	case <-ctx.Done():
		return fmt.Errorf("%w: %q: %w", ErrNotReady, name, ctx.Err())
	}
	select {
	case <-first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %q: %w", ErrNotReady, name, ctx.Err())
	}
}

// hold answers a read after a failed INIT in fail mode: it returns ErrNotReady only when
// ctx ends. The extension reports the failure and the sandbox goes away; an earlier
// answer would let the function fail INIT first, with an error of its own.
func (a *Agent) hold(ctx context.Context, name string, initErr error) error {
	<-ctx.Done()
	if initErr != nil {
		return fmt.Errorf("%w: %q: INIT failed: %w (%w)", ErrNotReady, name, initErr, ctx.Err())
	}
	return fmt.Errorf("%w: %q: INIT failed (%w)", ErrNotReady, name, ctx.Err())
}

// fetchMissing runs fetch (a flight shared with the background retry and other callers)
// for a caller that found no credential, bounded by wait and ctx. A flight that failed
// for a retryable reason while time is left — it may have been started before a freeze,
// or by a caller with a shorter deadline — is tried once more.
func fetchMissing[T any](ctx context.Context, wait time.Duration, fetch func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	v, err := fetch(ctx)
	if err != nil && ctx.Err() == nil && errors.Is(err, ErrUnavailable) {
		v, err = fetch(ctx)
	}
	return v, err
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
	errs := make([]error, len(a.order)+len(a.awsOrder))
	var wg sync.WaitGroup
	for i, e := range a.awsOrder {
		cur := e.current()
		switch {
		case cur == nil && fetch:
			wg.Go(func() {
				_, errs[len(a.order)+i] = fetchMissing(ctx, wait, func(ctx context.Context) (*brokerclient.AWSCredential, error) {
					return a.refreshAWS(ctx, e, false, deadline)
				})
			})
		case cur != nil && a.awsDue(e, cur, now, deadline):
			wg.Go(func() { _, errs[len(a.order)+i] = a.refreshAWS(ctx, e, false, deadline) })
		}
	}
	for i, e := range a.order {
		cur := e.current()
		switch {
		case cur == nil && fetch:
			wg.Go(func() {
				_, errs[i] = fetchMissing(ctx, wait, func(ctx context.Context) (*brokerclient.Credential, error) {
					return a.refresh(ctx, e, false, deadline)
				})
			})
		case cur != nil && a.due(e, cur, now, deadline):
			wg.Go(func() { _, errs[i] = a.refresh(ctx, e, false, deadline) })
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
	a.forgetAWS()

	now := a.opts.Clock()
	var ids []string
	for _, r := range retired {
		if now.Before(r.expires) {
			ids = append(ids, r.id)
		}
	}
	for _, e := range a.order {
		e.mu.Lock()
		if e.cred != nil && now.Before(e.cred.ExpiresAt) {
			ids = append(ids, e.cred.LeaseID)
		}
		e.cred = nil
		e.mu.Unlock()
	}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			err := a.broker.Revoke(ctx, id)
			switch brokerclient.CodeOf(err) {
			case "not_found", "lease_expired", "lease_revoked":
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

// margin is the refresh margin of e's leases.
func (a *Agent) margin(e *entry) time.Duration {
	return config.Margin(a.opts.RefreshMargin, e.leaseTTL())
}

// due reports whether cur needs a refresh at now: less than the margin left, or (with a
// deadline) expiring before deadline when a refresh would extend it by more than the
// margin.
func (a *Agent) due(e *entry, cur *brokerclient.Credential, now, deadline time.Time) bool {
	m := a.margin(e)
	if cur.ExpiresAt.Sub(now) < m {
		return true
	}
	return !deadline.IsZero() && cur.ExpiresAt.Before(deadline) && now.Add(e.leaseTTL()).After(cur.ExpiresAt.Add(m))
}

// renewable reports whether renewing cur is worth it: the lease is live and renewable,
// and its max_expires_at is at least twice the margin away (and, with a deadline beyond
// max_expires_at, not sooner than a new credential would last).
func (a *Agent) renewable(e *entry, cur *brokerclient.Credential, now, deadline time.Time) bool {
	if !cur.Renewable || !now.Before(cur.ExpiresAt) || cur.MaxExpiresAt.Sub(now) < 2*a.margin(e) {
		return false
	}
	return deadline.IsZero() || !cur.MaxExpiresAt.Before(deadline) || !now.Add(e.leaseTTL()).After(cur.MaxExpiresAt)
}

// refresh renews or replaces e's credential in a flight shared with concurrent callers
// (a forced refresh has its own flight, which always issues); see [doFlight].
func (a *Agent) refresh(ctx context.Context, e *entry, force bool, deadline time.Time) (*brokerclient.Credential, error) {
	key := e.spec.Name
	if force {
		key += "\x00new"
	}
	return doFlight(ctx, a, key, e.spec.Name, func(fctx context.Context) (*brokerclient.Credential, error) {
		c, err := a.renewOrIssue(fctx, e, force, deadline)
		e.setErr(err)
		return c, err
	})
}

// doFlight runs fetch in the flight key, shared with concurrent callers. The flight runs
// under the agent's lifetime, bounded by RefreshTimeout and by the deadline of the caller
// that started it; each caller waits while its ctx lasts. Errors name the credential: a
// retryable one (or the caller's ctx ending) wraps ErrUnavailable.
func doFlight[T any](ctx context.Context, a *Agent, key, name string, fetch func(context.Context) (T, error)) (T, error) {
	var zero T
	ch := a.sf.DoChan(key, func() (any, error) {
		if a.isClosed() {
			return nil, ErrClosed
		}
		// The flight outlives a caller that goes away, but not its deadline: INIT's
		// bound then stops the broker client's retries in time to report why.
		timeout := a.opts.RefreshTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		fctx, cancel := context.WithTimeout(a.ctx, timeout)
		defer cancel()
		v, err := fetch(fctx)
		return v, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			if brokerclient.Retryable(r.Err) {
				return zero, fmt.Errorf("%w: %q: %w", ErrUnavailable, name, r.Err)
			}
			return zero, fmt.Errorf("agent: %q: %w", name, r.Err)
		}
		return r.Val.(T), nil
	case <-ctx.Done():
		return zero, fmt.Errorf("%w: %q: %w", ErrUnavailable, name, ctx.Err())
	}
}

func (a *Agent) renewOrIssue(ctx context.Context, e *entry, force bool, deadline time.Time) (*brokerclient.Credential, error) {
	cur := e.current()
	now := a.opts.Clock()
	if !force && cur != nil && !a.due(e, cur, now, deadline) {
		return cur, nil // a flight that just ended refreshed it
	}
	log := a.opts.Logger.With("name", e.spec.Name)
	if !force && cur != nil && a.renewable(e, cur, now, deadline) {
		l, err := a.broker.Renew(ctx, cur.LeaseID, e.spec.TTL)
		switch {
		case err == nil:
			renewed := *cur
			renewed.ExpiresAt = l.ExpiresAt
			if !l.MaxExpiresAt.IsZero() {
				renewed.MaxExpiresAt = l.MaxExpiresAt
			}
			renewed.Renewable = renewed.ExpiresAt.Before(renewed.MaxExpiresAt)
			if err := a.store(e, &renewed, false); err != nil {
				return nil, err
			}
			log.Info("lease renewed", "lease_id", renewed.LeaseID, "username", renewed.Username, "expires_at", renewed.ExpiresAt)
			if !a.due(e, &renewed, a.opts.Clock(), deadline) {
				return &renewed, nil
			}
			cur = &renewed
			log.Info("renewal capped by max_expires_at; issuing a new credential", "lease_id", renewed.LeaseID)
		case brokerclient.Retryable(err) || ctx.Err() != nil:
			return nil, err
		default:
			log.Info("renewal refused; issuing a new credential", "lease_id", cur.LeaseID,
				"code", brokerclient.CodeOf(err), "status", brokerclient.StatusOf(err))
		}
	}
	c, err := a.broker.Issue(ctx, e.spec.Database, e.spec.Role, e.spec.TTL)
	if err != nil {
		log.Warn("issue failed", "database", e.spec.Database, "role", e.spec.Role, "error", err.Error())
		return nil, err
	}
	if err := a.store(e, c, true); err != nil {
		// Shut down meanwhile: the lease is not kept; give it back.
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = a.broker.Revoke(rctx, c.LeaseID)
		cancel()
		return nil, err
	}
	log.Info("credential issued", "lease_id", c.LeaseID, "username", c.Username, "expires_at", c.ExpiresAt,
		"max_expires_at", c.MaxExpiresAt)
	return c, nil
}

// store caches c as e's credential. An issued credential replaces the current one, whose
// lease is kept for RevokeAll; a renewal applies only to the lease it renewed.
func (a *Agent) store(e *entry, c *brokerclient.Credential, issued bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !issued {
		if e.cred != nil && e.cred.LeaseID == c.LeaseID {
			e.cred = c
		}
		return nil
	}
	if old := e.cred; old != nil && old.LeaseID != c.LeaseID {
		now := a.opts.Clock()
		kept := a.retired[:0]
		for _, r := range a.retired {
			if now.Before(r.expires) {
				kept = append(kept, r)
			}
		}
		a.retired = append(kept, retiredLease{id: old.LeaseID, expires: old.ExpiresAt})
	}
	e.cred = c
	if e.spec.TTL == 0 {
		e.ttl = c.ExpiresAt.Sub(c.IssuedAt)
	}
	return nil
}

// kick wakes the lazy-mode retry loop, if it waits.
func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// retryLoop fetches missing credentials and AWS sessions with backoff until all are cached or the agent
// shuts down. A kick (a read, an INVOKE) retries early, but never twice within RetryBase.
func (a *Agent) retryLoop() {
	failures := 0
	last := time.Now()
	wait := a.opts.RetryBase
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.wake:
			since := time.Since(last)
			if since < a.opts.RetryBase {
				t.Reset(a.opts.RetryBase - since)
				continue
			}
		case <-t.C:
		}
		last = time.Now()
		missing := 0
		for _, e := range a.order {
			if e.has() {
				continue
			}
			if _, err := a.refresh(a.ctx, e, false, time.Time{}); err != nil {
				missing++
			}
		}
		for _, e := range a.awsOrder {
			if e.has() {
				continue
			}
			if _, err := a.refreshAWS(a.ctx, e, false, time.Time{}); err != nil {
				missing++
			}
		}
		if missing == 0 || a.ctx.Err() != nil {
			if missing == 0 {
				a.opts.Logger.Info("all credentials ready after a failed INIT")
			}
			return
		}
		failures++
		wait = a.opts.RetryBase << min(failures, 20)
		wait = min(wait, a.opts.RetryMax)
		wait = wait/2 + rand.N(wait/2+1)
		t.Reset(wait)
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/extension/brokerclient"
)

// kind is what differs between the values the agent caches (a database credential, an
// AWS session): how one is obtained, when it expires, its refresh margin and the lease
// that revokes it. Everything else — reads, the refresh rule, collapsing concurrent
// refreshes, lazy retries, shutdown — is the slot's, once for every kind.
type kind[T any] interface {
	// expiry is when v stops working.
	expiry(v *T) time.Time
	// margin is the refresh margin of a value lasting ttl (0: unknown yet).
	margin(ttl time.Duration) time.Duration
	// obtain gets a fresh value for s, given the current one (nil: none yet): a
	// renewal or a new value. It stores what it got with s.store and returns it.
	// force asks for a new value, never a renewal.
	obtain(ctx context.Context, s *slot[T], cur *T, force bool, deadline time.Time) (*T, error)
	// lease is the lease that revokes v, or "" when v cannot be revoked.
	lease(v *T) string
	// ttlOf is how long v was issued for (the TTL asked for when the configuration
	// left it to the broker).
	ttlOf(v *T, now time.Time) time.Duration
	// describe gives the log attributes naming v (never a secret).
	describe(v *T) []any
}

// entry is a slot of any kind, as the loops over every configured name see it.
type entry interface {
	has() bool
	markFirst()
	// refreshAny refreshes the value in the slot's shared flight, discarding it.
	refreshAny(ctx context.Context, force bool, deadline time.Time) error
	// check reports whether a value is cached, and whether it is due for a refresh at
	// now for an invocation ending at deadline (zero: none).
	check(now, deadline time.Time) (present, due bool)
	// take forgets the value at shutdown; it returns the lease to revoke ("" if none or
	// expired) and whether a value was held.
	take(now time.Time) (lease string, held bool)
}

// slot is the cached value of one configured name and the state its readers share.
type slot[T any] struct {
	a     *Agent
	k     kind[T]
	name  string
	asked time.Duration // the TTL asked for; 0: the broker's default

	first     chan struct{} // closed when the first fetch attempt has ended
	firstOnce sync.Once

	mu      sync.Mutex
	cur     *T
	ttl     time.Duration // the TTL asked for, or learnt from the broker's answer
	lastErr error
}

var _ entry = (*slot[struct{}])(nil)

func newSlot[T any](a *Agent, name string, ttl time.Duration, k kind[T]) *slot[T] {
	return &slot[T]{a: a, k: k, name: name, asked: ttl, ttl: ttl, first: make(chan struct{})}
}

func (s *slot[T]) markFirst() { s.firstOnce.Do(func() { close(s.first) }) }

func (s *slot[T]) current() *T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *slot[T]) has() bool { return s.current() != nil }

func (s *slot[T]) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *slot[T]) leaseTTL() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ttl
}

// margin is the refresh margin of s's values.
func (s *slot[T]) margin() time.Duration { return s.k.margin(s.leaseTTL()) }

// due reports whether cur needs a refresh at now: less than the margin left, or (with a
// deadline) expiring before deadline when a refresh would extend it by more than the
// margin.
func (s *slot[T]) due(cur *T, now, deadline time.Time) bool {
	m, exp := s.margin(), s.k.expiry(cur)
	if exp.Sub(now) < m {
		return true
	}
	return !deadline.IsZero() && exp.Before(deadline) && now.Add(s.leaseTTL()).After(exp.Add(m))
}

func (s *slot[T]) check(now, deadline time.Time) (bool, bool) {
	cur := s.current()
	if cur == nil {
		return false, false
	}
	return true, s.due(cur, now, deadline)
}

func (s *slot[T]) refreshAny(ctx context.Context, force bool, deadline time.Time) error {
	_, err := s.refresh(ctx, force, deadline)
	return err
}

// refresh renews or replaces the value in a flight shared with concurrent callers (a
// forced refresh has its own flight, which always gets a new value). The flight runs
// under the agent's lifetime, bounded by RefreshTimeout and by the deadline of the caller
// that started it; each caller waits while its ctx lasts. Errors name the slot: a
// retryable one (or the caller's ctx ending) wraps ErrUnavailable.
func (s *slot[T]) refresh(ctx context.Context, force bool, deadline time.Time) (*T, error) {
	a := s.a
	key := s.name
	if force {
		key += "\x00new"
	}
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
		cur := s.current()
		if !force && cur != nil && !s.due(cur, a.opts.Clock(), deadline) {
			return cur, nil // a flight that just ended refreshed it
		}
		v, err := s.k.obtain(fctx, s, cur, force, deadline)
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		return v, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			if brokerclient.Retryable(r.Err) {
				return nil, fmt.Errorf("%w: %q: %w", ErrUnavailable, s.name, r.Err)
			}
			return nil, fmt.Errorf("agent: %q: %w", s.name, r.Err)
		}
		return r.Val.(*T), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %q: %w", ErrUnavailable, s.name, ctx.Err())
	}
}

// store caches v. A replacement (a new lease or session) replaces the current value,
// whose lease, if it has one, is kept for RevokeAll; a renewal applies only to the lease
// it renewed.
func (s *slot[T]) store(v *T, replaced bool) error {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !replaced {
		if s.cur != nil && s.k.lease(s.cur) == s.k.lease(v) {
			s.cur = v
		}
		return nil
	}
	if old := s.cur; old != nil && s.k.lease(old) != "" && s.k.lease(old) != s.k.lease(v) {
		now := a.opts.Clock()
		kept := a.retired[:0]
		for _, r := range a.retired {
			if now.Before(r.expires) {
				kept = append(kept, r)
			}
		}
		a.retired = append(kept, retiredLease{id: s.k.lease(old), expires: s.k.expiry(old)})
	}
	s.cur = v
	if s.asked == 0 {
		s.ttl = s.k.ttlOf(v, a.opts.Clock())
	}
	return nil
}

func (s *slot[T]) take(now time.Time) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur
	s.cur = nil
	if cur == nil {
		return "", false
	}
	if id := s.k.lease(cur); id != "" && now.Before(s.k.expiry(cur)) {
		return id, true
	}
	return "", true
}

// read is the core of Get and GetAWS: it waits for INIT (or holds the read after a
// failed INIT in fail mode), fetches a missing value (at most FetchWait), and refreshes
// one that is due or when refresh is true. When a refresh that was not forced fails, the
// cached value is served until it expires.
func (s *slot[T]) read(ctx context.Context, refresh bool) (*T, error) {
	a := s.a
	if a.failed.Load() {
		return nil, a.hold(ctx, s.name, s.err())
	}
	if a.isClosed() {
		return nil, ErrClosed
	}
	if err := a.waitFirst(ctx, s.first, s.name); err != nil {
		return nil, err
	}
	if a.failed.Load() {
		return nil, a.hold(ctx, s.name, s.err())
	}
	cur := s.current()
	if cur == nil {
		a.kick()
		var v *T
		err := fetchMissing(ctx, a.opts.FetchWait, func(ctx context.Context) error {
			var err error
			v, err = s.refresh(ctx, false, time.Time{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotReady, err)
		}
		return v, nil
	}
	if !refresh && !s.due(cur, a.opts.Clock(), time.Time{}) {
		return cur, nil
	}
	v, err := s.refresh(ctx, refresh, time.Time{})
	if err != nil {
		if !refresh && !errors.Is(err, ErrClosed) && a.opts.Clock().Before(s.k.expiry(cur)) {
			a.opts.Logger.Warn("refresh failed; serving the cached value until it expires",
				append([]any{"name", s.name, "error", err.Error()}, s.k.describe(cur)...)...)
			return cur, nil
		}
		return nil, err
	}
	return v, nil
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
// for a caller that found no value, bounded by wait and ctx. A flight that failed for a
// retryable reason while time is left — it may have been started before a freeze, or by
// a caller with a shorter deadline — is tried once more.
func fetchMissing(ctx context.Context, wait time.Duration, fetch func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := fetch(ctx)
	if err != nil && ctx.Err() == nil && errors.Is(err, ErrUnavailable) {
		err = fetch(ctx)
	}
	return err
}

// kick wakes the lazy-mode retry loop, if it waits.
func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// retryLoop fetches missing values with backoff until all are cached or the agent shuts
// down. A kick (a read, an INVOKE) retries early, but never twice within RetryBase.
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
			if !e.has() && e.refreshAny(a.ctx, false, time.Time{}) != nil {
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

package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// clock is a test clock that only moves forward when told to: the pool
// hooks use it, so a credential "expires" without waiting.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func withClock(now func() time.Time) PoolOption { return func(s *poolSettings) { s.now = now } }

// testSource serves one credential at a time; the test swaps it to rotate.
type testSource struct {
	mu        sync.Mutex
	cur       Credential
	refreshed *Credential // what Refresh switches to; nil: cur stays
	err       error
	gets      int
	refreshes int
}

func (s *testSource) Credentials(_ context.Context, name string) (*Credential, error) {
	return s.answer(&s.gets, false)
}

func (s *testSource) Refresh(_ context.Context, name string) (*Credential, error) {
	return s.answer(&s.refreshes, true)
}

// answer counts the call in count and returns the current credential (after
// switching to refreshed when refresh is set), or err.
func (s *testSource) answer(count *int, refresh bool) (*Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*count++
	if s.err != nil {
		return nil, s.err
	}
	if refresh && s.refreshed != nil {
		s.cur = *s.refreshed
	}
	c := s.cur
	return &c, nil
}

func (s *testSource) set(c Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = c
}

func (s *testSource) refreshCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// admin runs a statement as the superuser.
func admin(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", strings.SplitN(sql, " PASSWORD", 2)[0], err)
	}
}

// role is a login role of the test server.
type role struct{ name, password string }

// createRole creates a role (LOGIN unless attrs says otherwise) with a
// random name and password, dropped when the test ends (after the pools,
// which are closed by cleanups registered later).
func createRole(t *testing.T, attrs string) role {
	t.Helper()
	r := role{name: "eph_test_" + randomHex(t, 6), password: "pw-" + randomHex(t, 16)}
	if attrs == "" {
		attrs = "LOGIN"
	}
	admin(t, fmt.Sprintf("CREATE ROLE %s %s PASSWORD '%s'", r.name, attrs, r.password))
	t.Cleanup(func() {
		admin(t, "DROP ROLE IF EXISTS "+r.name)
	})
	return r
}

func (r role) credential(lease string, expires time.Time) Credential {
	return Credential{
		Name: "orders", Username: r.name, Password: r.password, Host: pg.Host(), Port: pg.Port(),
		DBName: pg.Database(), SSLMode: "disable", DSN: pg.ConnString(r.name, r.password, pg.Database()),
		LeaseID: lease, ExpiresAt: expires,
	}
}

func newPool(t *testing.T, src Source, opts ...PoolOption) *pgxpool.Pool {
	t.Helper()
	return newPoolSized(t, src, 4, opts...)
}

// newPoolSized is newPool with MaxConns set. pgxpool tries MaxConns+1
// connections per Acquire before giving up on ones PrepareConn refuses.
func newPoolSized(t *testing.T, src Source, maxConns int32, opts ...PoolOption) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	cfg, err := PoolConfig(ctx, src, "orders", opts...)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func whoami(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (user string, pid uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.QueryRow(ctx, "SELECT current_user, pg_backend_pid()").Scan(&user, &pid); err != nil {
		t.Fatal(err)
	}
	return user, pid
}

func TestPoolRetiresConnectionsBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	a, b := createRole(t, ""), createRole(t, "")
	src := &testSource{cur: a.credential("lease-a", clk.now().Add(10*time.Minute))}
	pool := newPool(t, src, withClock(clk.now))

	if user, _ := whoami(t, pool); user != a.name {
		t.Fatalf("current_user = %s, want %s", user, a.name)
	}
	// A transaction on an A connection is running while the credential
	// rotates to B and A comes within the margin of its expiry.
	held, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := held.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if user, _ := whoami(t, tx); user != a.name {
		t.Fatalf("held connection is %s, want %s", user, a.name)
	}
	bExpires := clk.now().Add(20 * time.Minute).Round(0)
	src.set(b.credential("lease-b", bExpires))
	clk.advance(10*time.Minute - 15*time.Second) // A: 15 s left, margin 30 s

	// New work gets a B connection at once ...
	if user, _ := whoami(t, pool); user != b.name {
		t.Errorf("after rotation current_user = %s, want %s", user, b.name)
	}
	// ... while the running transaction is not interrupted.
	if user, _ := whoami(t, tx); user != a.name {
		t.Errorf("held connection is %s, want %s", user, a.name)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Errorf("commit on the retiring connection: %v", err)
	}
	held.Release()

	// Once released, the A connection is never handed out again. Two
	// connections are held at a time so that every idle one, A included,
	// goes through PrepareConn (one at a time, the pool may keep handing out
	// the most recent B connection and never look at A).
	for range 5 {
		var conns []*pgxpool.Conn
		for range 2 {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
			if user, _ := whoami(t, conn); user != b.name {
				t.Errorf("current_user = %s, want %s", user, b.name)
			}
			if exp, ok := ConnExpiry(conn.Conn()); !ok || !exp.Equal(bExpires) {
				t.Errorf("ConnExpiry = %v, %v; want %v", exp, ok, bExpires)
			}
		}
		for _, c := range conns {
			c.Release()
		}
	}
	for _, c := range pool.AcquireAllIdle(ctx) { // no PrepareConn: sees what the pool holds
		if exp, _ := ConnExpiry(c.Conn()); !exp.Equal(bExpires) {
			t.Errorf("the pool still holds a connection expiring %v (the A connection did not retire)", exp)
		}
		c.Release()
	}
	if n := src.refreshCount(); n != 0 {
		t.Errorf("Refresh called %d times, want 0", n)
	}
}

func TestPoolKeepsRenewedConnections(t *testing.T) {
	clk := &clock{}
	a := createRole(t, "")
	src := &testSource{cur: a.credential("lease-a", clk.now().Add(10*time.Minute))}
	pool := newPool(t, src, withClock(clk.now))
	_, pid := whoami(t, pool)

	// The extension renewed the lease: same user, later expiry.
	src.set(a.credential("lease-a", clk.now().Add(20*time.Minute)))
	clk.advance(10*time.Minute - 15*time.Second)
	if user, again := whoami(t, pool); user != a.name || again != pid {
		t.Errorf("after renewal: %s pid %d, want %s pid %d (same connection)", user, again, a.name, pid)
	}
	// No renewal this time: the connection retires.
	clk.advance(10 * time.Minute)
	src.set(a.credential("lease-a2", clk.now().Add(10*time.Minute)))
	if _, again := whoami(t, pool); again == pid {
		t.Error("connection kept after its lease ended")
	}
}

func TestPoolRetriesRefusedLogin(t *testing.T) {
	ctx := context.Background()
	a := createRole(t, "")
	expires := time.Now().Add(10 * time.Minute)

	// The extension serves a password the database no longer accepts
	// (as after an expiry it has not noticed); Refresh gives the right one.
	stale := a.credential("lease-old", expires)
	stale.Password, stale.DSN = "pw-stale-"+randomHex(t, 8), ""

	_, err := pgx.Connect(ctx, dsn(&stale))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("stale credential: err = %v, want SQLSTATE 28P01", err)
	}

	t.Run("password changed", func(t *testing.T) {
		fresh := a.credential("lease-new", expires)
		src := &testSource{cur: stale, refreshed: &fresh}
		pool := newPool(t, src)
		if user, _ := whoami(t, pool); user != a.name {
			t.Errorf("current_user = %s, want %s", user, a.name)
		}
		if n := src.refreshCount(); n != 1 {
			t.Errorf("Refresh called %d times, want 1", n)
		}
		if user, _ := whoami(t, pool); user != a.name || src.refreshCount() != 1 {
			t.Error("second query did not reuse the connection")
		}
		if !pg.External() {
			logs, err := pg.Logs()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(logs), `password authentication failed for user "`+a.name+`"`) {
				t.Error("server log shows no failed login: the stale credential was never tried")
			}
		}
	})

	t.Run("role may not log in (28000)", func(t *testing.T) {
		nologin := createRole(t, "NOLOGIN")
		fresh := a.credential("lease-new", expires)
		src := &testSource{cur: nologin.credential("lease-nologin", expires), refreshed: &fresh}
		pool := newPool(t, src)
		if user, _ := whoami(t, pool); user != a.name {
			t.Errorf("current_user = %s, want %s", user, a.name)
		}
		if n := src.refreshCount(); n != 1 {
			t.Errorf("Refresh called %d times, want 1", n)
		}
	})

	t.Run("refresh does not help", func(t *testing.T) {
		src := &testSource{cur: stale}
		pool := newPool(t, src)
		_, err := pool.Exec(ctx, "SELECT 1")
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("err = %v, want SQLSTATE 28P01", err)
		}
		if err != nil && strings.Contains(err.Error(), stale.Password) {
			t.Errorf("error shows the password: %v", err)
		}
		if n := src.refreshCount(); n != 1 {
			t.Errorf("Refresh called %d times, want exactly 1", n)
		}
	})

	t.Run("auth retry off", func(t *testing.T) {
		fresh := a.credential("lease-new", expires)
		src := &testSource{cur: stale, refreshed: &fresh}
		pool := newPool(t, src, WithAuthRetry(false))
		if _, err := pool.Exec(ctx, "SELECT 1"); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("err = %v, want SQLSTATE 28P01", err)
		}
		if n := src.refreshCount(); n != 0 {
			t.Errorf("Refresh called %d times, want 0", n)
		}
	})
}

// TestPoolRereadsCredentialAboutToExpire: a credential with less than the
// retire margin left is read again, never force-refreshed (a refresh makes
// the broker create a new user): the connection made with it retires early,
// and the next one uses what the source serves then.
func TestPoolRereadsCredentialAboutToExpire(t *testing.T) {
	ctx := context.Background()
	clk := &clock{}
	a, b, c := createRole(t, ""), createRole(t, ""), createRole(t, "")
	forced := c.credential("lease-c", clk.now().Add(10*time.Minute)) // what a forced refresh would give
	aExpires := clk.now().Add(10 * time.Second).Round(0)
	src := &testSource{cur: a.credential("lease-a", aExpires), refreshed: &forced}
	pool := newPool(t, src, withClock(clk.now))

	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if user, _ := whoami(t, conn); user != a.name {
		t.Errorf("current_user = %s, want %s (the credential the source serves, though near expiry)", user, a.name)
	}
	if exp, ok := ConnExpiry(conn.Conn()); !ok || !exp.Equal(aExpires) {
		t.Errorf("ConnExpiry = %v, %v; want %v", exp, ok, aExpires)
	}
	conn.Release()
	if n := src.refreshCount(); n != 0 {
		t.Fatalf("Refresh called %d times for a credential near expiry, want 0", n)
	}

	// The extension replaced A by its own margin; A's connection retires
	// once half of its remaining 10 s has passed.
	bExpires := clk.now().Add(10 * time.Minute).Round(0)
	src.set(b.credential("lease-b", bExpires))
	clk.advance(6 * time.Second)
	if user, _ := whoami(t, pool); user != b.name {
		t.Errorf("after A retired: current_user = %s, want %s", user, b.name)
	}
	if n := pool.Stat().TotalConns(); n != 1 {
		t.Errorf("pool holds %d connections, want 1 (A retired)", n)
	}
	if n := src.refreshCount(); n != 0 {
		t.Errorf("Refresh called %d times, want 0", n)
	}
}

// TestPoolShortTTLMakesNoNewUsers: with credentials that live less than the
// retire margin (a role with a TTL under 30 s), every new connection logs in
// with the credential the source serves; none asks for a new one.
func TestPoolShortTTLMakesNoNewUsers(t *testing.T) {
	clk := &clock{}
	const ttl = 20 * time.Second
	var roles [4]role
	for i := range roles {
		roles[i] = createRole(t, "")
	}
	src := &testSource{cur: roles[0].credential("lease-0", clk.now().Add(ttl))}
	pool := newPool(t, src, withClock(clk.now))
	for i, r := range roles {
		if i > 0 {
			// The extension replaced the credential 15 s into its 20 s.
			src.set(r.credential(fmt.Sprintf("lease-%d", i), clk.now().Add(15*time.Second+ttl)))
			clk.advance(15 * time.Second)
		}
		for range 3 {
			if user, _ := whoami(t, pool); user != r.name {
				t.Fatalf("generation %d: current_user = %s, want %s", i, user, r.name)
			}
		}
	}
	if n := src.refreshCount(); n != 0 {
		t.Errorf("Refresh called %d times with %v credentials, want 0", n, ttl)
	}
	if n := pool.Stat().NewConnsCount(); n != int64(len(roles)) {
		t.Errorf("%d connections made, want %d (one per credential)", n, len(roles))
	}
}

// TestPoolQueriesAcrossRotations runs queries from several goroutines while
// the credential rotates to a new role at every step, as the broker issues
// them (a new user per credential; a live credential's password never
// changes): every query must succeed.
func TestPoolQueriesAcrossRotations(t *testing.T) {
	const (
		workers   = 4
		rotations = 12
		ttl       = 10 * time.Minute
		step      = ttl - 15*time.Second // each rotation leaves the previous credential 15 s
	)
	clk := &clock{}
	var roles [rotations + 1]role
	for i := range roles {
		roles[i] = createRole(t, "")
	}
	src := &testSource{cur: roles[0].credential("lease-0", clk.now().Add(ttl))}
	// The test jumps the clock while connects are in flight (a Lambda thaw
	// jumps it with none): every pooled connection and every one being made
	// (up to one per worker, each with the credential of before the jump) can
	// be due at once. pgxpool tries MaxConns+1 connections per Acquire, so
	// leave it room for all of them: the pool holds at most about 2*workers.
	pool := newPoolSized(t, src, 4*workers, withClock(clk.now))

	var (
		epoch     atomic.Int64 // the rotation in force
		confirmed atomic.Int64 // the last rotation a query has run under
		queries   atomic.Int64
		failures  atomic.Int64
		firstErr  sync.Once
		done      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				e := epoch.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var user string
				err := pool.QueryRow(ctx, "SELECT current_user").Scan(&user)
				cancel()
				queries.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("query failed: %v", err) })
					continue
				}
				// An A connection acquired after rotation e moved the clock
				// belongs to rotation e: older A connections retired.
				if user == roles[e].name && confirmed.Load() < e {
					confirmed.Store(e)
				}
			}
		})
	}

	for e := int64(1); e <= rotations && !t.Failed(); e++ {
		r := roles[e]
		src.set(r.credential(fmt.Sprintf("lease-%d", e), clk.now().Add(step+ttl)))
		clk.advance(step)
		epoch.Store(e)
		deadline := time.Now().Add(30 * time.Second)
		for confirmed.Load() < e && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if confirmed.Load() < e {
			t.Errorf("rotation %d: no query ran as %s", e, r.name)
		}
	}
	close(done)
	wg.Wait()

	t.Logf("%d queries, %d failed, %d connections made, %d refreshes over %d rotations",
		queries.Load(), failures.Load(), pool.Stat().NewConnsCount(), src.refreshCount(), rotations)
	if failures.Load() != 0 {
		t.Errorf("%d of %d queries failed", failures.Load(), queries.Load())
	}
	if n := pool.Stat().NewConnsCount(); n < rotations+1 {
		t.Errorf("%d connections made, want at least %d", n, rotations+1)
	}
	if n := src.refreshCount(); n != 0 {
		t.Errorf("Refresh called %d times: the source's credentials were never refused", n)
	}
}

func TestPoolConfig(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	base := Credential{
		Username: "u", Password: secret, Host: "db.example", Port: 6543, DBName: "orders", SSLMode: "disable",
	}
	with := func(mod func(*Credential)) Credential { c := base; mod(&c); return c }

	t.Run("fields without DSN", func(t *testing.T) {
		cfg, err := PoolConfig(ctx, Static{Credential: with(func(c *Credential) { c.ExpiresAt = now.Add(15 * time.Minute) })}, "orders")
		if err != nil {
			t.Fatal(err)
		}
		cc := cfg.ConnConfig
		if cc.User != "u" || cc.Password != secret || cc.Host != "db.example" || cc.Port != 6543 || cc.Database != "orders" {
			t.Errorf("config %s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database)
		}
		if cfg.BeforeConnect == nil || cfg.PrepareConn == nil {
			t.Error("hooks not installed")
		}
		// One invocation at a time per sandbox: not pgxpool's 4-or-more.
		if cfg.MaxConns != DefaultMaxConns || DefaultMaxConns > 2 {
			t.Errorf("MaxConns %d, want %d", cfg.MaxConns, DefaultMaxConns)
		}
	})

	for _, tt := range []struct {
		name    string
		expires time.Time
		max     time.Duration // bound on MaxConnLifetime + MaxConnLifetimeJitter
	}{
		{"15 min left", now.Add(15 * time.Minute), 15*time.Minute - DefaultRetireMargin},
		{"40 s left", now.Add(40 * time.Second), time.Minute + 2*time.Second},
		{"10 s left", now.Add(10 * time.Second), time.Minute},
		{"2 days left", now.Add(48 * time.Hour), time.Hour},
		{"no expiry", time.Time{}, time.Hour},
	} {
		t.Run("lifetime "+tt.name, func(t *testing.T) {
			cfg, err := PoolConfig(ctx, Static{Credential: with(func(c *Credential) { c.ExpiresAt = tt.expires })}, "orders")
			if err != nil {
				t.Fatal(err)
			}
			if total := cfg.MaxConnLifetime + cfg.MaxConnLifetimeJitter; total > tt.max {
				t.Errorf("MaxConnLifetime %v + jitter %v > %v", cfg.MaxConnLifetime, cfg.MaxConnLifetimeJitter, tt.max)
			}
			if cfg.MaxConnLifetime < time.Minute {
				t.Errorf("MaxConnLifetime %v < 1 min", cfg.MaxConnLifetime)
			}
			if !tt.expires.IsZero() && tt.expires.Sub(now) > 2*time.Minute && cfg.MaxConnLifetimeJitter == 0 {
				t.Error("no jitter")
			}
		})
	}

	t.Run("bad DSN", func(t *testing.T) {
		_, err := PoolConfig(ctx, Static{Credential: with(func(c *Credential) {
			c.DSN = "postgres://u:" + secret + "@db.example:notaport/orders"
		})}, "orders")
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("source error", func(t *testing.T) {
		_, err := PoolConfig(ctx, &testSource{err: ErrNotReady}, "orders")
		if !errors.Is(err, ErrNotReady) {
			t.Errorf("err = %v, want ErrNotReady", err)
		}
		if _, err := PoolConfig(ctx, nil, "orders"); err == nil {
			t.Error("nil source accepted")
		}
	})
}

func TestPoolSourceFailsLater(t *testing.T) {
	a := createRole(t, "")
	src := &testSource{cur: a.credential("lease-a", time.Now().Add(10*time.Minute))}
	pool := newPool(t, src)
	src.mu.Lock()
	src.err = &Error{Name: "orders", StatusCode: 503, Code: "not_ready"}
	src.mu.Unlock()
	if _, err := pool.Exec(context.Background(), "SELECT 1"); !errors.Is(err, ErrNotReady) {
		t.Errorf("err = %v, want ErrNotReady", err)
	}
}

// TestPoolWithClient goes through the HTTP client and a fake extension. A
// credential with less than the retire margin left is read too, not fetched
// with ?refresh=true.
func TestPoolWithClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		left time.Duration
	}{{"fresh", 10 * time.Minute}, {"near expiry", 10 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			a := createRole(t, "")
			f := newFakeExtension(t)
			f.creds["orders"] = a.credential("lease-a", time.Now().Add(tc.left))
			pool := newPool(t, New(WithBaseURL(f.URL), WithToken(testToken)))
			if user, _ := whoami(t, pool); user != a.name {
				t.Errorf("current_user = %s, want %s", user, a.name)
			}
			if req, ref := f.counts(); req < 2 || ref != 0 {
				t.Errorf("extension saw %d requests, %d refreshes; want >= 2, 0", req, ref)
			}
		})
	}
}

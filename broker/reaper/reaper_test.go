package reaper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/pgrole/pgroletest"
	"github.com/ephemera-sh/ephemera/broker/reaper"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

func superuserExec(ctx context.Context, sql string) (int64, error) {
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql)
	return tag.RowsAffected(), err
}

// fixture is one database's store, reaper and audit output.
type fixture struct {
	store  *lease.Store
	reaper *reaper.Reaper
	lines  *bytes.Buffer
	now    time.Time
}

func newFixture(t *testing.T, name string, cfg reaper.Config) *fixture {
	t.Helper()
	f := &fixture{store: lease.NewStore(admin, name), lines: &bytes.Buffer{}}
	log := audit.New(&lockedWriter{w: f.lines}, nil)
	f.reaper = reaper.New(map[string]*lease.Store{name: f.store}, log, nil, cfg)
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type issued struct {
	lease    *lease.Lease
	password string
}

// issue creates a lease (and role) that started issuedAgo ago and lasts ttl.
func issue(t *testing.T, s *lease.Store, group string, issuedAgo, ttl time.Duration) issued {
	t.Helper()
	user, pw, v := pgroletest.Login(t, "test", 64)
	l, err := s.Issue(context.Background(), lease.IssueRequest{
		DBRole: "test", MemberOf: []string{group}, Creation: []pgrole.Template{pgrole.DefaultCreation},
		Username: user, Verifier: v, PrincipalARN: "arn:aws:iam::123456789012:role/r", Account: "123456789012",
		Session: "fn", RequestID: "test", IssuedAt: time.Now().Add(-issuedAgo), TTL: ttl, MaxTTL: ttl + time.Hour, MaxLeases: 100000,
	})
	must(t, err)
	return issued{lease: l, password: pw}
}

func connect(t *testing.T, i issued) (*pgx.Conn, error) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.ConnString(i.lease.Username, i.password, pg.Database()))
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func roleExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	must(t, admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&ok))
	return ok
}

func leaseState(t *testing.T, id string) (revoked bool, reason string, attempts int, next *time.Time) {
	t.Helper()
	must(t, admin.QueryRow(context.Background(), `SELECT revoked_at IS NOT NULL, coalesce(revoke_reason, ''), attempts, next_attempt_at
		FROM ephemera.leases WHERE lease_id = $1`, id).Scan(&revoked, &reason, &attempts, &next))
	return
}

// connectedLease starts a fixture named name with the default reaper
// configuration, issues a two-second lease in group and logs in with it.
func connectedLease(t *testing.T, name, group string) (*fixture, issued, *pgx.Conn) {
	t.Helper()
	f := newFixture(t, name, reaper.Config{})
	i := issue(t, f.store, group, 0, 2*time.Second)
	conn, err := connect(t, i)
	must(t, err)
	return f, i, conn
}

func TestReapTerminatesRunningSession(t *testing.T) {
	f, i, conn := connectedLease(t, "sessions", "orders_read")
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "SELECT pg_sleep(600)"); done <- err }()
	// Wait until the sleep is running, then until the lease has expired.
	su, err := pgx.Connect(ctx, pg.URL()) // only a superuser sees other users' query text
	must(t, err)
	defer su.Close(ctx)
	waitFor(t, 5*time.Second, func() bool {
		var n int
		_ = su.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%pg_sleep%'`, i.lease.Username).Scan(&n)
		return n == 1
	})
	time.Sleep(time.Until(i.lease.ExpiresAt) + 100*time.Millisecond)
	sum, err := f.reaper.Reap(ctx, "sessions", 10)
	must(t, err)
	if sum.Revoked != 1 || sum.Failed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("pg_sleep(600) finished without error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived the reaper")
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the next query on the reaped user's connection succeeded")
	}
	if roleExists(t, i.lease.Username) {
		t.Fatal("the role still exists")
	}
	if revoked, reason, _, _ := leaseState(t, i.lease.ID); !revoked || reason != "expired" {
		t.Fatalf("lease revoked=%v reason=%q", revoked, reason)
	}
}

func TestReapReassignsOwnedObjects(t *testing.T) {
	f, i, conn := connectedLease(t, "objects", "orders_write")
	ctx := context.Background()
	table := "scratch.t_" + i.lease.Username[len(i.lease.Username)-6:]
	seq := table + "_seq"
	_, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id int); CREATE SEQUENCE "+seq)
	must(t, err)
	time.Sleep(time.Until(i.lease.ExpiresAt) + 100*time.Millisecond)
	sum, err := f.reaper.Reap(ctx, "objects", 10)
	must(t, err)
	if sum.Revoked != 1 || sum.Failed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if roleExists(t, i.lease.Username) {
		t.Fatal("the role still exists")
	}
	su, err := pgx.Connect(ctx, pg.URL()) // the admin role has no USAGE on the application's schema
	must(t, err)
	defer su.Close(ctx)
	for _, obj := range []string{table, seq} {
		var owner string
		must(t, su.QueryRow(ctx, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = $1::regclass", obj).Scan(&owner))
		if owner != "orders_write" {
			t.Fatalf("%s owned by %q, want orders_write", obj, owner)
		}
	}
	// The admin role gave back the memberships it borrowed.
	if pgroletest.Member(t, admin, "orders_write") {
		t.Fatal("the admin role kept privileges of orders_write")
	}
}

func TestConcurrentReapersOver500Leases(t *testing.T) {
	const n = 500
	a := newFixture(t, "bulk", reaper.Config{Batch: 50})
	b := newFixture(t, "bulk", reaper.Config{Batch: 50})
	ids := map[string]string{}
	for i := 0; i < n; i++ {
		is := issue(t, a.store, "orders_read", 2*time.Hour, time.Minute)
		ids[is.lease.ID] = is.lease.Username
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	sums := make([]reaper.Summary, 2)
	errs := make([]error, 2)
	start := time.Now()
	for k, f := range []*fixture{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); sums[k], errs[k] = f.reaper.Reap(ctx, "bulk", n) }()
	}
	wg.Wait()
	elapsed := time.Since(start)
	must(t, errors.Join(errs...))
	if got := sums[0].Revoked + sums[1].Revoked; got != n || sums[0].Failed+sums[1].Failed != 0 {
		t.Fatalf("revoked %d (%+v, %+v), want %d and no failures", got, sums[0], sums[1], n)
	}
	t.Logf("two reapers revoked %d leases in %s (%.0f leases/s); split %d/%d", n, elapsed, n/elapsed.Seconds(), sums[0].Revoked, sums[1].Revoked)
	var rows, distinct, left int
	must(t, admin.QueryRow(ctx, `SELECT count(*), count(DISTINCT lease_id) FROM ephemera.audit_log
		WHERE event = 'reap' AND database = 'bulk'`).Scan(&rows, &distinct))
	if rows != n || distinct != n {
		t.Fatalf("%d reap audit rows for %d leases, want exactly one each", rows, distinct)
	}
	must(t, admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)`, values(ids)).Scan(&left))
	if left != 0 {
		t.Fatalf("%d roles left", left)
	}
}

func TestReaperKilledBetweenTerminateAndDrop(t *testing.T) {
	f := newFixture(t, "killed", reaper.Config{})
	i := issue(t, f.store, "orders_read", time.Hour, time.Minute)
	crash := errors.New("simulated crash after terminating sessions")
	f.store.SetHooks(&lease.Hooks{AfterTerminate: func(context.Context, *lease.Lease) error { return crash }})
	if _, err := f.reaper.Reap(context.Background(), "killed", 10); !errors.Is(err, crash) {
		t.Fatalf("first run error %v, want the crash", err)
	}
	if revoked, _, _, _ := leaseState(t, i.lease.ID); revoked || !roleExists(t, i.lease.Username) {
		t.Fatal("a crashed run committed part of its work")
	}
	f.store.SetHooks(nil)
	sum, err := f.reaper.Reap(context.Background(), "killed", 10)
	must(t, err)
	if sum.Revoked != 1 || roleExists(t, i.lease.Username) {
		t.Fatalf("next run: %+v, role exists %v", sum, roleExists(t, i.lease.Username))
	}
}

func TestFailureBacksOffAndNeverStopsTheBatch(t *testing.T) {
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	f := newFixture(t, "flaky", reaper.Config{Now: now})
	bad := issue(t, f.store, "orders_read", time.Hour, time.Minute)
	good := issue(t, f.store, "orders_read", time.Hour, time.Minute)
	failing := true
	f.store.SetHooks(&lease.Hooks{BeforeDrop: func(_ context.Context, l *lease.Lease) error {
		if failing && l.ID == bad.lease.ID {
			return errors.New("simulated failure")
		}
		return nil
	}})
	ctx := context.Background()
	for attempt := 1; attempt <= 3; attempt++ {
		sum, err := f.reaper.Reap(ctx, "flaky", 10)
		must(t, err)
		if sum.Failed != 1 {
			t.Fatalf("attempt %d: %+v", attempt, sum)
		}
		revoked, _, attempts, next := leaseState(t, bad.lease.ID)
		if revoked || attempts != attempt || next == nil {
			t.Fatalf("attempt %d: revoked=%v attempts=%d next=%v", attempt, revoked, attempts, next)
		}
		wantDelay := time.Second << (attempt - 1)
		if d := next.Sub(now()); d < wantDelay-time.Second || d > wantDelay+time.Second {
			t.Fatalf("attempt %d: next attempt in %s, want about %s", attempt, d, wantDelay)
		}
		// Before the backoff passes, the lease is not retried.
		if sum, _ := f.reaper.Reap(ctx, "flaky", 10); sum.Failed != 0 || sum.Revoked != 0 {
			t.Fatalf("retried during backoff: %+v", sum)
		}
		mu.Lock()
		clock = next.Add(time.Millisecond)
		mu.Unlock()
	}
	if revoked, _, _, _ := leaseState(t, good.lease.ID); !revoked {
		t.Fatal("a failure stopped the batch: the good lease was not revoked")
	}
	// The backoff is capped at 5 minutes.
	_, err := admin.Exec(ctx, "UPDATE ephemera.leases SET attempts = 40 WHERE lease_id = $1", bad.lease.ID)
	must(t, err)
	_, err = f.reaper.Reap(ctx, "flaky", 10)
	must(t, err)
	_, _, _, next := leaseState(t, bad.lease.ID)
	if d := next.Sub(now()); d > lease.MaxBackoff+time.Second {
		t.Fatalf("backoff %s exceeds the cap", d)
	}
	mu.Lock()
	clock = next.Add(time.Millisecond)
	mu.Unlock()
	failing = false
	sum, err := f.reaper.Reap(ctx, "flaky", 10)
	must(t, err)
	if sum.Revoked != 1 || roleExists(t, bad.lease.Username) {
		t.Fatalf("after recovery: %+v", sum)
	}
}

func TestDatabaseUnreachableLosesNothing(t *testing.T) {
	ctx := context.Background()
	good := newFixture(t, "outage", reaper.Config{})
	var leases []issued
	for i := 0; i < 3; i++ {
		leases = append(leases, issue(t, good.store, "orders_read", time.Hour, time.Minute))
	}
	// A pool that cannot reach the server (nothing listens on the port).
	cfg, err := pgxpool.ParseConfig(pg.ConnString(setup.AdminUser, setup.AdminPassword, pg.Database()))
	must(t, err)
	cfg.ConnConfig.Port = 1
	cfg.ConnConfig.ConnectTimeout = time.Second
	down, err := pgxpool.NewWithConfig(ctx, cfg)
	must(t, err)
	defer down.Close()
	r := reaper.New(map[string]*lease.Store{"outage": lease.NewStore(down, "outage")}, nil, nil, reaper.Config{})
	sum, err := r.Run(ctx)
	if err == nil || len(sum.Errors) == 0 {
		t.Fatalf("a run against an unreachable database reported no error: %+v", sum)
	}
	for _, l := range leases {
		if revoked, _, _, _ := leaseState(t, l.lease.ID); revoked || !roleExists(t, l.lease.Username) {
			t.Fatal("state changed while the database was unreachable")
		}
	}
	sum, err = good.reaper.Reap(ctx, "outage", 10)
	must(t, err)
	if sum.Revoked != 3 {
		t.Fatalf("after the database returned: %+v", sum)
	}
}

func TestRoleDroppedByHand(t *testing.T) {
	f := newFixture(t, "byhand", reaper.Config{})
	i := issue(t, f.store, "orders_read", time.Hour, time.Minute)
	ident, _ := pgrole.QuoteIdentifier(i.lease.Username)
	_, err := admin.Exec(context.Background(), "DROP ROLE "+ident)
	must(t, err)
	sum, err := f.reaper.Reap(context.Background(), "byhand", 10)
	must(t, err)
	revoked, reason, attempts, _ := leaseState(t, i.lease.ID)
	if sum.Revoked != 1 || !revoked || attempts != 0 || reason != "expired (role already gone)" {
		t.Fatalf("summary %+v revoked=%v reason=%q attempts=%d", sum, revoked, reason, attempts)
	}
	if sum, _ := f.reaper.Reap(context.Background(), "byhand", 10); sum.Revoked+sum.Failed != 0 {
		t.Fatalf("a revoked lease was retried: %+v", sum)
	}
}

// TestSweep: a marked orphan (a user of this deployment that no lease
// claims) is swept after the grace period, with its audit row; roles made
// by hand are not, even with an ephemeral-looking name.
func TestSweep(t *testing.T) {
	ctx := context.Background()
	clock := time.Now()
	f := newFixture(t, "sweep", reaper.Config{SweepGrace: time.Minute, Now: func() time.Time { return clock }})
	live := issue(t, f.store, "orders_read", 0, time.Hour)
	marker, err := f.store.MarkerGroup(ctx)
	must(t, err)
	orphan, err := pgrole.NewUsername("gone")
	must(t, err)
	orphanIdent, _ := pgrole.QuoteIdentifier(orphan)
	markerIdent, _ := pgrole.QuoteIdentifier(marker)
	_, err = superuserExec(ctx, "CREATE ROLE "+orphanIdent+" LOGIN IN ROLE orders_read, "+markerIdent+
		"; CREATE ROLE eph_but_not_ours; CREATE ROLE app_user; CREATE ROLE eph_etl_transactions LOGIN IN ROLE orders_read")
	must(t, err)
	t.Cleanup(func() {
		_, _ = superuserExec(ctx, "DROP ROLE IF EXISTS eph_but_not_ours; DROP ROLE IF EXISTS app_user; DROP ROLE IF EXISTS eph_etl_transactions")
	})

	sum, err := f.reaper.Run(ctx)
	must(t, err)
	if sum.Swept != 0 || !roleExists(t, orphan) {
		t.Fatalf("swept before the grace period: %+v", sum)
	}
	clock = clock.Add(2 * time.Minute)
	sum, err = f.reaper.Run(ctx)
	must(t, err)
	if sum.Swept != 1 || roleExists(t, orphan) {
		t.Fatalf("orphan not swept after grace: %+v", sum)
	}
	for _, keep := range []string{live.lease.Username, "eph_but_not_ours", "app_user", "eph_etl_transactions"} {
		if !roleExists(t, keep) {
			t.Fatalf("the sweep dropped %s", keep)
		}
	}
	var rows int
	must(t, admin.QueryRow(ctx, `SELECT count(*) FROM ephemera.audit_log WHERE event = 'sweep' AND username = $1`, orphan).Scan(&rows))
	if rows != 1 {
		t.Fatalf("%d sweep audit rows, want 1", rows)
	}
}

func TestExpiredLoginFailsBeforeReap(t *testing.T) {
	f := newFixture(t, "validuntil", reaper.Config{})
	i := issue(t, f.store, "orders_read", 0, 2*time.Second)
	if _, err := connect(t, i); err != nil {
		t.Fatalf("login before expiry: %v", err)
	}
	time.Sleep(time.Until(i.lease.ExpiresAt) + 200*time.Millisecond)
	if _, err := connect(t, i); err == nil {
		t.Fatal("login after VALID UNTIL succeeded")
	}
	if !roleExists(t, i.lease.Username) {
		t.Fatal("test premise: no reaper ran, the role must still exist")
	}
}

func TestHousekeeping(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "house", reaper.Config{AuditRetention: 24 * time.Hour})
	_, err := f.store.UseNonce(ctx, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", time.Now().Add(-time.Minute))
	must(t, err)
	_, err = f.store.UseNonce(ctx, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", time.Now().Add(time.Minute))
	must(t, err)
	must(t, f.store.AppendAudit(ctx, audit.Record{Time: time.Now().Add(-48 * time.Hour), RequestID: "old", Event: "issue", Decision: "allow", Database: "house"}))
	must(t, f.store.AppendAudit(ctx, audit.Record{Time: time.Now(), RequestID: "new", Event: "issue", Decision: "allow", Database: "house"}))
	sum, err := f.reaper.Run(ctx)
	must(t, err)
	if sum.NoncesDeleted < 1 || sum.AuditPruned < 1 {
		t.Fatalf("summary %+v", sum)
	}
	var nonce, old, recent int
	must(t, admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM ephemera.nonces WHERE nonce = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'),
		(SELECT count(*) FROM ephemera.audit_log WHERE request_id = 'old'),
		(SELECT count(*) FROM ephemera.audit_log WHERE request_id = 'new')`).Scan(&nonce, &old, &recent))
	if nonce != 1 || old != 0 || recent != 1 {
		t.Fatalf("live nonce %d, old audit %d, recent audit %d", nonce, old, recent)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	if !observe.Until(d, cond) {
		t.Fatal("condition not met in time")
	}
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkReap1000 revokes a batch of 1,000 expired leases with one reaper
// and reports leases/s (make bench; the issue note quotes it).
func BenchmarkReap1000(b *testing.B) {
	t := &testing.T{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFixture(t, fmt.Sprintf("bench%d", i), reaper.Config{})
		for j := 0; j < 1000; j++ {
			issue(t, f.store, "orders_read", 2*time.Hour, time.Minute)
		}
		b.StartTimer()
		start := time.Now()
		sum, err := f.reaper.Reap(context.Background(), fmt.Sprintf("bench%d", i), 1000)
		if err != nil || sum.Revoked != 1000 {
			b.Fatalf("%+v %v", sum, err)
		}
		b.ReportMetric(1000/time.Since(start).Seconds(), "leases/s")
	}
}

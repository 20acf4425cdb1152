package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// issueState reports what an issue left behind.
func issueState(t *testing.T, username, requestID string) (role bool, leases, auditRows int) {
	t.Helper()
	ctx := context.Background()
	must(t, admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		(SELECT count(*) FROM ephemera.leases WHERE username = $1),
		(SELECT count(*) FROM ephemera.audit_log WHERE request_id = $2)`, username, requestID).Scan(&role, &leases, &auditRows))
	return
}

// killWhenBlocked terminates the admin backend that waits on a lock, once
// it does, and reports whether it killed one.
func killWhenBlocked(t *testing.T, su *pgx.Conn) bool {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(4 * time.Second) // under the hardened lock_timeout (5 s)
	for time.Now().Before(deadline) {
		var killed bool
		err := su.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
			WHERE usename = 'ephemera_admin' AND wait_event_type = 'Lock'`).Scan(&killed)
		must(t, err)
		if killed {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestIssueCrashPoints kills the issuing backend at three points of the
// issue transaction — after the role statements, while it waits for the
// per-role lock (role created and granted), and after the lease row while
// it writes the audit row — and each time nothing remains: no role, no
// lease, no audit row.
func TestIssueCrashPoints(t *testing.T) {
	ctx := context.Background()
	points := []struct {
		name string
		// block, run as the superuser in its own transaction, makes the
		// issue wait at the crash point (nil: the hook kills instead).
		block func(su pgx.Tx, s *lease.Store, r lease.IssueRequest) error
	}{
		{"after the role statements", nil},
		{"waiting for the per-role lock", func(su pgx.Tx, s *lease.Store, r lease.IssueRequest) error {
			_, err := su.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ephemera.leases/"+s.Database()+"/"+r.DBRole)
			return err
		}},
		{"writing the audit row", func(su pgx.Tx, _ *lease.Store, _ lease.IssueRequest) error {
			_, err := su.Exec(ctx, "LOCK TABLE ephemera.audit_log IN EXCLUSIVE MODE")
			return err
		}},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) {
			s := lease.NewStore(admin, randomName("crash_"))
			r := issueRequest(t, time.Minute)
			r.RequestID = randomName("crash-")
			r.Audit = audit.Record{RequestID: r.RequestID, Event: audit.EventIssue}
			killer, err := pgx.Connect(ctx, pg.URL())
			must(t, err)
			defer killer.Close(ctx)
			if p.block == nil {
				s.SetBeforeLeaseInsert(func(ctx context.Context) error {
					var pid int
					if err := killer.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE usename = 'ephemera_admin'
						AND state = 'idle in transaction' ORDER BY xact_start DESC LIMIT 1`).Scan(&pid); err != nil {
						return err
					}
					_, err := killer.Exec(ctx, "SELECT pg_terminate_backend($1)", pid)
					return err
				})
			} else {
				holder, err := pgx.Connect(ctx, pg.URL())
				must(t, err)
				defer holder.Close(ctx)
				tx, err := holder.Begin(ctx)
				must(t, err)
				defer tx.Rollback(ctx) //nolint:errcheck
				must(t, p.block(tx, s, r))
			}
			done := make(chan error, 1)
			go func() { _, err := s.Issue(ctx, r); done <- err }()
			if p.block != nil && !killWhenBlocked(t, killer) {
				t.Fatal("the issue never waited at the crash point")
			}
			if err := <-done; err == nil {
				t.Fatal("Issue succeeded although its backend was killed")
			} else if !lease.Unavailable(err) {
				t.Errorf("a killed backend's error is not Unavailable: %v", err)
			}
			if role, leases, rows := issueState(t, r.Username, r.RequestID); role || leases != 0 || rows != 0 {
				t.Fatalf("left behind: role %v, %d lease rows, %d audit rows", role, leases, rows)
			}
		})
	}
}

// TestRenewsRacingRevoke: 16 renewers hammer one lease while it is
// revoked. Once the revocation's first step has committed, no renewal
// succeeds: the lease's expiry stays at (or before) the moment the
// revocation began, VALID UNTIL no longer moves, and a renewal begun after
// Revoke returned fails with ErrRevoked. (The role is kept alive past step
// 1 by objects it owns in a database the admin cannot reach, so VALID
// UNTIL can be read afterwards.)
func TestRenewsRacingRevoke(t *testing.T) {
	ctx := context.Background()
	const renewers = 16
	other := otherDatabase(t, false)
	s := lease.NewStore(admin, randomName("race_"))
	l, pw := issueWithPassword(t, s, "orders_write", time.Minute)
	plant(t, l, pw, other)
	racers, err := adminPool(ctx, adminDSNFor(pg.Database()), renewers)
	must(t, err)
	defer racers.Close()
	rs := lease.NewStore(racers, s.Database())

	var ok, revokedSeen atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{}) // ends the renewers if a bug lets them go on
	defer func() { close(stop); wg.Wait() }()
	var unexpected []error
	var mu sync.Mutex
	for range renewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := rs.Renew(ctx, lease.RenewRequest{ID: l.ID, TTL: 30 * time.Minute, Renewal: []pgrole.Template{pgrole.DefaultRenewal},
					Audit: audit.Record{RequestID: "race", Event: audit.EventRenew}})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, lease.ErrRevoked):
					revokedSeen.Add(1)
					return
				default:
					mu.Lock()
					unexpected = append(unexpected, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	for ok.Load() < renewers { // the race is on
		time.Sleep(time.Millisecond)
	}
	_, _, revokeErr := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "race", Audit: audit.Record{RequestID: "race", Event: audit.EventRevoke}})
	if revokeErr == nil {
		t.Fatal("premise: the revocation's last step should fail (unreachable database)")
	}
	var validUntil, expires, started time.Time
	var canLogin bool
	snapshot := func() {
		must(t, admin.QueryRow(ctx, `SELECT r.rolvaliduntil, r.rolcanlogin, l.expires_at, l.revoke_started_at
			FROM pg_roles r, ephemera.leases l WHERE r.rolname = l.username AND l.lease_id = $1`, l.ID).Scan(&validUntil, &canLogin, &expires, &started))
	}
	snapshot()
	wantValidUntil := validUntil
	for range 5 {
		if _, err := rs.Renew(ctx, lease.RenewRequest{ID: l.ID, TTL: time.Hour, Renewal: []pgrole.Template{pgrole.DefaultRenewal}}); !errors.Is(err, lease.ErrRevoked) {
			t.Fatalf("a renewal after Revoke returned: %v, want ErrRevoked", err)
		}
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	mu.Lock()
	defer mu.Unlock()
	if len(unexpected) > 0 {
		t.Fatalf("renewals failed otherwise than ErrRevoked: %v", unexpected)
	}
	if revokedSeen.Load() == 0 {
		t.Fatal("no renewer raced into the revocation")
	}
	snapshot()
	if canLogin {
		t.Fatal("the role can still log in after the revocation began")
	}
	if expires.After(started) {
		t.Fatalf("expires_at %s is past the revocation's start %s: a renewal won after it", expires, started)
	}
	if !validUntil.Equal(wantValidUntil) {
		t.Fatalf("VALID UNTIL moved after the revocation: %s → %s", wantValidUntil, validUntil)
	}
	if validUntil.After(started.Add(30 * time.Minute)) {
		t.Fatalf("VALID UNTIL %s is beyond what a renewal before the revocation (%s) could set", validUntil, started)
	}
	t.Logf("%d renewals succeeded before the revocation", ok.Load())
}

// TestMaxLeasesUnder64ConcurrentIssues: 64 issues at once, each on its own
// connection, against max_leases 5: exactly 5 succeed, and the refused
// ones leave no role.
func TestMaxLeasesUnder64ConcurrentIssues(t *testing.T) {
	ctx := context.Background()
	const n = 64
	pool, err := adminPool(ctx, adminDSNFor(pg.Database()), n)
	must(t, err)
	defer pool.Close()
	s := lease.NewStore(pool, randomName("limits_"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	ok, limited := 0, 0
	var leftovers []string
	var errs []error
	for range n {
		r := issueRequest(t, time.Minute)
		r.MaxLeases = 5
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := s.Issue(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, lease.ErrLimit):
				limited++
				leftovers = append(leftovers, r.Username)
			default:
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("issues failed: %v", errs)
	}
	if ok != 5 || limited != n-5 {
		t.Fatalf("ok %d limited %d, want 5 and %d", ok, limited, n-5)
	}
	for _, u := range leftovers {
		if roleExists(t, u) {
			t.Fatalf("a refused issue left role %s", u)
		}
	}
	if live, err := s.CountLive(ctx, "readonly", time.Now()); err != nil || live != 5 {
		t.Fatalf("CountLive %d %v, want 5", live, err)
	}
}

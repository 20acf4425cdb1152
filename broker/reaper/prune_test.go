package reaper_test

import (
	"context"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/reaper"
)

// TestRunPrunesRevokedLeases: 10,000 leases revoked before the audit
// retention are deleted by one reaper run; leases revoked recently stay
// (among them unrevoked ones that expired long ago: the run revokes them,
// it does not delete them), and so do a live lease and other databases'
// rows.
func TestRunPrunesRevokedLeases(t *testing.T) {
	ctx := context.Background()
	const old = 10000
	f := newFixture(t, "prune", reaper.Config{AuditRetention: 24 * time.Hour})
	insert := func(database string, n int, issuedAgo, revokedAgo time.Duration, revoked bool) {
		t.Helper()
		_, err := admin.Exec(ctx, `INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn, account,
				session, member_of, issued_at, expires_at, max_expires_at, request_id, revoked_at, revoke_reason)
			SELECT gen_random_uuid(), $1, 'test', 'eph_prune_' || md5(random()::text), 'arn:aws:iam::123456789012:role/r',
				'123456789012', 'fn', '{orders_read}', now() - $2::interval, now() - $2::interval + interval '1 minute',
				now() - $2::interval + interval '1 hour', 'prune',
				CASE WHEN $4 THEN now() - $3::interval END, CASE WHEN $4 THEN 'expired' END
			FROM generate_series(1, $5)`, database, issuedAgo.String(), revokedAgo.String(), revoked, n)
		must(t, err)
	}
	insert("prune", old, 40*24*time.Hour, 30*24*time.Hour, true)
	insert("prune", 3, 2*time.Hour, time.Hour, true)                     // revoked within the retention
	insert("prune", 2, 40*24*time.Hour, 0, false)                        // unrevoked, however old
	insert("prune_elsewhere", 5, 40*24*time.Hour, 30*24*time.Hour, true) // another database's history
	live := issue(t, f.store, "orders_read", 0, time.Hour)

	sum, err := f.reaper.Run(ctx)
	must(t, err)
	if sum.LeasesPruned != old {
		t.Fatalf("pruned %d lease rows, want %d", sum.LeasesPruned, old)
	}
	if sum.Revoked != 2 {
		t.Fatalf("revoked %d, want the 2 expired leases", sum.Revoked)
	}
	var recent, elsewhere, liveRows int
	must(t, admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM ephemera.leases WHERE database = 'prune' AND revoked_at IS NOT NULL),
		(SELECT count(*) FROM ephemera.leases WHERE database = 'prune_elsewhere'),
		(SELECT count(*) FROM ephemera.leases WHERE lease_id = $1 AND revoked_at IS NULL)`, live.lease.ID).Scan(&recent, &elsewhere, &liveRows))
	if recent != 5 || elsewhere != 5 || liveRows != 1 {
		t.Fatalf("left: recently revoked %d (want 3+2), other database %d (want 5), live %d (want 1)", recent, elsewhere, liveRows)
	}
	// A second run finds nothing more.
	sum, err = f.reaper.Run(ctx)
	must(t, err)
	if sum.LeasesPruned != 0 {
		t.Fatalf("second run pruned %d", sum.LeasesPruned)
	}
}

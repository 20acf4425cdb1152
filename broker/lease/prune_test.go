package lease_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/lease"
)

// seedHistory inserts n leases of database across 200 principals, all but
// every hundredth revoked, and analyzes the table.
func seedHistory(t *testing.T, database string, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := admin.Exec(ctx, `INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn, account,
			session, member_of, issued_at, expires_at, max_expires_at, request_id, revoked_at, revoke_reason)
		SELECT gen_random_uuid(), $1, 'test', 'eph_hist_' || md5(random()::text), 'arn:aws:iam::123456789012:role/p' || (i % 200),
			'123456789012', 'fn', '{orders_read}', now() - interval '2 days', now() - interval '1 day', now() - interval '1 day',
			'history', CASE WHEN i % 100 <> 0 THEN now() - interval '1 day' END, CASE WHEN i % 100 <> 0 THEN 'expired' END
		FROM generate_series(1, $2) i`, database, n)
	must(t, err)
	_, err = admin.Exec(ctx, "ANALYZE ephemera.leases")
	must(t, err)
}

func explain(t *testing.T, query string, args ...any) string {
	t.Helper()
	rows, err := admin.Query(context.Background(), "EXPLAIN "+query, args...)
	must(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	return strings.Join(lines, "\n")
}

// TestLiveByPrincipalUsesIndex: with a history of 20,000 mostly revoked
// leases, a principal's live leases are read through the partial index of
// live leases, not by scanning the table or the principal's history.
func TestLiveByPrincipalUsesIndex(t *testing.T) {
	db := randomName("explain_")
	seedHistory(t, db, 20000)
	// The statement of Store.LiveByPrincipal.
	plan := explain(t, `SELECT lease_id FROM ephemera.leases
		WHERE principal_arn = $1 AND database = $2 AND revoked_at IS NULL ORDER BY issued_at`, "arn:aws:iam::123456789012:role/p7", db)
	if !strings.Contains(plan, "leases_live_by_principal") || strings.Contains(plan, "Seq Scan") {
		t.Fatalf("live-by-principal plan does not use leases_live_by_principal:\n%s", plan)
	}
	s := lease.NewStore(admin, db)
	live, err := s.LiveByPrincipal(context.Background(), "arn:aws:iam::123456789012:role/p0")
	must(t, err)
	if len(live) != 100 { // i % 200 = 0 → i % 100 = 0: every one live
		t.Fatalf("%d live leases of p0, want 100", len(live))
	}
}

// TestDatabasesIsALooseIndexScan: the names holding leases come from one
// index probe per name (no sequential scan), and are each listed once.
func TestDatabasesIsALooseIndexScan(t *testing.T) {
	a, b := randomName("loose_a_"), randomName("loose_b_")
	seedHistory(t, a, 5000)
	seedHistory(t, b, 10)
	s := lease.NewStore(admin, a)
	names, err := s.Databases(context.Background())
	must(t, err)
	if !slices.Contains(names, a) || !slices.Contains(names, b) || !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatalf("Databases: %v", names)
	}
	plan := explain(t, `WITH RECURSIVE names AS (
			(SELECT database FROM ephemera.leases ORDER BY database LIMIT 1)
			UNION ALL
			SELECT (SELECT l.database FROM ephemera.leases l WHERE l.database > n.database ORDER BY l.database LIMIT 1)
			FROM names n WHERE n.database IS NOT NULL)
		SELECT database FROM names WHERE database IS NOT NULL`)
	if !strings.Contains(plan, "leases_by_database") || strings.Contains(plan, "Seq Scan on leases") {
		t.Fatalf("Databases plan does not walk leases_by_database:\n%s", plan)
	}
}

// TestPruneRevokedInBatches: more rows than one batch are pruned in one
// call; live and recent rows stay.
func TestPruneRevokedInBatches(t *testing.T) {
	ctx := context.Background()
	db := randomName("prune_batches_")
	seedHistory(t, db, 2500)
	s := lease.NewStore(admin, db)
	n, err := s.PruneRevoked(ctx, time.Now().Add(-time.Hour))
	must(t, err)
	if n != 2475 {
		t.Fatalf("pruned %d, want the 2475 revoked rows", n)
	}
	var left int
	must(t, admin.QueryRow(ctx, "SELECT count(*) FROM ephemera.leases WHERE database = $1 AND revoked_at IS NULL", db).Scan(&left))
	if left != 25 {
		t.Fatalf("%d live rows left, want 25", left)
	}
}

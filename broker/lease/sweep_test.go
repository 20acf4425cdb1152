package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// TestSweepDropsOnlyMarkedRoles: roles with ephemeral-looking names made by
// hand (eph_etl_transactions is a valid NewUsername shape) are never
// swept, even long after the grace period; an orphan that carries this
// deployment's mark is; a marked role with a live lease is not.
func TestSweepDropsOnlyMarkedRoles(t *testing.T) {
	ctx := context.Background()
	s := lease.NewStore(admin, "sweep")
	marker, err := s.MarkerGroup(ctx)
	must(t, err)
	live, _ := issueWithPassword(t, s, "orders_read", time.Hour)
	var member bool
	must(t, admin.QueryRow(ctx, "SELECT pg_has_role($1, $2, 'MEMBER')", live.Username, marker).Scan(&member))
	if !member {
		t.Fatalf("an issued user is not a member of the marker group %s", marker)
	}

	orphan, err := pgrole.NewUsername("gone")
	must(t, err)
	mark, err := s.MarkStatement(ctx, orphan)
	must(t, err)
	handMade := []string{"eph_etl_transactions", "eph_etl_transactionz"}
	suExec(t, "", `CREATE ROLE eph_etl_transactions LOGIN IN ROLE orders_read;
		CREATE ROLE eph_etl_transactionz LOGIN;
		CREATE ROLE "`+orphan+`" LOGIN IN ROLE orders_read`)
	t.Cleanup(func() {
		suExec(t, "", "DROP ROLE IF EXISTS eph_etl_transactions; DROP ROLE IF EXISTS eph_etl_transactionz")
	})
	_, err = admin.Exec(ctx, mark)
	must(t, err)

	now := time.Now()
	swept, err := s.Sweep(ctx, now, time.Minute, nil, nil)
	must(t, err)
	if len(swept) != 0 {
		t.Fatalf("swept before the grace period: %+v", swept)
	}
	for _, later := range []time.Duration{2 * time.Minute, 48 * time.Hour} {
		swept, err = s.Sweep(ctx, now.Add(later), time.Minute, nil, nil)
		must(t, err)
		for _, r := range swept {
			if r.Err != nil {
				t.Fatalf("sweep of %s failed: %v", r.Username, r.Err)
			}
			if r.Username != orphan {
				t.Fatalf("the sweep dropped %s", r.Username)
			}
		}
		for _, keep := range append([]string{live.Username}, handMade...) {
			if !roleExists(t, keep) {
				t.Fatalf("the sweep dropped %s", keep)
			}
		}
	}
	if roleExists(t, orphan) {
		t.Fatal("the marked orphan survived the sweep after the grace period")
	}
}

// TestMarkerGroupPerDeployment: two deployments on one cluster (two
// databases, each migrated) have two marker groups, so neither sweeps the
// other's users.
func TestMarkerGroupPerDeployment(t *testing.T) {
	ctx := context.Background()
	pool := freshDatabase(t)
	must(t, lease.Migrate(ctx, pool))
	a, err := lease.NewStore(admin, "a").MarkerGroup(ctx)
	must(t, err)
	b, err := lease.NewStore(pool, "b").MarkerGroup(ctx)
	must(t, err)
	if a == b || len(a) < len("ephemera_leased_")+8 {
		t.Fatalf("marker groups %q and %q: want two distinct random names", a, b)
	}
	var canLogin bool
	must(t, admin.QueryRow(ctx, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", b).Scan(&canLogin))
	if canLogin {
		t.Fatal("the marker group can log in")
	}
}

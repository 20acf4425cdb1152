package lease_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// schemaOf describes schema ephemera: every column (type, nullability,
// default) and every index and constraint definition.
func schemaOf(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s string
	must(t, pool.QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(format('%s.%s %s %s %s', c.table_name, c.column_name, c.data_type, c.is_nullable,
			coalesce(c.column_default, '')), E'\n' ORDER BY c.table_name, c.column_name)
			FROM information_schema.columns c WHERE c.table_schema = 'ephemera' AND c.table_name <> 'schema_migrations'), '')
		|| E'\n' ||
		coalesce((SELECT string_agg(indexdef, E'\n' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'ephemera'), '')
		|| E'\n' ||
		coalesce((SELECT string_agg(format('%s %s', conname, pg_get_constraintdef(oid)), E'\n' ORDER BY conname)
			FROM pg_constraint WHERE connamespace = 'ephemera'::regnamespace), '')`).Scan(&s))
	return s
}

func versions(t *testing.T, pool *pgxpool.Pool) (n, max int) {
	t.Helper()
	must(t, pool.QueryRow(context.Background(), "SELECT count(*), coalesce(max(version), 0) FROM ephemera.schema_migrations").Scan(&n, &max))
	return
}

// TestMigrateFromEveryVersion: a database at any earlier version (none at
// all, or 0001..k) is brought to the latest by Migrate, with the same
// schema as a database migrated from empty, and a second Migrate changes
// nothing. A lease issued before the marker group existed is marked by
// migration 0006, so the sweep will recognize it.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	all, err := lease.MigrationVersions()
	must(t, err)
	latest := all[len(all)-1]
	var want string
	for _, from := range append([]int{0}, all...) {
		t.Run(fmt.Sprintf("from_%04d", from), func(t *testing.T) {
			pool := freshDatabase(t)
			must(t, lease.MigrateTo(ctx, pool, from))
			var preexisting string
			if from >= 1 && from < 6 {
				// A role with a live lease, issued before marking existed.
				u, err := pgrole.NewUsername("old")
				must(t, err)
				preexisting = u
				suExec(t, "", `CREATE ROLE "`+u+`" LOGIN`)
				t.Cleanup(func() { suExec(t, "", `DROP ROLE IF EXISTS "`+u+`"`) })
				_, err = pool.Exec(ctx, `INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn, account,
					session, member_of, issued_at, expires_at, max_expires_at, request_id)
					VALUES (gen_random_uuid(), 'old', 'old', $1, 'arn:aws:iam::123456789012:role/r', '123456789012', 'fn',
					'{orders_read}', now(), now() + interval '1 hour', now() + interval '1 hour', 'old')`, u)
				must(t, err)
			}
			if n, max := versions(t, pool); max != from || (from > 0 && n != len(all[:indexOf(all, from)+1])) {
				t.Fatalf("after MigrateTo(%d): %d rows, max version %d", from, n, max)
			}
			must(t, lease.Migrate(ctx, pool))
			if n, max := versions(t, pool); n != len(all) || max != latest {
				t.Fatalf("after Migrate: %d rows, max version %d; want %d and %d", n, max, len(all), latest)
			}
			got := schemaOf(t, pool)
			if want == "" {
				ref := freshDatabase(t)
				must(t, lease.Migrate(ctx, ref))
				want = schemaOf(t, ref)
			}
			if got != want {
				t.Fatalf("schema migrated from %04d differs from the one migrated from empty:\n%s\n--- want\n%s", from, got, want)
			}
			s := lease.NewStore(pool, "old")
			marker, err := s.MarkerGroup(ctx)
			must(t, err)
			must(t, lease.Migrate(ctx, pool)) // idempotent
			if n, max := versions(t, pool); n != len(all) || max != latest || schemaOf(t, pool) != got {
				t.Fatalf("a second Migrate changed something: %d rows, max %d", n, max)
			}
			again, err := lease.NewStore(pool, "old").MarkerGroup(ctx)
			must(t, err)
			if again != marker {
				t.Fatalf("marker group changed on a second Migrate: %s → %s", marker, again)
			}
			if preexisting != "" {
				var member bool
				must(t, pool.QueryRow(ctx, "SELECT pg_has_role($1, $2, 'MEMBER')", preexisting, marker).Scan(&member))
				if !member {
					t.Fatalf("the user of a lease issued before 0006 is not marked")
				}
			}
		})
	}
}

func indexOf(xs []int, x int) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return -1
}

package reaper_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package (300 connections, for the
// concurrency tests), prepared as an operator would and migrated as the
// broker would; admin is the broker's admin role on it.
var (
	pg    *pgserver.Server
	setup *demodb.Setup
	admin *pgxpool.Pool
)

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{MaxConnections: 300}, func(ctx context.Context, s *pgserver.Server) (_ func(), err error) {
		pg = s
		if setup, admin, err = demodb.AdminPool(ctx, s); err != nil {
			return nil, err
		}
		// A schema where orders_write may create objects (for the owned-objects test).
		_, err = superuserExec(ctx, `CREATE SCHEMA IF NOT EXISTS scratch; GRANT USAGE, CREATE ON SCHEMA scratch TO orders_write`)
		return admin.Close, err
	})
}

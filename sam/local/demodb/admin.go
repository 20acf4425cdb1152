package demodb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// AdminPool prepares the database of srv with Bootstrap, then opens a pool
// as the broker's admin role and creates the broker's schema with it
// (lease.Migrate), as the broker does when it starts: the database as the
// lease store, the reaper and the operator CLI find it. The caller closes
// the pool.
func AdminPool(ctx context.Context, srv *pgserver.Server) (*Setup, *pgxpool.Pool, error) {
	setup, err := Bootstrap(ctx, srv.URL())
	if err != nil {
		return nil, nil, err
	}
	pc, err := pgxpool.ParseConfig(srv.ConnString(setup.AdminUser, setup.AdminPassword, srv.Database()))
	if err != nil {
		return nil, nil, fmt.Errorf("demodb: admin pool: %w", err)
	}
	admindb.Harden(pc.ConnConfig) // as the broker and the reaper connect
	pc.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, nil, fmt.Errorf("demodb: admin pool: %w", err)
	}
	if err := lease.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, nil, fmt.Errorf("demodb: %w", err)
	}
	return setup, pool, nil
}

package lease_test

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
)

// adminPool opens a pool the way the broker does: every connection
// hardened by admindb.Harden (search_path pinned to pg_catalog, pg_temp).
// maxConns 0 keeps pgxpool's default.
func adminPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	admindb.Harden(pc.ConnConfig)
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

package lease_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package, prepared as an operator would
// and migrated as the broker would; admin is the broker's admin role on it.
var (
	pg    *pgserver.Server
	admin *pgxpool.Pool
)

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (_ func(), err error) {
		pg = s
		if _, admin, err = demodb.AdminPool(ctx, s); err != nil {
			return nil, err
		}
		return admin.Close, nil
	})
}

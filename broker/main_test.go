package broker_test

import (
	"context"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the whole package, prepared as an operator
// would (never skipped: if it cannot start, the package fails).
var (
	pg    *pgserver.Server
	setup *demodb.Setup
)

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{LogStatements: true}, func(ctx context.Context, s *pgserver.Server) (_ func(), err error) {
		pg = s
		setup, err = demodb.Bootstrap(ctx, s.URL())
		return nil, err
	})
}

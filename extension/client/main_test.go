package client

import (
	"context"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package (never skipped: if it cannot
// start, the package fails).
var pg *pgserver.Server

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{}, func(_ context.Context, s *pgserver.Server) (func(), error) {
		pg = s
		return nil, nil
	})
}

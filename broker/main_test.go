package broker_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the whole package (started in TestMain, never
// skipped: if it cannot start, the package fails).
var (
	pg    *pgserver.Server
	setup *demodb.Setup
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	var err error
	pg, err = pgserver.Start(ctx, pgserver.Options{LogStatements: true})
	if err == nil {
		setup, err = demodb.Bootstrap(ctx, pg.URL())
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: test PostgreSQL:", err)
		if pg != nil {
			_ = pg.Stop()
		}
		os.Exit(1)
	}
	code := m.Run()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping test PostgreSQL:", err)
	}
	os.Exit(code)
}

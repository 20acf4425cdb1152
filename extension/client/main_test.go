package client

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package (never skipped: if it cannot
// start, the package fails).
var pg *pgserver.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	var err error
	pg, err = pgserver.Start(ctx, pgserver.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: test PostgreSQL:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping test PostgreSQL:", err)
	}
	os.Exit(code)
}

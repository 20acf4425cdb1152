package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package, with public.orders and two
// login roles: reader may read it, stranger may not.
var (
	pg       *pgserver.Server
	reader   login
	stranger login
)

type login struct{ user, password string }

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (func(), error) {
		pg = s
		return func() {
			if err := unseed(); err != nil {
				fmt.Fprintln(os.Stderr, "dropping test roles:", err)
			}
		}, seed(ctx)
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func seed(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// Roles are per cluster: random names keep parallel packages apart
	// when EPHEMERA_TEST_DATABASE_URL points at a shared server.
	suffix := randomHex(4)
	reader = login{"demo_reader_" + suffix, "pw-" + randomHex(16)}
	stranger = login{"demo_stranger_" + suffix, "pw-" + randomHex(16)}
	for _, sql := range []string{
		`CREATE TABLE public.orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL)`,
		`INSERT INTO public.orders VALUES (2, 'teapot', 1), (1, 'espresso beans', 3), (3, 'mug', 6)`,
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, reader.user, reader.password),
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, stranger.user, stranger.password),
		fmt.Sprintf(`GRANT SELECT ON public.orders TO %s`, reader.user),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

func unseed() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, u := range []string{reader.user, stranger.user} {
		if _, err := conn.Exec(ctx, "DROP OWNED BY "+u+"; DROP ROLE "+u); err != nil {
			return err
		}
	}
	return nil
}

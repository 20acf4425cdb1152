// Package demodb prepares a PostgreSQL database the way an operator would
// for ephemera (README "Database setup"), for tests and the local demo:
//
//   - ephemera_admin: LOGIN CREATEROLE, pg_signal_backend (to end sessions
//     of revoked users), CREATE on the database (for schema ephemera), and
//     nothing else: not a superuser, no access to application tables;
//   - group roles orders_read (SELECT on public.orders) and orders_write;
//   - public.orders with a few rows, and public.payroll that no group can read.
//
// On PostgreSQL 16 and later ephemera_admin also gets ADMIN OPTION (without
// INHERIT or SET) on the groups, which PostgreSQL 16 requires to grant them.
package demodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// AdminUser is the broker's admin role name.
const AdminUser = "ephemera_admin"

// Groups are the group roles the demo configuration grants.
var Groups = []string{"orders_read", "orders_write"}

// Setup is what Bootstrap made.
type Setup struct {
	AdminUser     string
	AdminPassword string // random, per Bootstrap; sent to the server only as a SCRAM verifier
}

// Bootstrap prepares the database that superuserDSN connects to. It is
// idempotent, so it also works on an existing server.
func Bootstrap(ctx context.Context, superuserDSN string) (*Setup, error) {
	conn, err := pgx.Connect(ctx, superuserDSN)
	if err != nil {
		return nil, fmt.Errorf("demodb: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var pw [18]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, fmt.Errorf("demodb: %w", err)
	}
	password := hex.EncodeToString(pw[:])
	verifier, err := pgrole.SCRAMVerifier(password, pgrole.DefaultSCRAMIterations)
	if err != nil {
		return nil, fmt.Errorf("demodb: %w", err)
	}
	lit, _ := pgrole.QuoteLiteral(verifier)
	var dbname string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbname); err != nil {
		return nil, fmt.Errorf("demodb: %w", err)
	}
	dbIdent, err := pgrole.QuoteIdentifier(dbname)
	if err != nil {
		return nil, fmt.Errorf("demodb: %w", err)
	}
	stmts := []string{
		`DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ephemera_admin') THEN CREATE ROLE ephemera_admin; END IF;
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_read') THEN CREATE ROLE orders_read NOLOGIN; END IF;
			IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_write') THEN CREATE ROLE orders_write NOLOGIN; END IF;
		END $$`,
		`ALTER ROLE ephemera_admin WITH LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD ` + lit,
		`GRANT pg_signal_backend TO ephemera_admin`,
		`GRANT CONNECT, CREATE ON DATABASE ` + dbIdent + ` TO ephemera_admin`,
		`DO $$ BEGIN
			IF current_setting('server_version_num')::int >= 160000 THEN
				EXECUTE 'GRANT orders_read, orders_write TO ephemera_admin WITH ADMIN OPTION, INHERIT FALSE, SET FALSE';
			END IF;
		END $$`,
		`CREATE TABLE IF NOT EXISTS public.orders (id integer PRIMARY KEY, item text NOT NULL, qty integer NOT NULL)`,
		`INSERT INTO public.orders VALUES (1, 'espresso beans', 3), (2, 'oat milk', 12), (3, 'paper filters', 200)
			ON CONFLICT (id) DO NOTHING`,
		`CREATE TABLE IF NOT EXISTS public.payroll (employee text PRIMARY KEY, salary numeric NOT NULL)`,
		`REVOKE ALL ON public.orders, public.payroll FROM PUBLIC`,
		`GRANT SELECT ON public.orders TO orders_read`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO orders_write`,
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("demodb: bootstrap: %w", err)
		}
	}
	return &Setup{AdminUser: AdminUser, AdminPassword: password}, nil
}

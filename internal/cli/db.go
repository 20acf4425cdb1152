package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

// EnvDatabaseURL is the environment variable behind --url.
const EnvDatabaseURL = "EPHEMERA_DATABASE_URL"

const urlHint = "Pass --url 'postgres://ephemera_admin@HOST:5432/DBNAME?sslmode=verify-full' or set " + EnvDatabaseURL + "."

// dbFlags are the flags every database command has.
type dbFlags struct {
	url      string
	database string
}

func (d *dbFlags) register(fs *flag.FlagSet, databaseUsage string) {
	fs.StringVar(&d.url, "url", "", "PostgreSQL `URL` of the broker's admin role on the target database (default $"+EnvDatabaseURL+")")
	fs.StringVar(&d.database, "database", "", databaseUsage)
}

const databaseFilterUsage = "only the database configured as `NAME` (default: every name in ephemera.leases)"

// openDB connects to the target database and checks that it holds
// ephemera's schema. The DSN's password is remembered for redaction.
func (c *CLI) openDB(ctx context.Context, rawURL string) (*pgxpool.Pool, error) {
	if rawURL == "" {
		v, _ := c.Getenv(EnvDatabaseURL)
		rawURL = strings.TrimSpace(v)
	}
	if rawURL == "" {
		return nil, usagef(urlHint, "no database: --url is empty and %s is not set", EnvDatabaseURL)
	}
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		// The parse error may quote the URL, password included: do not wrap it.
		return nil, usagef(urlHint, "--url does not parse as a PostgreSQL URL")
	}
	if pw := pc.ConnConfig.Password; len(pw) >= 3 {
		c.secrets = append(c.secrets, pw)
	}
	admindb.Harden(pc.ConnConfig) // search_path pinned: the CLI trusts no user object either
	pc.ConnConfig.RuntimeParams["application_name"] = "ephemera-cli"
	pc.ConnConfig.RuntimeParams["statement_timeout"] = "30000"
	pc.ConnConfig.RuntimeParams["lock_timeout"] = "10000"
	pc.MaxConns = 4
	where := fmt.Sprintf("%s@%s:%d/%s", pc.ConnConfig.User, pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err // pgx names the user, database and host
	}
	ok, err := lease.CheckSchema(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("reading %s: %w", where, err)
	}
	if !ok {
		pool.Close()
		return nil, fmt.Errorf("%s has no ephemera.leases table (or this login cannot see it): point --url at a database the broker manages, as its admin role", where)
	}
	return pool, nil
}

// labels returns the configured database names to work on: only is one,
// else every name found in ephemera.leases.
func labels(ctx context.Context, pool *pgxpool.Pool, only string) ([]string, error) {
	if only != "" {
		return []string{only}, nil
	}
	names, err := lease.DatabaseNames(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	return names, nil
}

// stores returns the lease stores of the names, all over the one pool the
// CLI opened (lease rows carry their database's configured name).
func stores(pool *pgxpool.Pool, names []string) *lease.Stores {
	pools := make(map[string]*pgxpool.Pool, len(names))
	for _, n := range names {
		pools[n] = pool
	}
	return lease.NewStores(pools)
}

var (
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// canonicalPrincipal reads --principal as the broker reads principal_arn:
// a role ARN (canonical or with a path), an assumed-role ARN of it, or an
// IAM user ARN; leases are held by the canonical, path-less ARN.
func canonicalPrincipal(arn string) (string, error) {
	c, err := attest.CanonicalPrincipalARN(arn, true)
	if err != nil {
		return "", usagef("Pass the role's ARN, e.g. --principal arn:aws:iam::123456789012:role/orders-api.", "--principal: %v", err)
	}
	return c, nil
}

var errNoLease = errors.New("no such lease")

package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"time"

	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/jackc/pgx/v5/pgxpool"
)

func leasesCommand() *command {
	return &command{
		name:     "leases",
		summary:  "list live leases: who holds a database user right now",
		synopsis: "[--url URL] [--database NAME] [--all] [--json]",
		help: `Lists the live leases (neither revoked nor expired) of the target database,
oldest first: lease id, principal (canonical IAM role ARN), function (the
role session: the Lambda function name), database/role, the PostgreSQL
username, and when it was issued and expires (RFC 3339, UTC).

--all also lists leases that have expired but are not revoked yet (STATE
"expired": their role exists until the reaper drops it; PostgreSQL already
refuses new logins). --json prints one JSON object per lease and line.`,
		example: "ephemera leases --database orders\nephemera leases --all --json | jq -r .username",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var db dbFlags
			db.register(fs, databaseFilterUsage)
			all := fs.Bool("all", false, "also list expired leases the reaper has not revoked yet")
			asJSON := fs.Bool("json", false, "print one JSON object per line")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return c.leases(ctx, db, *all, *asJSON)
			}
		},
	}
}

// openLeaseDBs opens the database that db names and returns the configured
// database names to work on there (db.database, else every name in
// ephemera.leases). The caller closes the pool; on error there is none.
func (c *CLI) openLeaseDBs(ctx context.Context, db dbFlags) (*pgxpool.Pool, []string, error) {
	pool, err := c.openDB(ctx, db.url)
	if err != nil {
		return nil, nil, err
	}
	names, err := labels(ctx, pool, db.database)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return pool, names, nil
}

func (c *CLI) leases(ctx context.Context, db dbFlags, all, asJSON bool) error {
	pool, names, err := c.openLeaseDBs(ctx, db)
	if err != nil {
		return err
	}
	defer pool.Close()
	now := c.Now()
	var list []*lease.Lease
	for _, name := range names {
		ls, err := lease.NewStore(pool, name).LiveLeases(ctx)
		if err != nil {
			return err
		}
		for _, l := range ls {
			if all || l.Live(now) {
				list = append(list, l)
			}
		}
	}
	slices.SortStableFunc(list, func(a, b *lease.Lease) int { return a.IssuedAt.Compare(b.IssuedAt) })
	if asJSON {
		out := make([]leaseJSON, len(list))
		for i, l := range list {
			out[i] = toJSON(l, now)
		}
		return jsonLines(c.Stdout, out)
	}
	if len(list) == 0 {
		what := "no live leases"
		if all {
			what = "no unrevoked leases"
		}
		if db.database != "" {
			what += " in database " + db.database
		}
		_, err := fmt.Fprintln(c.Stdout, what)
		return err
	}
	return leaseTable(c, list, now, all)
}

func leaseTable(c *CLI, list []*lease.Lease, now time.Time, withState bool) error {
	header := []string{"LEASE", "PRINCIPAL", "FUNCTION", "DATABASE/ROLE", "USERNAME", "ISSUED", "EXPIRES"}
	if withState {
		header = append(header, "STATE")
	}
	rows := make([][]string, 0, len(list))
	for _, l := range list {
		r := []string{l.ID, l.PrincipalARN, l.Session, l.Database + "/" + l.DBRole, l.Username, ts(l.IssuedAt), ts(l.ExpiresAt)}
		if withState {
			r = append(r, leaseState(l, now))
		}
		rows = append(rows, r)
	}
	return table(c.Stdout, header, rows)
}

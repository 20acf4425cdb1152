package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/reaper"
)

func reapCommand() *command {
	return &command{
		name:     "reap",
		summary:  "revoke expired leases now (one reaper run)",
		synopsis: "[--once] [--url URL] [--database NAME] [--sweep=false] [--json]",
		help: `Runs the broker's reaper once over every database name found in
ephemera.leases (or only --database): revokes expired leases (terminating
their sessions and dropping their roles), sweeps ephemera roles no lease
claims (after a 10 minute grace), deletes used nonces and prunes old audit
rows; each revocation is audited (JSON lines on stderr). Prints the summary:
revoked, failed, swept, nonces_deleted, audit_pruned, duration_ms. Exits 1 if
a revocation failed (it is recorded and retried by every later run).

The sweep treats every ephemera role without a lease in THIS database as an
orphan. If several databases of one PostgreSQL cluster hold ephemera leases,
pass --sweep=false here and let 'ephemera reaper run' (which knows every
configured database) sweep.

reap always runs once; --once says so explicitly. To reap on a schedule, use
'ephemera reaper run'.`,
		example: "ephemera reap\nephemera reap --json --database orders",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var db dbFlags
			db.register(fs, databaseFilterUsage)
			fs.Bool("once", false, "run once (the only mode of reap)")
			sweep := fs.Bool("sweep", true, "also drop orphaned ephemera roles")
			asJSON := fs.Bool("json", false, "print the summary as one JSON object")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return c.reap(ctx, db, *sweep, *asJSON)
			}
		},
	}
}

func (c *CLI) reap(ctx context.Context, db dbFlags, sweep, asJSON bool) error {
	pool, names, err := c.openLeaseDBs(ctx, db)
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewJSONHandler(c.Stderr, nil))
	cfg := reaper.Config{Now: c.Now}
	if !sweep {
		cfg.SweepGrace = time.Duration(math.MaxInt64) // never ripe
	}
	r := reaper.New(stores(pool, names).All(), audit.New(c.Stderr, log), log, cfg)
	sum, runErr := r.Run(ctx)
	if asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else if err := printSummary(c, sum, names); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if sum.Failed > 0 {
		return fmt.Errorf("%d %s failed; %s recorded and retried on every later run", sum.Failed,
			plural(sum.Failed, "revocation", "revocations"), plural(sum.Failed, "it is", "they are"))
	}
	return nil
}

func printSummary(c *CLI, sum reaper.Summary, names []string) error {
	if len(names) == 0 {
		fmt.Fprintln(c.Stdout, "no leases in ephemera.leases: nothing to reap")
	}
	rows := [][2]string{
		{"revoked", fmt.Sprint(sum.Revoked)},
		{"failed", fmt.Sprint(sum.Failed)},
		{"swept", fmt.Sprint(sum.Swept)},
		{"nonces_deleted", fmt.Sprint(sum.NoncesDeleted)},
		{"audit_pruned", fmt.Sprint(sum.AuditPruned)},
		{"duration_ms", fmt.Sprintf("%.1f", sum.DurationMS)},
	}
	for _, e := range sum.Errors {
		rows = append(rows, [2]string{"error", cell(e)})
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(c.Stdout, "%-15s %s\n", r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}

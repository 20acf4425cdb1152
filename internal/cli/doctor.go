package cli

import (
	"context"
	"flag"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

func doctorCommand() *command {
	return &command{
		name:    "doctor",
		summary: "check the admin role's privileges on every configured database",
		help: `Connects to every database of the broker's configuration (EPHEMERA_CONFIG and
the environment of 'ephemera broker serve') as its admin role, the way the
broker does, and checks what the broker checks at start: CREATEROLE,
membership of pg_signal_backend, ADMIN OPTION on every member_of group
(PostgreSQL 16 and later), and CREATE on the database for schema ephemera.
Each missing privilege is printed as the statement that grants it.

It also warns when PUBLIC may CONNECT to databases of the cluster that
ephemera does not manage (template1 and postgres, by default): an ephemeral
user could leave objects or default privileges there. Each is printed with
its REVOKE statement.

Exits 1 when a database cannot be reached or lacks privileges; warnings
alone exit 0.`,
		example: "ephemera doctor",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cfg, err := config.FromEnv(c.Getenv)
				if err != nil {
					return err
				}
				return admindb.Doctor(ctx, c.Stdout, cfg, admindb.Options{Getenv: c.Getenv, MaxConns: 1, MarkerGroup: lease.MarkerGroupOf})
			}
		},
	}
}

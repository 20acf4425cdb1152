package cli

import (
	"context"
	"flag"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/demo"
)

func localCommand() *command {
	return &command{
		name:     "local",
		summary:  "run the whole system on this machine and narrate it (make demo)",
		synopsis: "[--ttl 10s] [--serve]",
		help: `Starts a throwaway PostgreSQL, the STS emulator and the broker, builds the
extension and the demo function (needs the Go toolchain and this source tree),
runs them under the Lambda emulator, and walks through issue, use, renew,
rotate, deny, revoke and reap, then prints the audit trail. No Docker, no AWS
account. Everything it starts is stopped and deleted at the end. With
--serve it keeps the broker, reaper, PostgreSQL and STS running instead and
prints their addresses and ready-to-paste curl commands. Set
EPHEMERA_DEMO_DATABASE_URL to use an existing PostgreSQL server.`,
		example: "ephemera local",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			ttl := fs.Duration("ttl", 10*time.Second, "lifetime of the function's credential (the role's max TTL is twice it)")
			serve := fs.Bool("serve", false, "keep the local stack running and print curl commands instead of the narrated demo")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if *serve {
					return demo.Serve(ctx, c.Stdout, demo.Options{})
				}
				return demo.Run(ctx, c.Stdout, demo.Options{TTL: *ttl})
			}
		},
	}
}

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
		summary:  "run the system, and your own function, on this machine (make demo)",
		synopsis: "[--ttl 10s] [--serve] | invoke ... | start ...",
		help: `Starts a throwaway PostgreSQL, the STS emulator and the broker, builds the
extension and the demo function (needs the Go toolchain and this source tree),
runs them under the Lambda emulator, and walks through issue, use, renew,
rotate, deny, revoke and reap, then prints the audit trail. No Docker, no AWS
account. Everything it starts is stopped and deleted at the end. With
--serve it keeps the broker, reaper, PostgreSQL and STS running instead and
prints their addresses, ready-to-paste curl commands and an ephemera leases
command that works. Set EPHEMERA_DEMO_DATABASE_URL to use an existing
PostgreSQL server.

Subcommands run YOUR function (any runtime) with the extension attached:
  ephemera local invoke   invoke it once (the Docker-free sam local invoke)
  ephemera local start    keep it warm behind the Lambda Invoke API
                          (the Docker-free sam local start-lambda)
Run 'ephemera local invoke --help' for their flags.`,
		example: "ephemera local\nephemera local --serve\n" +
			"ephemera local invoke --env-vars functions/demo-python/local/env.json \\\n" +
			"    --event functions/demo-python/local/event.json functions/demo-python",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			ttl := fs.Duration("ttl", 10*time.Second, "lifetime of the function's credential (the role's max TTL is twice it)")
			serve := fs.Bool("serve", false, "keep the local stack running and print curl commands instead of the narrated demo")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					// "local invoke" and "local start" are found by lookup
					// before this command; anything else is a mistake.
					if fs.NFlag() > 0 && (args[0] == "invoke" || args[0] == "start") {
						return usagef("", "--ttl and --serve do not go with %q", args[0])
					}
					return usagef("Subcommands: invoke, start. Run 'ephemera local --help' for details.",
						"unknown subcommand %q", args[0])
				}
				if *serve {
					return demo.Serve(ctx, c.Stdout, demo.Options{})
				}
				return demo.Run(ctx, c.Stdout, demo.Options{TTL: *ttl})
			}
		},
	}
}

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
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
					if fs.NFlag() > 0 {
						return usagef("", "--ttl and --serve do not go with %q", args[0])
					}
					return c.runLocalSubcommand(ctx, args)
				}
				if *serve {
					return demo.Serve(ctx, c.Stdout, demo.Options{})
				}
				return demo.Run(ctx, c.Stdout, demo.Options{TTL: *ttl})
			}
		},
	}
}

// localSubcommands are "ephemera local invoke" and "ephemera local start".
// The command table knows only "local"; its run dispatches here.
func localSubcommands() []*command {
	return []*command{localInvokeCommand(), localStartCommand()}
}

// runLocalSubcommand runs "local <sub> args...", parsing the subcommand's
// own flags the way Run parses a command's.
func (c *CLI) runLocalSubcommand(ctx context.Context, args []string) error {
	var names []string
	for _, sub := range localSubcommands() {
		names = append(names, strings.TrimPrefix(sub.name, "local "))
		if sub.name != "local "+args[0] {
			continue
		}
		fs := flag.NewFlagSet("ephemera "+sub.name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Usage = func() {}
		run := sub.setup(c, fs)
		if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
			c.printCommandHelp(c.Stdout, sub, fs)
			return nil
		} else if err != nil {
			return &usageError{cmd: sub, fs: fs, msg: flagError(err)}
		}
		err := run(ctx, fs.Args())
		var ue *usageError
		if errors.As(err, &ue) && ue.cmd == nil {
			ue.cmd, ue.fs = sub, fs
		}
		return err
	}
	return usagef(fmt.Sprintf("Subcommands: %s. Run 'ephemera local --help' for details.", strings.Join(names, ", ")),
		"unknown subcommand %q", args[0])
}

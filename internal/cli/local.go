package cli

import (
	"context"
	"flag"
	"fmt"
)

func localCommand() *command {
	return &command{
		name:     "local",
		summary:  "run the whole system on this machine (not yet)",
		synopsis: "",
		help: `Will start a throwaway PostgreSQL, the STS emulator, the broker, the reaper
and the demo function under the Lambda emulator, without Docker or AWS.
Not implemented yet: see issue 5 (make demo).`,
		example: "ephemera local",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				_, err := fmt.Fprintln(c.Stdout, "not yet: see issue 5 (make demo)")
				return err
			}
		},
	}
}

package cli

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/ephemera-sh/ephemera/broker"
)

func versionCommand() *command {
	return &command{
		name:     "version",
		summary:  "print the version",
		synopsis: "",
		help:     "Prints the version (broker.Version, set with -ldflags -X), the VCS revision and the Go version.",
		example:  "ephemera version",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				_, err := fmt.Fprintln(c.Stdout, "ephemera "+versionString())
				return err
			}
		},
	}
}

// versionString is "<version> (<revision>, <go version> <os>/<arch>)".
func versionString() string {
	v, rev := broker.Version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		dirty := ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			rev += dirty + ", "
		}
	}
	return fmt.Sprintf("%s (%s%s %s/%s)", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

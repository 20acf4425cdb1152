// Command ephemera is the operator CLI of the ephemera credential broker:
// list leases, answer audit questions, revoke in an emergency, run the
// broker and its reaper locally, and test Cedar policies. It only wires;
// the commands live in internal/cli. Run 'ephemera help'.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ephemera-sh/ephemera/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process as usual.
	context.AfterFunc(ctx, stop)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

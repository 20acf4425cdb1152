package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// M is what Main and Run need of a test binary: *testing.M.
type M interface {
	Run() int
}

// Setup prepares the server of a test binary before its tests run: it
// creates roles, tables or pools, and stores what the tests need in package
// variables. The function it returns, if any, runs after the tests and
// before the server stops (closing a pool, dropping roles that outlive a
// database in external mode).
type Setup func(ctx context.Context, s *Server) (teardown func(), err error)

// mainOut receives Run's failure messages (a test swaps it).
var mainOut io.Writer = os.Stderr

// setupTimeout bounds starting the server and running a Setup.
const setupTimeout = 2 * time.Minute

// Main runs a test binary against one throwaway server, started with opts
// and prepared by setup (nil: nothing to prepare), and exits with the tests'
// status. If the server cannot start or setup fails, the tests do not run
// and the binary exits non-zero: a package that needs PostgreSQL fails
// without it, it never skips. Call it from TestMain:
//
//	var srv *pgserver.Server
//
//	func TestMain(m *testing.M) {
//		pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (func(), error) {
//			srv = s
//			return nil, nil
//		})
//	}
func Main(m M, opts Options, setup Setup) {
	os.Exit(Run(m, opts, setup))
}

// Run is Main that returns the exit status instead of exiting, for a
// TestMain with resources of its own to release afterwards.
func Run(m M, opts Options, setup Setup) int {
	s, teardown, err := startForTests(opts, setup)
	if err != nil {
		fmt.Fprintln(mainOut, "FAIL: test PostgreSQL:", err)
		return 1
	}
	code := m.Run()
	if teardown != nil {
		teardown()
	}
	if err := s.Stop(); err != nil {
		fmt.Fprintln(mainOut, "pgserver: stopping the test server:", err)
	}
	return code
}

// startForTests starts the server and runs setup, stopping the server again
// if setup fails.
func startForTests(opts Options, setup Setup) (_ *Server, teardown func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	if setup == nil {
		return s, nil, nil
	}
	if teardown, err = setup(ctx, s); err != nil {
		if teardown != nil {
			teardown()
		}
		return nil, nil, errors.Join(fmt.Errorf("pgserver: setup: %w", s.redact(err)), s.Stop())
	}
	return s, teardown, nil
}

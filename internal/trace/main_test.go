package trace

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// Environment of the child process of TestNoSegmentNoDaemon.
const (
	envHelper   = "EPHEMERA_TRACE_TEST_HELPER"
	envHelperDB = "EPHEMERA_TRACE_TEST_DB"
)

var (
	testDaemon *fakeDaemon
	testDBURL  string
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) == "nosegment" {
		os.Exit(runNoSegmentHelper(os.Getenv(envHelperDB)))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The environment must not redirect or switch off what the tests check.
	for _, k := range []string{envDaemonAddress, envSDKDisabled, envLambdaTaskRoot, EnvTracing, "AWS_XRAY_CONTEXT_MISSING", "AWS_XRAY_TRACING_NAME"} {
		os.Unsetenv(k)
	}
	var err error
	testDaemon, err = startDaemon()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		return 1
	}
	defer testDaemon.close()
	if err := configureForTests(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	return pgserver.Run(m, pgserver.Options{}, func(_ context.Context, s *pgserver.Server) (func(), error) {
		testDBURL = s.URL()
		return nil, nil
	})
}

func configureForTests() error {
	return Configure(WithDaemonAddress(testDaemon.addr()))
}

// reconfigureAfter restores the test configuration when t ends, after the
// environment variables that t sets with t.Setenv afterwards are restored.
func reconfigureAfter(t *testing.T) {
	t.Cleanup(func() {
		if err := configureForTests(); err != nil {
			t.Errorf("restore configuration: %v", err)
		}
	})
}

package lambdaemu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

// Binaries built once for the whole package by TestMain.
var (
	fnBin  string // testdata/fn, built with -tags lambda.norpc
	extBin string // testdata/ext
)

// leakVar is set in the test process; no child may see it.
const leakVar = "LEAK_PARENT_SECRET"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	defer gobuild.Clean()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var fnErr, extErr error
	var wg sync.WaitGroup
	norpc := gobuild.Options{Tags: []string{gobuild.NoRPC}}
	wg.Go(func() { fnBin, fnErr = gobuild.Binary(ctx, "./testdata/fn", norpc) })
	wg.Go(func() { extBin, extErr = gobuild.Binary(ctx, "./testdata/ext", norpc) })
	wg.Wait()
	if err := errors.Join(fnErr, extErr); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: building the test binaries: %v\n", err)
		return 1
	}
	os.Setenv(leakVar, "must-not-leak")
	return m.Run()
}

// extDir makes an extensions directory holding the test extension under
// each of names (the name selects its behaviour, see testdata/ext).
func extDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.Symlink(extBin, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testConfig is a frozen-between-invocations sandbox with the test function
// and the named extensions. The children's output is logged if the test
// fails.
func testConfig(t *testing.T, exts ...string) (lambdaemu.Config, *observe.Buffer) {
	t.Helper()
	out := &observe.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("children's output:\n%s", out)
		}
	})
	return lambdaemu.Config{
		ExtensionsDir:   extDir(t, exts...),
		Bootstrap:       fnBin,
		FunctionName:    "orders-api",
		Region:          "eu-west-1",
		AccessKeyID:     "ASIATESTACCESSKEY",
		SecretAccessKey: "test-secret-key",
		SessionToken:    "test-session-token",
		Env:             map[string]string{"EPHEMERA_BROKER_URL": "http://127.0.0.1:1"},
		Freeze:          true,
		Output:          out,
	}, out
}

// start starts the emulator and logs its protocol record if the test
// fails.
func start(t *testing.T, cfg lambdaemu.Config) *lambdaemu.Emulator {
	t.Helper()
	e := lambdaemu.StartTB(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("events:\n%s", strings.Join(e.Events(), "\n"))
		}
	})
	return e
}

// extEvent is one "event ..." line the test extension logged.
type extEvent map[string]string

// extEvents parses the event lines extension name logged.
func extEvents(logs, name string) []extEvent {
	var evs []extEvent
	prefix := "[" + name + "] event "
	for _, line := range strings.Split(logs, "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		ev := extEvent{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				ev[k] = v
			}
		}
		evs = append(evs, ev)
	}
	return evs
}

// indexOf returns the index of the first event equal to s or with prefix s
// followed by a space, or -1.
func indexOf(events []string, s string) int {
	for i, ev := range events {
		if ev == s || strings.HasPrefix(ev, s+" ") {
			return i
		}
	}
	return -1
}

// waitFor polls cond for up to limit.
var waitFor = observe.Until

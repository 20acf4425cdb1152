package lambdaemu_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
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
	dir, err := os.MkdirTemp("", "lambdaemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", dir+string(os.PathSeparator), "./testdata/fn", "./testdata/ext")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building test binaries: %v\n%s", err, out)
		return 1
	}
	fnBin, extBin = filepath.Join(dir, "fn"), filepath.Join(dir, "ext")
	os.Setenv(leakVar, "must-not-leak")
	return m.Run()
}

// lockedBuffer is an io.Writer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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
func testConfig(t *testing.T, exts ...string) (lambdaemu.Config, *lockedBuffer) {
	t.Helper()
	out := &lockedBuffer{}
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
func waitFor(limit time.Duration, cond func() bool) bool {
	end := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package cli_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/internal/cli"
	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

// TestLocalServePrintsWorkingCommands: `ephemera local --serve` prints a curl command with
// a signed request file and `ephemera leases` / `ephemera audit` command lines; run as
// printed by a shell, with the built ephemera on PATH, they list the lease the request
// file got and its issue in the audit trail. The admin DSN is in a file of mode 0600, not
// on the terminal. Cancelling stops everything and removes the file.
func TestLocalServePrintsWorkingCommands(t *testing.T) {
	bin := gobuild.BinaryTB(t, gobuild.ModulePath+"/cmd/ephemera", gobuild.Options{})
	var out, errb syncBuffer
	c := &cli.CLI{Stdout: &out, Stderr: &errb}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- c.Main(ctx, []string{"local", "--serve"}) }()
	text := waitFor(t, &out, "ephemera audit --database orders --since 1h", done)

	m := regexp.MustCompile(`curl -s -H 'Content-Type: application/json' -d @(\S+) (http://\S+/v1/credentials)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no curl command:\n%s", text)
	}
	body, err := os.ReadFile(m[1])
	must(t, err)
	status, cred := postIssue(t, m[2], body)
	if status != http.StatusCreated || cred.LeaseID == "" {
		t.Fatalf("the printed request file: %d %+v", status, cred)
	}

	dsnRE := regexp.MustCompile(`(?m)^  (EPHEMERA_DATABASE_URL="\$\(cat '([^']+)'\)" ephemera (leases|audit --database orders --since 1h))$`)
	cmds := dsnRE.FindAllStringSubmatch(text, -1)
	if len(cmds) != 2 {
		t.Fatalf("want the leases and audit command lines:\n%s", text)
	}
	fi, err := os.Stat(cmds[0][2])
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the admin DSN file has mode %v, want 0600", fi.Mode().Perm())
	}
	if dsn, _ := os.ReadFile(cmds[0][2]); len(dsn) < 10 || strings.Contains(text, strings.TrimSpace(string(dsn))) {
		t.Errorf("the admin DSN is on the terminal, or its file is empty")
	}
	for _, cmd := range cmds {
		sh := exec.Command("sh", "-c", cmd[1])
		sh.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		got, err := sh.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd[1], err, got)
		}
		for _, want := range []string{cred.LeaseID, "orders-api-local"} {
			if cmd[3] == "leases" && !strings.Contains(string(got), want) {
				t.Errorf("%s does not list %s:\n%s", cmd[1], want, got)
			}
		}
		if cmd[3] != "leases" && !regexp.MustCompile(`issue\s+allow`).Match(got) {
			t.Errorf("%s shows no allowed issue:\n%s", cmd[1], got)
		}
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d:\n%s\n%s", code, out.String(), errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("local --serve did not stop")
	}
	if _, err := os.Stat(cmds[0][2]); !os.IsNotExist(err) {
		t.Errorf("the admin DSN file outlived the stack: %v", err)
	}
}

// TestLocalInvokeUsageErrors: mistakes on the command line are usage errors (exit 2) with
// the subcommand's usage and a hint, found before anything starts.
func TestLocalInvokeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	twoFns := filepath.Join(dir, "env.json")
	must(t, os.WriteFile(twoFns, []byte(`{"A": {"X": "1"}, "B": {"X": "2"}, "Parameters": {}}`), 0o600))
	badEvent := filepath.Join(dir, "event.json")
	must(t, os.WriteFile(badEvent, []byte(`{"routeKey":`), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "invoke"}, "ephemera local invoke: no FUNCTION"},
		{[]string{"local", "invoke", "--env-vars", twoFns, "."}, `names several functions (A, B): pick one`},
		{[]string{"local", "invoke", "--env-vars", twoFns, "--function", "C", "."}, `has no function "C" (it has A, B)`},
		{[]string{"local", "invoke", "--event", badEvent, "."}, "is not JSON"},
		{[]string{"local", "start", "--listen", "0.0.0.0:3001", "."}, "is not a loopback address"},
		{[]string{"local", "invoke", "--bogus", "."}, "ephemera local invoke: unknown flag --bogus"},
		{[]string{"local", "frobnicate"}, `unknown subcommand "frobnicate"`},
		{[]string{"local", "--serve", "invoke", "."}, "--ttl and --serve do not go with"},
	} {
		r := run(t, tc.args...)
		if r.code != cli.ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: want exit 2 and %q\n%v", tc.args, tc.want, r)
		}
	}
	r := run(t, "local", "invoke", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Docker-free counterpart of 'sam local invoke'") ||
		!strings.Contains(r.stdout, "functions/demo-python/local/env.json") {
		t.Errorf("local invoke --help:\n%v", r)
	}
	r = run(t, "local", "start", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Docker-free counterpart of 'sam local start-lambda'") {
		t.Errorf("local start --help:\n%v", r)
	}
}

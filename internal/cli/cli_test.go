package cli_test

import (
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/internal/cli"
)

var commandNames = []string{
	"leases", "audit", "revoke", "reap", "broker serve", "reaper run",
	"policy validate", "policy test", "doctor", "local", "local invoke", "local start", "version",
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := run(t, args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: %v", args, r)
		}
		for _, name := range commandNames {
			if !strings.Contains(r.stdout, "  "+name+" ") {
				t.Errorf("%v: main usage does not list %q:\n%s", args, name, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "Example:") {
			t.Errorf("%v: main usage has no example", args)
		}
	}
	for _, name := range commandNames {
		words := strings.Fields(name)
		for _, args := range [][]string{append([]string{"help"}, words...), append(words, "--help"), append(words, "-h")} {
			r := run(t, args...)
			if r.code != 0 || r.stderr != "" {
				t.Errorf("%v: %v", args, r)
				continue
			}
			for _, want := range []string{"ephemera " + name + ": ", "Usage:\n  ephemera " + name, "Example:"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("%v: help lacks %q:\n%s", args, want, r.stdout)
				}
			}
			if _, example, _ := strings.Cut(r.stdout, "Example:"); !strings.Contains(example, "ephemera "+name) {
				t.Errorf("%v: the example does not run %q:\n%s", args, name, example)
			}
		}
	}
	for _, g := range []string{"broker", "reaper", "policy"} {
		r := run(t, g, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "ephemera "+g+" ") || !strings.Contains(r.stdout, "Example:") {
			t.Errorf("%s --help: %v", g, r)
		}
	}
}

// usage checks a usage error: exit 2, nothing on stdout, and stderr with
// every wanted piece.
func usage(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code != 2 || r.stdout != "" {
		t.Fatalf("want a usage error (exit 2): %v", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	usage(t, run(t), "no command given", "ephemera help")
	usage(t, run(t, "frobnicate"), `unknown command "frobnicate"`, "Run 'ephemera help'", "leases")
	usage(t, run(t, "leaes"), "Did you mean 'ephemera leases'?")
	usage(t, run(t, "help", "frobnicate"), "frobnicate", "ephemera help")
	usage(t, run(t, "broker"), "missing subcommand", "ephemera broker serve")
	usage(t, run(t, "policy", "lint"), `unknown subcommand "lint"`, "validate, test")
	usage(t, run(t, "leases", "--bogus"), "ephemera leases: unknown flag --bogus", "Usage:\n  ephemera leases", "--database NAME", "Run 'ephemera leases --help'")
	usage(t, run(t, "leases", "extra"), `unexpected argument "extra"`)
	usage(t, run(t, "reaper", "run", "--every", "10ms"), "shorter than 1s")
	usage(t, run(t, "audit", "--url", "postgres://x@127.0.0.1:1/x"), "one of --at TIME or --since DURATION is required", "2026-11-17T03:00:00Z")
	usage(t, run(t, "audit", "--at", "yesterday", "--url", "postgres://x@127.0.0.1:1/x"), "--at", "RFC 3339")
	usage(t, run(t, "audit", "--at", "2026-11-17T03:00:00Z", "--since", "1h"), "exclude each other")
	usage(t, run(t, "revoke"), "exactly one of --lease ID or --principal ARN", "ephemera revoke")
	usage(t, run(t, "revoke", "--lease", "x", "--principal", "arn:aws:iam::1:role/r"), "exactly one of")
	usage(t, run(t, "revoke", "--lease", "not-a-uuid"), "is not a lease id")
	usage(t, run(t, "revoke", "--principal", "arn:aws:iam::123456789012:role/orders-api "), "--principal:", "Pass the role's ARN")
	usage(t, run(t, "revoke", "--principal", "orders-api"), "--principal:")
	usage(t, run(t, "policy", "validate"), "want exactly one argument DIR", "ephemera policy validate ./policies")
	usage(t, run(t, "policy", "test", "dir"), "want two arguments DIR CASES.yaml")
}

func TestNoDatabaseURL(t *testing.T) {
	r := runCLI(t, cliWithEnv{}.cli(), "leases")
	usage(t, r, "EPHEMERA_DATABASE_URL is not set", "--url")
}

func TestSecretsNeverPrinted(t *testing.T) {
	const secret = "s3cret-pa55word"
	for _, url := range []string{
		"postgres://ephemera_admin:" + secret + "@127.0.0.1:1/orders?sslmode=disable&connect_timeout=5",
		"host=127.0.0.1 port=1 user=ephemera_admin password=" + secret + " sslmode=disable connect_timeout=5",
		"postgres://ephemera_admin:" + secret + "@127.0.0.1:1/orders?sslmode=bogus", // does not parse
	} {
		r := run(t, "leases", "--url", url)
		if r.code == 0 || strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("url %d: the password was printed or no error: %v", len(url), r)
		}
		if r.code == 1 && len(lines(r.stderr)) != 1 {
			t.Errorf("want one line on stderr: %v", r)
		}
	}
	// A wrong password: authentication fails, the password is not shown.
	u := pg.ConnString(setup.AdminUser, secret, pg.Database())
	r := run(t, "leases", "--url", u)
	if r.code != 1 || strings.Contains(r.stderr, secret) || len(lines(r.stderr)) != 1 || !strings.HasPrefix(r.stderr, "ephemera: ") {
		t.Errorf("wrong password: %v", r)
	}
	// The env default works and is never echoed.
	r = runCLI(t, cliWithEnv{cli.EnvDatabaseURL: adminURL}.cli(), "leases", "--database", "nothing-here")
	if r.code != 0 || !strings.Contains(r.stdout, "no live leases in database nothing-here") {
		t.Errorf("url from the environment: %v", r)
	}
}

func TestBrokerServeRefusesPublicAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:8080", "example.com:80"} {
		usage(t, run(t, "broker", "serve", "--listen", addr), "refusing to listen on "+addr, "not a loopback address", "--public")
	}
	usage(t, run(t, "broker", "serve", "--listen", "127.0.0.1"), "is not host:port")
}

func TestLocalAndVersion(t *testing.T) {
	// The demo itself runs in sam/local/demo's test; here, its command line.
	r := run(t, "local", "--help")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "--serve") || !strings.Contains(r.stdout+r.stderr, "ephemera local") {
		t.Errorf("local --help: %v", r)
	}
	if r := run(t, "local", "extra"); r.code != 2 {
		t.Errorf("local extra: exit %d, want 2", r.code)
	}
	r = run(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ephemera ") || len(lines(r.stdout)) != 1 {
		t.Errorf("version: %v", r)
	}
	if r2 := run(t, "--version"); r2.stdout != r.stdout {
		t.Errorf("--version: %v", r2)
	}
}

package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ephemera-sh/ephemera/broker/policy"
)

func policyValidateCommand() *command {
	return &command{
		name:     "policy validate",
		summary:  "check a directory of Cedar policies",
		synopsis: "DIR",
		help: `Loads every .cedar file directly in DIR as the broker does at start:
parses it, checks that policy ids (@id("...")) are unique and validates every
policy against ephemera's Cedar schema (principals Ephemera::Workload and
Ephemera::User, resources Ephemera::Database, Ephemera::DatabaseRole and
Ephemera::AwsProfile, actions issue, renew, revoke, admin_revoke and assume;
see 'go doc github.com/ephemera-sh/ephemera/broker/policy'). Prints the policy ids,
one per line; or every problem, one per line on stderr, and exits 1. A
directory without policies is an error too: a broker loading it would deny
every request.`,
		example: "ephemera policy validate ./policies",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("Pass the directory of .cedar files, e.g. 'ephemera policy validate ./policies'.",
						"want exactly one argument DIR, got %d", len(args))
				}
				return c.policyValidate(args[0])
			}
		},
	}
}

func (c *CLI) policyValidate(dir string) error {
	set, err := c.loadPolicies(dir)
	if err != nil {
		return err
	}
	for _, id := range set.IDs() {
		if _, err := fmt.Fprintln(c.Stdout, id); err != nil {
			return err
		}
	}
	return nil
}

// loadPolicies loads dir; on failure it prints each problem on stderr and
// returns a one-line error.
func (c *CLI) loadPolicies(dir string) (*policy.Set, error) {
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("policy directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("policy directory: %s is not a directory", dir)
	}
	set, err := policy.LoadDir(dir)
	if err != nil {
		problems := policyProblems(dir, err)
		for _, p := range problems {
			fmt.Fprintln(c.Stderr, cell(p))
		}
		return nil, fmt.Errorf("%s: %d policy %s", dir, len(problems), plural(len(problems), "problem", "problems"))
	}
	if set.Len() == 0 {
		return nil, fmt.Errorf("%s holds no .cedar policies: a broker loading it would deny every request", dir)
	}
	return set, nil
}

// policyProblems splits LoadDir's error into one problem per line. The
// policy package joins problems with "; " and each starts with the file
// name, so a "; " followed by a file name of dir starts a new problem.
func policyProblems(dir string, err error) []string {
	msg := strings.TrimPrefix(err.Error(), policy.ErrInvalid.Error()+": ")
	entries, _ := os.ReadDir(dir)
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".cedar") {
			files = append(files, e.Name())
		}
	}
	startsProblem := func(s string) (string, bool) {
		for _, f := range files {
			if strings.HasPrefix(s, f+":") {
				return f, true
			}
		}
		return "", false
	}
	var out []string
	for _, part := range strings.Split(msg, "; ") {
		if _, ok := startsProblem(part); ok || len(out) == 0 {
			out = append(out, part)
		} else {
			out[len(out)-1] += "; " + part
		}
	}
	for i, p := range out {
		if f, ok := startsProblem(p); ok {
			out[i] = filepath.Join(dir, f) + p[len(f):]
		}
	}
	return out
}

package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ephemera-sh/ephemera/broker/policy"
)

func policyTestCommand() *command {
	return &command{
		name:     "policy test",
		summary:  "run policy test cases against a policy directory (for CI)",
		synopsis: "DIR CASES.yaml",
		help: `Loads DIR like 'ephemera policy validate', then decides every case of
CASES.yaml, a YAML list of:

  - name: orders-api reads orders
    principal:                 # the verified workload
      arn: arn:aws:iam::123456789012:role/orders-api   # canonical role ARN
      account: "123456789012"  # default: from a role ARN
      role: orders-api         # default: from a role ARN
      session: orders-api-fn   # the Lambda function name
      user_id: AROAEXAMPLE:orders-api-fn
    action: issue              # issue | renew | revoke | admin_revoke
    database: orders
    role: readonly             # database role; empty for admin_revoke
    ttl_seconds: 900
    time: 2026-11-17T03:00:00Z # optional (context.now), default: now
    source_ip: 10.0.0.7        # optional (context.source_ip)
    stage: prod                # context.stage
    expect: allow              # allow | deny
    policies: [orders-api-reads-orders]  # optional: exactly the determining ids

An STS assumed-role ARN (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION) is
accepted too and becomes the canonical role ARN, account, role and session.
Prints one line per case, PASS or FAIL with the reason, and a closing line
"N passed, N failed"; exits 1 if any case failed.`,
		example: "ephemera policy test ./policies ./policies/cases.yaml",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				if len(args) != 2 {
					return usagef("Pass the policy directory and the cases file, e.g. 'ephemera policy test ./policies cases.yaml'.",
						"want two arguments DIR CASES.yaml, got %d", len(args))
				}
				return c.policyTest(args[0], args[1])
			}
		},
	}
}

// testCase is one case of a CASES.yaml file.
type testCase struct {
	Name      string `yaml:"name"`
	Principal struct {
		ARN     string `yaml:"arn"`
		Account string `yaml:"account"`
		Role    string `yaml:"role"`
		Session string `yaml:"session"`
		UserID  string `yaml:"user_id"`
	} `yaml:"principal"`
	Action     string    `yaml:"action"`
	Database   string    `yaml:"database"`
	Role       string    `yaml:"role"`
	TTLSeconds int64     `yaml:"ttl_seconds"`
	Time       string    `yaml:"time"`
	SourceIP   string    `yaml:"source_ip"`
	Stage      string    `yaml:"stage"`
	Expect     string    `yaml:"expect"`
	Policies   *[]string `yaml:"policies"`

	line int
}

func (c *CLI) policyTest(dir, casesPath string) error {
	set, err := c.loadPolicies(dir)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(casesPath)
	if err != nil {
		return fmt.Errorf("cases: %w", err)
	}
	cases, err := parseCases(data)
	if err != nil {
		return fmt.Errorf("%s: %w", casesPath, err)
	}
	passed, failed := 0, 0
	for i, tc := range cases {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i+1)
		}
		ok, why := runCase(set, tc)
		if ok {
			passed++
			fmt.Fprintf(c.Stdout, "PASS  %s (%s)\n", cell(name), why)
		} else {
			failed++
			fmt.Fprintf(c.Stdout, "FAIL  %s: %s (%s:%d)\n", cell(name), why, casesPath, tc.line)
		}
	}
	fmt.Fprintf(c.Stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d policy %s failed", failed, len(cases), plural(len(cases), "case", "cases"))
	}
	return nil
}

// parseCases decodes the YAML list strictly (unknown fields are errors)
// and notes each case's line.
func parseCases(data []byte) ([]testCase, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cases []testCase
	if err := dec.Decode(&cases); errors.Is(err, io.EOF) {
		return nil, errors.New("no cases (the file is empty)")
	} else if err != nil {
		return nil, fmt.Errorf("not a YAML list of cases: %w", err)
	}
	if len(cases) == 0 {
		return nil, errors.New("no cases")
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil && len(root.Content) == 1 && len(root.Content[0].Content) == len(cases) {
		for i, n := range root.Content[0].Content {
			cases[i].line = n.Line
		}
	}
	return cases, nil
}

// runCase decides one case and says whether it passed and why.
func runCase(set *policy.Set, tc testCase) (bool, string) {
	req, err := caseRequest(tc)
	if err != nil {
		return false, "invalid case: " + err.Error()
	}
	dec := set.Decide(req)
	for _, e := range dec.Errors {
		if strings.HasPrefix(e, "request: ") {
			return false, "invalid case: " + strings.TrimPrefix(e, "request: ")
		}
	}
	got := "deny"
	if dec.Allowed {
		got = "allow"
	}
	by := "default deny: no policy matched"
	if len(dec.Policies) > 0 {
		by = got + " by " + strings.Join(dec.Policies, ", ")
	}
	if len(dec.Errors) > 0 {
		by += "; evaluation errors (those policies were ignored): " + strings.Join(dec.Errors, "; ")
	}
	if got != tc.Expect {
		return false, fmt.Sprintf("expected %s, got %s", tc.Expect, by)
	}
	if tc.Policies != nil {
		want := slices.Clone(*tc.Policies)
		slices.Sort(want)
		gotIDs := dec.Policies
		if gotIDs == nil {
			gotIDs = []string{}
		}
		if !slices.Equal(want, gotIDs) {
			return false, fmt.Sprintf("%s as expected, but determined by [%s] instead of [%s]", got,
				strings.Join(gotIDs, ", "), strings.Join(want, ", "))
		}
	}
	return true, by
}

// caseRequest builds the policy request of a case.
func caseRequest(tc testCase) (policy.Request, error) {
	p := policy.Principal{ARN: tc.Principal.ARN}
	if p.ARN == "" {
		return policy.Request{}, errors.New("principal.arn is required")
	}
	if m := assumedRoleRE.FindStringSubmatch(p.ARN); m != nil {
		p.ARN = "arn:" + m[1] + ":iam::" + m[2] + ":role/" + m[3]
		p.Account, p.Role, p.Session = m[2], m[3], m[4]
	} else if m := canonicalARNRE.FindStringSubmatch(p.ARN); m != nil {
		p.Account, p.Role = m[2], m[3]
	}
	if v := tc.Principal.Account; v != "" {
		p.Account = v
	}
	if v := tc.Principal.Role; v != "" {
		p.Role = v
	}
	if v := tc.Principal.Session; v != "" {
		p.Session = v
	}
	p.UserID = tc.Principal.UserID
	req := policy.Request{Principal: p, Action: policy.Action(tc.Action), Database: tc.Database, DBRole: tc.Role,
		TTLSeconds: tc.TTLSeconds, Stage: tc.Stage}
	switch req.Action {
	case policy.ActionIssue, policy.ActionRenew, policy.ActionRevoke, policy.ActionAdminRevoke:
	default:
		return req, fmt.Errorf("action %q is not issue, renew, revoke or admin_revoke", tc.Action)
	}
	if tc.Expect != "allow" && tc.Expect != "deny" {
		return req, fmt.Errorf("expect %q is not allow or deny", tc.Expect)
	}
	if tc.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, tc.Time)
		if err != nil {
			return req, fmt.Errorf("time %q is not RFC 3339", tc.Time)
		}
		req.Now = t
	}
	if tc.SourceIP != "" {
		ip, err := netip.ParseAddr(tc.SourceIP)
		if err != nil {
			return req, fmt.Errorf("source_ip %q is not an IP address", tc.SourceIP)
		}
		req.SourceIP = ip
	}
	return req, nil
}

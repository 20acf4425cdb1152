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
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/ephemera-sh/ephemera/broker/attest"
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
    principal:                 # the verified caller
      arn: arn:aws:iam::123456789012:role/orders-api   # role, session or IAM user ARN
      session: orders-api-fn   # the Lambda function name
      user_id: AROAEXAMPLE:orders-api-fn
    action: issue              # issue | renew | revoke | admin_revoke | assume
    database: orders           # not for assume
    role: readonly             # database role; not for admin_revoke or assume
    profile: reports-read      # AWS profile; only for assume
    ttl_seconds: 900
    time: 2026-11-17T03:00:00Z # optional (context.now), default: now
    source_ip: 10.0.0.7        # optional (context.source_ip)
    stage: prod                # context.stage
    expect: allow              # allow | deny
    policies: [orders-api-reads-orders]  # optional: exactly the determining ids

principal.arn is one of:
  arn:aws:iam::ACCOUNT:role/[PATH/]ROLE          a workload (Ephemera::Workload)
  arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION a workload; SESSION is its session
  arn:aws:iam::ACCOUNT:user/[PATH/]USER          an IAM user (Ephemera::User)
and becomes the canonical, path-less ARN the broker would see, with its
account and role (or user) name. principal.account, principal.role (or
principal.user for an IAM user) and principal.session override what the ARN
says. Prints one line per case, PASS or FAIL with the reason, and a closing
line "N passed, N failed"; exits 1 if any case failed.`,
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
		User    string `yaml:"user"`
		Session string `yaml:"session"`
		UserID  string `yaml:"user_id"`
	} `yaml:"principal"`
	Action     string    `yaml:"action"`
	Database   string    `yaml:"database"`
	Role       string    `yaml:"role"`
	Profile    string    `yaml:"profile"`
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
	p, err := casePrincipal(tc)
	if err != nil {
		return policy.Request{}, err
	}
	req := policy.Request{Principal: p, Action: policy.Action(tc.Action), Database: tc.Database, DBRole: tc.Role,
		Profile: tc.Profile, TTLSeconds: tc.TTLSeconds, Stage: tc.Stage}
	switch req.Action {
	case policy.ActionIssue, policy.ActionRenew, policy.ActionRevoke, policy.ActionAdminRevoke, policy.ActionAssume:
	default:
		return req, fmt.Errorf("action %q is not issue, renew, revoke, admin_revoke or assume", clipText(tc.Action))
	}
	if tc.Expect != "allow" && tc.Expect != "deny" {
		return req, fmt.Errorf("expect %q is not allow or deny", clipText(tc.Expect))
	}
	if tc.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, tc.Time)
		if err != nil {
			return req, fmt.Errorf("time %q is not RFC 3339", clipText(tc.Time))
		}
		req.Now = t
	}
	if tc.SourceIP != "" {
		ip, err := netip.ParseAddr(tc.SourceIP)
		if err != nil {
			return req, fmt.Errorf("source_ip %q is not an IP address", clipText(tc.SourceIP))
		}
		req.SourceIP = ip
	}
	return req, nil
}

// casePrincipal is the principal the broker would build for the case's
// ARN: a workload for a role or session ARN, an IAM user for a user ARN.
func casePrincipal(tc testCase) (policy.Principal, error) {
	pr := tc.Principal
	if pr.ARN == "" {
		return policy.Principal{}, errors.New("principal.arn is required")
	}
	a, err := attest.ParsePrincipalARN(pr.ARN)
	if err != nil {
		return policy.Principal{}, fmt.Errorf("principal.arn: %w", err)
	}
	p := policy.Principal{ARN: a.Canonical(), Account: a.Account, UserID: pr.UserID}
	if a.Kind == attest.KindUser {
		if pr.Role != "" || pr.Session != "" {
			return p, errors.New("principal.role and principal.session apply to roles, not to an IAM user")
		}
		p.Kind, p.User = policy.KindUser, a.Name
		if pr.User != "" {
			p.User = pr.User
		}
	} else {
		if pr.User != "" {
			return p, errors.New("principal.user applies to an IAM user, not to a role")
		}
		p.Kind, p.Role, p.Session = policy.KindWorkload, a.Name, a.Session
		if pr.Role != "" {
			p.Role = pr.Role
		}
		if pr.Session != "" {
			p.Session = pr.Session
		}
	}
	if pr.Account != "" {
		p.Account = pr.Account
	}
	return p, nil
}

// clipText cuts text from the cases file for an error message.
func clipText(s string) string {
	if len(s) <= 64 {
		return s
	}
	s = s[:64]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

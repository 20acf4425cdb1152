package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodPolicies = `
@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.account == "123456789012" && principal.role like "orders-api*" && context.ttl_seconds <= 900 };

@id("incident-responders")
permit (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/incident-responder",
        action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");
`

const quarantine = `
@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/orders-api-compromised", action, resource);
`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	return dir
}

func TestPolicyValidate(t *testing.T) {
	good := writeFiles(t, map[string]string{"orders.cedar": goodPolicies, "quarantine.cedar": quarantine, "README.md": "not a policy"})
	r := run(t, "policy", "validate", good)
	if r.code != 0 || r.stdout != "incident-responders\norders-api-reads-orders\nquarantine\n" || r.stderr != "" {
		t.Errorf("good directory: %v", r)
	}

	bad := writeFiles(t, map[string]string{
		"a.cedar": `@id("dup") permit (principal, action, resource) when { principal.acount == "1" };` + "\n" +
			`@id("dup") permit (principal, action == Ephemera::Action::"issue", resource);`,
		"b.cedar": "permit (principal, action, resource) when {",
	})
	r = run(t, "policy", "validate", bad)
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("bad directory: %v", r)
	}
	ls := lines(r.stderr)
	if len(ls) != 4 || ls[3] != "ephemera: "+bad+": 3 policy problems" {
		t.Fatalf("want three problems and the error line:\n%s", r.stderr)
	}
	for i, want := range []string{filepath.Join(bad, "a.cedar") + ":1:1: ", filepath.Join(bad, "a.cedar") + ":2:1: duplicate policy id", filepath.Join(bad, "b.cedar") + ": "} {
		if !strings.HasPrefix(ls[i], want) {
			t.Errorf("problem %d: want prefix %q, got %q", i, want, ls[i])
		}
	}
	if !strings.Contains(ls[0], "acount") {
		t.Errorf("the schema error does not name the attribute: %s", ls[0])
	}

	r = run(t, "policy", "validate", t.TempDir())
	if r.code != 1 || !strings.Contains(r.stderr, "holds no .cedar policies") || len(lines(r.stderr)) != 1 {
		t.Errorf("empty directory: %v", r)
	}
	r = run(t, "policy", "validate", filepath.Join(good, "missing"))
	if r.code != 1 || len(lines(r.stderr)) != 1 {
		t.Errorf("missing directory: %v", r)
	}
}

const passingCases = `
- name: orders-api reads orders
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api", session: orders-api-fn, user_id: "AROAEXAMPLE:orders-api-fn"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 900
  time: 2026-11-17T03:00:00Z
  source_ip: 10.0.0.7
  stage: prod
  expect: allow
  policies: [orders-api-reads-orders]
- name: too long a TTL is denied by default
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 3600
  expect: deny
  policies: []
- name: the compromised function is quarantined (session ARN accepted)
  principal: {arn: "arn:aws:sts::123456789012:assumed-role/orders-api-compromised/fn"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 60
  expect: deny
  policies: [quarantine]
- name: incident responder may revoke everything in orders
  principal: {arn: "arn:aws:iam::123456789012:role/incident-responder"}
  action: admin_revoke
  database: orders
  expect: allow
`

const failingCases = `
- name: orders-api reads orders
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 900
  expect: allow
- name: wrong expectation
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 900
  expect: deny
- name: right decision, wrong policies
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api-compromised"}
  action: issue
  database: orders
  role: readonly
  expect: deny
  policies: [something-else]
- name: not an action
  principal: {arn: "arn:aws:iam::123456789012:role/orders-api"}
  action: drop_table
  database: orders
  role: readonly
  expect: deny
`

// allPass checks that 'policy test' passed all of its n cases and returns its
// output lines.
func allPass(t *testing.T, r result, n int) []string {
	t.Helper()
	ls := lines(r.stdout)
	if r.code != 0 || len(ls) != n+1 || ls[n] != fmt.Sprintf("%d passed, 0 failed", n) || r.stderr != "" {
		t.Fatalf("want %d passing cases: %v", n, r)
	}
	for _, l := range ls[:n] {
		if !strings.HasPrefix(l, "PASS  ") {
			t.Errorf("want PASS: %s", l)
		}
	}
	return ls
}

// someFail checks that 'policy test' exited 1 with one line per case, each
// starting with its want, and the count of passed and failed cases.
func someFail(t *testing.T, r result, passed int, want []string) {
	t.Helper()
	ls := lines(r.stdout)
	n := len(want)
	if r.code != 1 || len(ls) != n+1 || ls[n] != fmt.Sprintf("%d passed, %d failed", passed, n-passed) {
		t.Fatalf("want %d passed, %d failed: %v", passed, n-passed, r)
	}
	for i, w := range want {
		if !strings.HasPrefix(ls[i], w) {
			t.Errorf("line %d: want prefix %q, got %q", i, w, ls[i])
		}
	}
}

func TestPolicyTest(t *testing.T) {
	dir := writeFiles(t, map[string]string{"orders.cedar": goodPolicies, "quarantine.cedar": quarantine})
	cases := writeFiles(t, map[string]string{"pass.yaml": passingCases, "fail.yaml": failingCases, "typo.yaml": "- name: x\n  expcet: allow\n"})

	r := run(t, "policy", "test", dir, filepath.Join(cases, "pass.yaml"))
	ls := allPass(t, r, 4)
	if !strings.Contains(ls[0], "allow by orders-api-reads-orders") || !strings.Contains(ls[1], "default deny") {
		t.Errorf("PASS lines say why:\n%s", r.stdout)
	}

	r = run(t, "policy", "test", dir, filepath.Join(cases, "fail.yaml"))
	someFail(t, r, 1, []string{
		"PASS  orders-api reads orders",
		"FAIL  wrong expectation: expected deny, got allow by orders-api-reads-orders (" + filepath.Join(cases, "fail.yaml") + ":9)",
		"FAIL  right decision, wrong policies: deny as expected, but determined by [quarantine] instead of [something-else]",
		`FAIL  not an action: invalid case: action "drop_table" is not issue, renew, revoke, admin_revoke or assume`,
	})
	if len(lines(r.stderr)) != 1 || !strings.HasPrefix(r.stderr, "ephemera: 3 of 4 policy cases failed") {
		t.Errorf("stderr: %q", r.stderr)
	}

	r = run(t, "policy", "test", dir, filepath.Join(cases, "typo.yaml"))
	if r.code != 1 || !strings.Contains(r.stderr, "expcet") || len(lines(r.stderr)) != 1 {
		t.Errorf("unknown field: %v", r)
	}
	r = run(t, "policy", "test", writeFiles(t, map[string]string{"bad.cedar": "permit ("}), filepath.Join(cases, "pass.yaml"))
	if r.code != 1 || !strings.Contains(r.stderr, "bad.cedar") {
		t.Errorf("invalid policies: %v", r)
	}
}

const profilePolicies = `
@id("reports-assume-reports-read")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.role like "reports-*" && context.ttl_seconds <= 900 };

@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.account == "123456789012" && principal.role like "orders-api*" };

@id("analysts-assume-reports-read")
permit (principal is Ephemera::User, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.account == "123456789012" && principal.user like "analyst-*" };
`

const profileCases = `
- name: reports workload assumes reports-read
  principal: {arn: "arn:aws:sts::123456789012:assumed-role/reports-api/reports-fn"}
  action: assume
  profile: reports-read
  ttl_seconds: 900
  expect: allow
  policies: [reports-assume-reports-read]
- name: not another profile
  principal: {arn: "arn:aws:iam::123456789012:role/reports-api"}
  action: assume
  profile: billing-admin
  ttl_seconds: 900
  expect: deny
  policies: []
- name: a role with a path is its canonical role
  principal: {arn: "arn:aws:iam::123456789012:role/team/reports-api"}
  action: assume
  profile: reports-read
  ttl_seconds: 600
  expect: allow
- name: an IAM user named like the role is not the role
  principal: {arn: "arn:aws:iam::123456789012:user/reports-api", user_id: AIDAEXAMPLE}
  action: assume
  profile: reports-read
  ttl_seconds: 900
  expect: deny
  policies: []
- name: an IAM user named like orders-api gets no orders
  principal: {arn: "arn:aws:iam::123456789012:user/orders-api-intern"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 60
  expect: deny
- name: analysts (IAM users, with a path) assume reports-read
  principal: {arn: "arn:aws:iam::123456789012:user/analytics/analyst-ann"}
  action: assume
  profile: reports-read
  ttl_seconds: 900
  expect: allow
  policies: [analysts-assume-reports-read]
- name: user name override
  principal: {arn: "arn:aws:iam::123456789012:user/ann", user: analyst-ann}
  action: assume
  profile: reports-read
  expect: allow
`

const badProfileCases = `
- name: assume without a profile
  principal: {arn: "arn:aws:iam::123456789012:role/reports-api"}
  action: assume
  expect: deny
- name: a profile on issue
  principal: {arn: "arn:aws:iam::123456789012:role/reports-api"}
  action: issue
  database: orders
  role: readonly
  profile: reports-read
  expect: deny
- name: a role attribute on a user
  principal: {arn: "arn:aws:iam::123456789012:user/ann", role: reports-api}
  action: assume
  profile: reports-read
  expect: deny
- name: not a principal ARN
  principal: {arn: "arn:aws:iam::123456789012:group/reports"}
  action: assume
  profile: reports-read
  expect: deny
`

// TestPolicyTestProfilesAndUsers: cases can name the assume action with a
// profile, and IAM-user principals, which policies for roles never match.
func TestPolicyTestProfilesAndUsers(t *testing.T) {
	dir := writeFiles(t, map[string]string{"aws.cedar": profilePolicies})
	cases := writeFiles(t, map[string]string{"ok.yaml": profileCases, "bad.yaml": badProfileCases})

	allPass(t, run(t, "policy", "test", dir, filepath.Join(cases, "ok.yaml")), 7)

	someFail(t, run(t, "policy", "test", dir, filepath.Join(cases, "bad.yaml")), 0, []string{
		"FAIL  assume without a profile: invalid case: assume needs a profile",
		"FAIL  a profile on issue: invalid case: a profile applies only to assume",
		"FAIL  a role attribute on a user: invalid case: principal.role and principal.session apply to roles",
		`FAIL  not a principal ARN: invalid case: principal.arn: attest: invalid principal ARN "arn:aws:iam::123456789012:group/reports"`,
	})
}

// The demo's policies (a template: placeholders stay literal) validate, and
// the demo role may assume the demo's AWS profile (reports-read in
// sam/broker/ephemera.yaml) but no IAM user of the same name may.
func TestPolicyDemoDirectory(t *testing.T) {
	demo := filepath.Join("..", "..", "sam", "broker", "policies")
	r := run(t, "policy", "validate", demo)
	if r.code != 0 || !strings.Contains(r.stdout, "demo-assumes-reports-read\n") {
		t.Fatalf("validate %s: %v", demo, r)
	}
	cases := writeFiles(t, map[string]string{"demo.yaml": `
- name: the demo role assumes reports-read
  principal: {arn: "arn:aws:iam::123456789012:role/demo", account: "${EPHEMERA_ACCOUNT_ID}", role: "${EPHEMERA_DEMO_ROLE}"}
  action: assume
  profile: reports-read
  ttl_seconds: 900
  expect: allow
  policies: [demo-assumes-reports-read]
- name: not for longer than 15 minutes
  principal: {arn: "arn:aws:iam::123456789012:role/demo", account: "${EPHEMERA_ACCOUNT_ID}", role: "${EPHEMERA_DEMO_ROLE}"}
  action: assume
  profile: reports-read
  ttl_seconds: 901
  expect: deny
- name: the demo role reads orders
  principal: {arn: "arn:aws:iam::123456789012:role/demo", account: "${EPHEMERA_ACCOUNT_ID}", role: "${EPHEMERA_DEMO_ROLE}"}
  action: issue
  database: orders
  role: readonly
  ttl_seconds: 900
  expect: allow
- name: an IAM user is never the demo role
  principal: {arn: "arn:aws:iam::123456789012:user/demo", account: "${EPHEMERA_ACCOUNT_ID}"}
  action: assume
  profile: reports-read
  ttl_seconds: 900
  expect: deny
`})
	r = run(t, "policy", "test", demo, filepath.Join(cases, "demo.yaml"))
	if r.code != 0 || !strings.HasSuffix(r.stdout, "4 passed, 0 failed\n") {
		t.Errorf("demo cases: %v", r)
	}
}

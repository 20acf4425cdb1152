package cli_test

import (
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

func TestPolicyTest(t *testing.T) {
	dir := writeFiles(t, map[string]string{"orders.cedar": goodPolicies, "quarantine.cedar": quarantine})
	cases := writeFiles(t, map[string]string{"pass.yaml": passingCases, "fail.yaml": failingCases, "typo.yaml": "- name: x\n  expcet: allow\n"})

	r := run(t, "policy", "test", dir, filepath.Join(cases, "pass.yaml"))
	ls := lines(r.stdout)
	if r.code != 0 || len(ls) != 5 || ls[4] != "4 passed, 0 failed" || r.stderr != "" {
		t.Fatalf("passing cases: %v", r)
	}
	for _, l := range ls[:4] {
		if !strings.HasPrefix(l, "PASS  ") {
			t.Errorf("want PASS: %s", l)
		}
	}
	if !strings.Contains(ls[0], "allow by orders-api-reads-orders") || !strings.Contains(ls[1], "default deny") {
		t.Errorf("PASS lines say why:\n%s", r.stdout)
	}

	r = run(t, "policy", "test", dir, filepath.Join(cases, "fail.yaml"))
	ls = lines(r.stdout)
	if r.code != 1 || len(ls) != 5 || ls[4] != "1 passed, 3 failed" {
		t.Fatalf("failing cases: %v", r)
	}
	for i, want := range []string{
		"PASS  orders-api reads orders",
		"FAIL  wrong expectation: expected deny, got allow by orders-api-reads-orders (" + filepath.Join(cases, "fail.yaml") + ":9)",
		"FAIL  right decision, wrong policies: deny as expected, but determined by [quarantine] instead of [something-else]",
		`FAIL  not an action: invalid case: action "drop_table" is not issue, renew, revoke or admin_revoke`,
	} {
		if !strings.HasPrefix(ls[i], want) {
			t.Errorf("line %d: want prefix %q, got %q", i, want, ls[i])
		}
	}
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

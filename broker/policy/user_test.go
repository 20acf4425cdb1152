package policy_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/policy"
)

// userPolicies starts with the workload policy of examplePolicies.
const userPolicies = ordersReadsPolicy + `
@id("account-reads-audit")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"audit/readonly")
when { principal.account == "123456789012" };

@id("interns-read-reports")
permit (principal is Ephemera::User, action == Ephemera::Action::"issue",
        resource == Ephemera::DatabaseRole::"reports/readonly")
when { principal.account == "123456789012" && principal.user like "*-intern" };

@id("alice-assumes-reports")
permit (principal == Ephemera::User::"arn:aws:iam::123456789012:user/alice",
        action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read");

@id("users-issue-payments")
permit (principal is Ephemera::User, action == Ephemera::Action::"issue", resource in Ephemera::Database::"payments");

@id("payments-from-known-networks")
forbid (principal, action, resource in Ephemera::Database::"payments")
unless { context has source_ip };
`

// TestIAMUsersAreNotWorkloads: an IAM user is an Ephemera::User, so no
// policy written for roles (reading principal.role, or any permit whose
// scope does not name Ephemera::User) ever matches it, whatever its name.
func TestIAMUsersAreNotWorkloads(t *testing.T) {
	set, err := policy.Parse(map[string][]byte{"p.cedar": []byte(userPolicies)})
	if err != nil {
		t.Fatal(err)
	}
	// The principal as the broker builds it from a verified IAM user: Role
	// and Session hold the user name for older callers, Kind is unset.
	intern := policy.Principal{ARN: "arn:aws:iam::123456789012:user/orders-api-intern", Account: "123456789012",
		Role: "orders-api-intern", Session: "orders-api-intern", UserID: "AIDAEXAMPLE"}
	internKind := intern
	internKind.Kind, internKind.User = policy.KindUser, "orders-api-intern"
	role := policy.Principal{ARN: "arn:aws:iam::123456789012:role/orders-api-intern", Account: "123456789012",
		Role: "orders-api-intern", Session: "fn", UserID: "AROAEXAMPLE:fn"}
	roleKind := role
	roleKind.Kind = policy.KindWorkload
	alice := policy.Principal{ARN: "arn:aws:iam::123456789012:user/alice", Account: "123456789012", Kind: policy.KindUser}
	aliceRole := policy.Principal{ARN: "arn:aws:iam::123456789012:role/alice", Account: "123456789012", Role: "alice"}

	issue := func(p policy.Principal, db string) policy.Request {
		return policy.Request{Principal: p, Action: policy.ActionIssue, Database: db, DBRole: "readonly", TTLSeconds: 900}
	}
	withIP := func(r policy.Request) policy.Request { r.SourceIP = netip.MustParseAddr("10.0.0.1"); return r }
	assume := func(p policy.Principal) policy.Request {
		return policy.Request{Principal: p, Action: policy.ActionAssume, Profile: "reports-read", TTLSeconds: 900}
	}
	for _, tc := range []struct {
		name     string
		req      policy.Request
		allowed  bool
		policies []string
	}{
		{"user named like a role, kind from its ARN", issue(intern, "orders"), false, nil},
		{"user named like a role, kind given", issue(internKind, "orders"), false, nil},
		{"the role of that name", issue(role, "orders"), true, []string{"orders-api-reads-orders"}},
		{"the role of that name, kind given", issue(roleKind, "orders"), true, []string{"orders-api-reads-orders"}},
		{"account-wide permit does not reach users", issue(intern, "audit"), false, nil},
		{"account-wide permit reaches roles", issue(role, "audit"), true, []string{"account-reads-audit"}},
		{"user policy permits the user", issue(intern, "reports"), true, []string{"interns-read-reports"}},
		{"user policy permits the user, kind given", issue(internKind, "reports"), true, []string{"interns-read-reports"}},
		{"user policy does not reach the role", issue(role, "reports"), false, nil},
		{"user entity permits the user", assume(alice), true, []string{"alice-assumes-reports"}},
		{"user entity does not reach a role of that name", assume(aliceRole), false, nil},
		{"forbids reach users", issue(intern, "payments"), false, []string{"payments-from-known-networks"}},
		{"a user policy past the forbid", withIP(issue(intern, "payments")), true, []string{"users-issue-payments"}},
	} {
		d := set.Decide(tc.req)
		if d.Allowed != tc.allowed || !slices.Equal(d.Policies, tc.policies) || len(d.Errors) != 0 {
			t.Errorf("%s: %+v; want allowed=%v by %v, no errors", tc.name, d, tc.allowed, tc.policies)
		}
	}

	for name, p := range map[string]policy.Principal{
		"workload kind, user ARN": {ARN: intern.ARN, Kind: policy.KindWorkload},
		"user kind, role ARN":     {ARN: role.ARN, Kind: policy.KindUser},
		"unknown kind":            {ARN: role.ARN, Kind: "robot"},
	} {
		d := set.Decide(issue(p, "reports"))
		if d.Allowed || len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], "request: ") {
			t.Errorf("%s: %+v; want a request error", name, d)
		}
	}
	if !intern.IsUser() || !internKind.IsUser() || role.IsUser() || roleKind.IsUser() {
		t.Errorf("IsUser: intern %v/%v, role %v/%v", intern.IsUser(), internKind.IsUser(), role.IsUser(), roleKind.IsUser())
	}
}

func TestUserPolicyValidation(t *testing.T) {
	for _, tc := range []struct{ name, src, errHas string }{
		{"user attributes on an unscoped permit", `permit (principal, action, resource) when { principal.user == "x" };`, "principal is Ephemera::User"},
		{"role attribute on a user", `permit (principal is Ephemera::User, action, resource) when { principal.role == "x" };`, "role"},
		{"unknown user attribute", `permit (principal is Ephemera::User, action, resource) when { principal.acount == "x" };`, "acount"},
		{"session is not a user attribute", `forbid (principal == Ephemera::User::"arn:aws:iam::1:user/a", action, resource) when { principal.session == "x" };`, "session"},
	} {
		_, err := policy.Parse(map[string][]byte{"u.cedar": []byte(tc.src)})
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: Parse error %v; want one mentioning %q", tc.name, err, tc.errHas)
		}
	}
	// Every action applies to users.
	for _, src := range []string{
		`permit (principal is Ephemera::User, action in [Ephemera::Action::"issue", Ephemera::Action::"renew", Ephemera::Action::"revoke"], resource is Ephemera::DatabaseRole) when { principal.user_id like "AIDA*" };`,
		`permit (principal is Ephemera::User, action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");`,
		`permit (principal is Ephemera::User, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"p") when { principal.account == "1" };`,
		`forbid (principal, action, resource) when { principal.user_id == "AIDA0" };`,
	} {
		if _, err := policy.Parse(map[string][]byte{"u.cedar": []byte(src)}); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

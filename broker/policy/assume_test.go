package policy_test

import (
	"testing"

	"github.com/ephemera-sh/ephemera/broker/policy"
)

func TestAssume(t *testing.T) {
	set, err := policy.Parse(map[string][]byte{"aws.cedar": []byte(`
@id("reports-may-read")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.role like "reports-*" && context.ttl_seconds <= 900 };
`)})
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Principal{ARN: "arn:aws:iam::123456789012:role/reports-fn", Account: "123456789012", Role: "reports-fn", Session: "fn"}
	cases := []struct {
		name    string
		req     policy.Request
		allowed bool
	}{
		{"listed profile", policy.Request{Principal: p, Action: policy.ActionAssume, Profile: "reports-read", TTLSeconds: 900}, true},
		{"unlisted profile", policy.Request{Principal: p, Action: policy.ActionAssume, Profile: "billing-admin", TTLSeconds: 900}, false},
		{"ttl above policy", policy.Request{Principal: p, Action: policy.ActionAssume, Profile: "reports-read", TTLSeconds: 901}, false},
		{"assume with a database", policy.Request{Principal: p, Action: policy.ActionAssume, Profile: "reports-read", Database: "orders"}, false},
		{"profile on issue", policy.Request{Principal: p, Action: policy.ActionIssue, Profile: "reports-read", Database: "orders", DBRole: "r"}, false},
	}
	for _, c := range cases {
		if d := set.Decide(c.req); d.Allowed != c.allowed {
			t.Errorf("%s: allowed=%v (%+v), want %v", c.name, d.Allowed, d, c.allowed)
		}
	}
	// assume on a database resource is a schema error.
	if _, err := policy.Parse(map[string][]byte{"bad.cedar": []byte(`permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::Database::"orders");`)}); err == nil {
		t.Fatal("assume on a Database validated")
	}
}

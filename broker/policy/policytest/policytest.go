// Package policytest generates policy sets for benchmarks of policy decisions:
// broker/policy's own, and the CPU figures of bench.
package policytest

import (
	"fmt"
	"strings"
)

// Fleet returns n policies, each for its own database, as a fleet of services
// would have: service i (roles svc-i-* of account 123456789012) may issue
// credentials of role readonly on database dbi for at most 900 s. With scoped,
// each policy names its resource in the scope, where the policy index finds it;
// otherwise the resource is only constrained in the condition, so every policy
// must be evaluated on every request. The map holds one file, bench.cedar, as
// policy.Parse takes it.
func Fleet(n int, scoped bool) map[string][]byte {
	var b strings.Builder
	for i := range n {
		if scoped {
			fmt.Fprintf(&b, `@id("svc-%d") permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"db%d/readonly")
when { principal.account == "123456789012" && principal.role like "svc-%d-*" && context.ttl_seconds <= 900 };
`, i, i, i)
		} else {
			fmt.Fprintf(&b, `@id("svc-%d") permit (principal, action, resource)
when { resource in Ephemera::Database::"db%d" && principal.account == "123456789012" && principal.role like "svc-%d-*" && context.ttl_seconds <= 900 };
`, i, i, i)
		}
	}
	return map[string][]byte{"bench.cedar": []byte(b.String())}
}

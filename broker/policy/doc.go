// Package policy decides, with Cedar policies, whether an authenticated AWS
// workload may obtain (renew, revoke) a temporary PostgreSQL user.
//
// # Model
//
// Every request is translated into a Cedar request of this shape:
//
//	principal  Ephemera::Workload::"arn:aws:iam::123456789012:role/orders-api-role"
//	           attributes: account, role, session, user_id (all String)
//	           or, for an IAM user (only when the broker allows them),
//	           Ephemera::User::"arn:aws:iam::123456789012:user/alice"
//	           attributes: account, user, user_id (all String)
//	action     Ephemera::Action::"issue" | "renew" | "revoke" | "admin_revoke" | "assume"
//	resource   Ephemera::DatabaseRole::"orders/readonly", child of
//	           Ephemera::Database::"orders" (so `resource in
//	           Ephemera::Database::"orders"` matches); for admin_revoke the
//	           resource is Ephemera::Database::"orders" itself; for assume
//	           it is Ephemera::AwsProfile::"reports-read"
//	context    ttl_seconds (Long), now (datetime), hour_utc (Long, 0-23),
//	           weekday (String, "Monday".."Sunday"), stage (String),
//	           source_ip (ipaddr, optional: present only when known)
//
// The authoritative definition is the Cedar schema schema.cedarschema in
// this package's directory, embedded in the binary.
//
// # Writing policies
//
// Put policies in *.cedar files in one directory. Name each policy with an
// @id annotation; that id is what decisions and audit logs report. A policy
// without @id is named "<file name>#<index in file>", e.g. "orders.cedar#0".
//
//	@id("orders-api-reads-orders")
//	permit (principal, action == Ephemera::Action::"issue",
//	        resource == Ephemera::DatabaseRole::"orders/readonly")
//	when { principal.account == "123456789012" && principal.role like "orders-api-*"
//	       && context.ttl_seconds <= 900 };
//
//	@id("office-network-only")
//	forbid (principal, action, resource in Ephemera::Database::"payments")
//	unless { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };
//
//	@id("quarantine")
//	forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/compromised", action, resource);
//
// Everything is denied unless a permit policy matches, and any matching
// forbid policy wins over every permit.
//
// # IAM users
//
// An IAM user is an Ephemera::User, never an Ephemera::Workload, so that no
// policy written for roles ever matches a user — not even a user named like
// a role (a user orders-api-intern does not match `principal.role like
// "orders-api-*"`). Precisely:
//
//   - a permit applies to users only if its principal scope names
//     Ephemera::User (`principal is Ephemera::User`, `principal ==
//     Ephemera::User::"arn:..."`); a permit with an open scope that checks
//     only principal.account still reaches workloads only;
//   - a forbid applies to users unless it reads Workload attributes
//     (principal.role, principal.session) or names an Ephemera::Workload,
//     so `forbid (principal, action, resource in ...)` guards users too;
//   - a policy that reads principal.user must scope its principal to
//     Ephemera::User, or it fails to load.
//
// A policy for users, then, looks like this:
//
//	@id("interns-read-reports")
//	permit (principal is Ephemera::User, action == Ephemera::Action::"issue",
//	        resource == Ephemera::DatabaseRole::"reports/readonly")
//	when { principal.account == "123456789012" && principal.user like "*-intern" };
//
// Request.Principal.Kind says which type the caller is; left at its zero
// value, it is read from the ARN (arn:<p>:iam::<acct>:user/... is a user).
//
// # Loading and validation
//
// [LoadDir] reads every *.cedar file of a directory (not recursively) in
// order of file name; [Parse] does the same from memory. Loading fails, with
// an error wrapping [ErrInvalid] that names the file and line:column of
// every problem, when a file does not parse, when two policies share an id,
// or when a policy does not validate against the schema. An empty directory
// gives an empty [Set] that denies everything.
//
// Each policy is validated twice, once as if every action applied to
// workloads only and once to users only; it applies to the principal types
// it validates for (with the permit rule above), and is an error if it
// validates for neither.
//
// Validation approach: cedar-go v1.9.0 ships a schema validator
// (github.com/cedar-policy/cedar-go/x/exp/schema/validate, experimental
// API), and this package uses it in strict mode against the embedded
// schema, rather than only checking entity type names in the policy scopes.
// Besides unknown entity types (e.g. User::"alice") and unknown actions
// (e.g. Ephemera::Action::"frob"), it therefore rejects scopes that fit no
// action (admin_revoke on a DatabaseRole), unknown attributes
// (principal.team, context.ttl), type errors (context.ttl_seconds == "900"),
// and access to the optional context.source_ip without a
// `context has source_ip` guard. That last rule matters: an unguarded
// context.source_ip is an evaluation error when the address is unknown, and
// Cedar ignores a policy that fails to evaluate, so an unguarded forbid
// would silently stop forbidding.
//
// # Deciding
//
// Load once at start, then call [Set.Decide] for every request; a Set is
// immutable and safe for concurrent use:
//
//	set, err := policy.LoadDir("/etc/ephemera/policies")
//	if err != nil {
//		log.Fatal(err) // names file and position; errors.Is(err, policy.ErrInvalid)
//	}
//	d := set.Decide(policy.Request{
//		Principal:  policy.Principal{ARN: arn, Account: acct, Role: role, Session: fn, Kind: policy.KindWorkload},
//		Action:     policy.ActionIssue,
//		Database:   "orders",
//		DBRole:     "readonly",
//		TTLSeconds: 900,
//		Now:        time.Now(),
//		Stage:      "prod",
//	})
//	if !d.Allowed { /* deny; log d.Policies and d.Errors */ }
//
// [Decision.Policies] lists the ids of the policies that determined the
// outcome (the matching permits, or the matching forbids), and is empty on
// default deny. [Decision.Errors] reports policies Cedar could not evaluate.
//
// Decide only evaluates the policies whose action and resource scopes can
// match the request (an index built at load time), which gives the same
// answer as evaluating all of them. Put the action and the resource in the
// scope (`resource in Ephemera::Database::"orders"`) rather than in the
// when clause: a policy with an unconstrained resource scope is evaluated
// on every request for its action.
package policy

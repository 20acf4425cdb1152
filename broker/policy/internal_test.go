package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// An unguarded context.source_ip cannot pass validation; if such a policy
// were loaded anyway, an absent source_ip must deny (with an error), never
// panic or allow.
func TestUnguardedSourceIPWithoutValidation(t *testing.T) {
	files := map[string][]byte{"net.cedar": []byte(`
@id("vpc") permit (principal, action, resource) when { context.source_ip.isInRange(ip("10.0.0.0/8")) };`)}
	if _, err := Parse(files); err == nil {
		t.Fatal("Parse accepted an unguarded optional attribute")
	}
	s, err := parse(files, false)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{
		Principal: Principal{ARN: "arn:aws:iam::123456789012:role/x", Account: "123456789012", Role: "x"},
		Action:    ActionIssue, Database: "orders", DBRole: "readonly", TTLSeconds: 60,
		Now: time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC),
	}
	d := s.Decide(req)
	if d.Allowed || len(d.Policies) != 0 || len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], "vpc: ") {
		t.Fatalf("absent source_ip: %+v, want deny with one error from vpc", d)
	}
	req.SourceIP = netip.MustParseAddr("10.0.0.1")
	if d := s.Decide(req); !d.Allowed || !slices.Equal(d.Policies, []string{"vpc"}) || len(d.Errors) != 0 {
		t.Fatalf("source_ip in range: %+v, want allowed by vpc", d)
	}
}

// The action/resource index must not change any decision: compare Decide
// with cedar.Authorize over every policy and a full entity map.
func TestIndexMatchesFullEvaluation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dbs := []string{"orders", "billing", "audit"}
	roles := []string{"readonly", "readwrite"}
	actions := []string{"", `action == Ephemera::Action::"issue"`, `action == Ephemera::Action::"renew"`,
		`action in [Ephemera::Action::"issue", Ephemera::Action::"revoke"]`, `action in Ephemera::Action::"revoke"`,
		`action == Ephemera::Action::"admin_revoke"`}
	resources := func(a string) []string {
		if strings.Contains(a, "admin_revoke") {
			return []string{"resource", `resource == Ephemera::Database::"orders"`, `resource in Ephemera::Database::"billing"`, `resource is Ephemera::Database`}
		}
		out := []string{"resource", `resource is Ephemera::DatabaseRole`}
		for _, db := range dbs {
			out = append(out, `resource in Ephemera::Database::"`+db+`"`, `resource is Ephemera::DatabaseRole in Ephemera::Database::"`+db+`"`)
			for _, r := range roles {
				out = append(out, `resource == Ephemera::DatabaseRole::"`+db+"/"+r+`"`)
			}
		}
		if a == "" {
			out = append(out, `resource == Ephemera::Database::"audit"`)
		}
		return out
	}
	conds := []string{"", `when { context.ttl_seconds <= 300 }`, `when { principal.role like "orders-*" }`,
		`unless { context has source_ip }`, `when { context.ttl_seconds * 9223372036854775807 > 0 }`}
	// Policies scoped to IAM users read user attributes, never role ones.
	userConds := []string{"", `when { principal.user like "orders-*" }`, `unless { context has source_ip }`,
		`when { context.ttl_seconds * 9223372036854775807 > 0 }`}

	userAllowed := 0
	for round := range 20 {
		var src strings.Builder
		for i := range 40 {
			effect := "permit"
			if rng.IntN(4) == 0 {
				effect = "forbid"
			}
			a := actions[rng.IntN(len(actions))]
			rs := resources(a)
			r := rs[rng.IntN(len(rs))]
			scope, cond := "principal", conds[rng.IntN(len(conds))]
			if rng.IntN(3) == 0 {
				scope, cond = "principal is Ephemera::User", userConds[rng.IntN(len(userConds))]
			}
			if a != "" {
				scope += ", " + a
			} else {
				scope += ", action"
			}
			fmt.Fprintf(&src, "@id(\"p%d\") %s (%s, %s) %s;\n", i, effect, scope, r, cond)
		}
		s, err := Parse(map[string][]byte{"r.cedar": []byte(src.String())})
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, src.String())
		}
		// What applies to a user: forbids, and permits whose scope names
		// Ephemera::User; never a policy reading principal.role.
		full, forUsers := cedar.PolicyMap{}, cedar.PolicyMap{}
		list, err := cedar.NewPolicyListFromBytes("r.cedar", []byte(src.String()))
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range list {
			id := cedar.PolicyID(fmt.Sprintf("p%d", i))
			full[id] = p
			text := string(p.MarshalCedar())
			if !strings.Contains(text, "principal.role") && (p.Effect() == cedar.Forbid || strings.Contains(text, "is Ephemera::User")) {
				forUsers[id] = p
			}
		}
		for range 200 {
			name := []string{"orders-api", "billing"}[rng.IntN(2)]
			req := Request{
				Principal:  Principal{ARN: "arn:aws:iam::1:role/r", Account: "1", Role: name},
				Action:     []Action{ActionIssue, ActionRenew, ActionRevoke, ActionAdminRevoke}[rng.IntN(4)],
				Database:   dbs[rng.IntN(len(dbs))],
				DBRole:     roles[rng.IntN(len(roles))],
				TTLSeconds: int64(rng.IntN(600)),
				Now:        time.Unix(int64(rng.IntN(1<<31)), 0),
			}
			if req.Action == ActionAdminRevoke {
				req.DBRole = ""
			}
			if rng.IntN(2) == 0 {
				req.SourceIP = netip.MustParseAddr("10.0.0.1")
			}
			policies := full
			if rng.IntN(2) == 0 {
				req.Principal = Principal{ARN: "arn:aws:iam::1:user/" + name, Account: "1", Kind: KindUser, User: name}
				policies = forUsers
			}
			got := s.Decide(req)
			want := reference(policies, req)
			if got.Allowed && req.Principal.Kind == KindUser {
				userAllowed++
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("round %d, request %+v:\nDecide    %+v\nreference %+v\npolicies:\n%s", round, req, got, want, src.String())
			}
		}
	}
	if userAllowed == 0 {
		t.Errorf("no user request was allowed: the generator tests nothing for users")
	}
}

// reference decides req the plain way: every policy, an EntityMap.
func reference(policies cedar.PolicyMap, req Request) Decision {
	db := types.NewEntityUID(typeDatabase, types.String(req.Database))
	resource := db
	entities := types.EntityMap{db: {UID: db}}
	if req.DBRole != "" {
		resource = types.NewEntityUID(typeDatabaseRole, types.String(req.Database+"/"+req.DBRole))
		entities[resource] = types.Entity{UID: resource, Parents: types.NewEntityUIDSet(db)}
	}
	p := types.NewEntityUID(typeWorkload, types.String(req.Principal.ARN))
	entities[p] = types.Entity{UID: p, Attributes: types.NewRecord(types.RecordMap{
		"account": types.String(req.Principal.Account), "role": types.String(req.Principal.Role),
		"session": types.String(req.Principal.Session), "user_id": types.String(req.Principal.UserID),
	})}
	if req.Principal.Kind == KindUser {
		p = types.NewEntityUID(typeUser, types.String(req.Principal.ARN))
		entities[p] = types.Entity{UID: p, Attributes: types.NewRecord(types.RecordMap{
			"account": types.String(req.Principal.Account), "user": types.String(req.Principal.User),
			"user_id": types.String(req.Principal.UserID),
		})}
	}
	now := req.Now.UTC()
	ctx := types.RecordMap{
		"ttl_seconds": types.Long(req.TTLSeconds), "now": types.NewDatetime(now),
		"hour_utc": types.Long(now.Hour()), "weekday": types.String(now.Weekday().String()),
		"stage": types.String(req.Stage),
	}
	if req.SourceIP.IsValid() {
		ctx["source_ip"] = types.IPAddr(netip.PrefixFrom(req.SourceIP, req.SourceIP.BitLen()))
	}
	dec, diag := cedar.Authorize(policies, entities, cedar.Request{
		Principal: p, Action: types.NewEntityUID(typeAction, types.String(req.Action)),
		Resource: resource, Context: types.NewRecord(ctx),
	})
	var out Decision
	out.Allowed = dec == cedar.Allow
	for _, r := range diag.Reasons {
		out.Policies = append(out.Policies, string(r.PolicyID))
	}
	for _, e := range diag.Errors {
		out.Errors = append(out.Errors, string(e.PolicyID)+": "+e.Message)
	}
	slices.Sort(out.Policies)
	slices.Sort(out.Errors)
	return out
}

package policy_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/broker/policy/policytest"
)

const (
	ordersARN     = "arn:aws:iam::123456789012:role/orders-api-role"
	compromised   = "arn:aws:iam::123456789012:role/compromised"
	dbaARN        = "arn:aws:iam::123456789012:role/dba"
	ordersPolicy  = "orders-api-reads-orders"
	quarantinePol = "quarantine"
)

// ordersReadsPolicy lets the orders-api-* roles of one account read orders.
const ordersReadsPolicy = `
@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue",
        resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.account == "123456789012" && principal.role like "orders-api-*"
       && context.ttl_seconds <= 900 };
`

// examplePolicies is the package example's set: ordersReadsPolicy and a quarantine.
const examplePolicies = ordersReadsPolicy + `
@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/compromised", action, resource);
`

// tuesday10 is Tuesday 2025-03-04 10:00 UTC.
var tuesday10 = time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)

func principal(arn string) policy.Principal {
	// arn:aws:iam::<account>:role/<name>
	parts := strings.SplitN(arn, ":", 6)
	return policy.Principal{
		ARN:     arn,
		Account: parts[4],
		Role:    strings.TrimPrefix(parts[5], "role/"),
		Session: "fn-" + strings.TrimPrefix(parts[5], "role/"),
		UserID:  "AROAEXAMPLE:fn",
	}
}

// baseRequest asks for orders/readonly as orders-api-role, allowed by the
// example policy.
func baseRequest() policy.Request {
	return policy.Request{
		Principal:  principal(ordersARN),
		Action:     policy.ActionIssue,
		Database:   "orders",
		DBRole:     "readonly",
		TTLSeconds: 900,
		Now:        tuesday10,
		Stage:      "prod",
	}
}

func mustParse(t testing.TB, files map[string][]byte) *policy.Set {
	t.Helper()
	s, err := policy.Parse(files)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func TestDecide(t *testing.T) {
	type row struct {
		name     string
		policies string // content of test.cedar
		req      func(*policy.Request)
		allowed  bool
		ids      []string
		errs     []string // substrings, one per expected error
	}
	hours := `
@id("office-hours")
permit (principal, action, resource in Ephemera::Database::"orders")
when { context.hour_utc >= 8 && context.hour_utc < 18
       && ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"].contains(context.weekday)
       && context.stage == "prod"
       && context.now < datetime("2030-01-01") };`
	ipPermit := `
@id("from-vpc")
permit (principal, action, resource)
when { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };
@id("from-bastion")
permit (principal, action, resource)
when { context has source_ip && context.source_ip == ip("192.168.7.7") };`
	ipForbid := `
@id("all")
permit (principal, action, resource);
@id("vpc-only")
forbid (principal, action, resource)
unless { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };`
	ipAddr := func(s string) func(*policy.Request) {
		return func(r *policy.Request) { r.SourceIP = netip.MustParseAddr(s) }
	}
	rows := []row{
		{name: "no policies: default deny", policies: ``, allowed: false},
		{name: "only comments: default deny", policies: "// nothing yet\n", allowed: false},
		{name: "permit by like on role", policies: examplePolicies, allowed: true, ids: []string{ordersPolicy}},
		{name: "role not matching like", policies: examplePolicies,
			req: func(r *policy.Request) { r.Principal = principal("arn:aws:iam::123456789012:role/billing-api-role") }},
		{name: "session and user_id attributes", policies: `
@id("by-session") permit (principal, action, resource) when { principal.session == "fn-orders-api-role" && principal.user_id like "AROA*" };`,
			allowed: true, ids: []string{"by-session"}},
		{name: "other action not permitted", policies: examplePolicies,
			req: func(r *policy.Request) { r.Action = policy.ActionRenew }},
		{name: "other role of the database not permitted", policies: examplePolicies,
			req: func(r *policy.Request) { r.DBRole = "readwrite" }},
		{name: "forbid beats permit", policies: examplePolicies,
			req: func(r *policy.Request) {
				r.Principal = principal(compromised)
				r.Principal.Role = "orders-api-compromised" // would match the permit
			},
			ids: []string{quarantinePol}},
		{name: "all matching forbids reported, sorted", policies: examplePolicies + `
@id("a-freeze") forbid (principal, action, resource in Ephemera::Database::"orders");
@id("z-no-issue") forbid (principal, action == Ephemera::Action::"issue", resource);
@id("unrelated") forbid (principal, action, resource in Ephemera::Database::"billing");`,
			ids: []string{"a-freeze", "z-no-issue"}},
		{name: "all matching permits reported, sorted", policies: examplePolicies + `
@id("a-any-orders") permit (principal, action, resource in Ephemera::Database::"orders");`,
			allowed: true, ids: []string{"a-any-orders", ordersPolicy}},
		{name: "ttl 900 allowed", policies: examplePolicies,
			req: func(r *policy.Request) { r.TTLSeconds = 900 }, allowed: true, ids: []string{ordersPolicy}},
		{name: "ttl 901 denied", policies: examplePolicies,
			req: func(r *policy.Request) { r.TTLSeconds = 901 }},
		{name: "same role name in another account denied", policies: examplePolicies,
			req: func(r *policy.Request) { r.Principal = principal("arn:aws:iam::999999999999:role/orders-api-role") }},
		{name: "resource in database matches its role", policies: `
@id("orders-db") permit (principal, action == Ephemera::Action::"issue", resource in Ephemera::Database::"orders");`,
			allowed: true, ids: []string{"orders-db"}},
		{name: "resource in database: other database", policies: `
@id("orders-db") permit (principal, action == Ephemera::Action::"issue", resource in Ephemera::Database::"orders");`,
			req: func(r *policy.Request) { r.Database = "billing" }},
		{name: "is ... in scope", policies: `
@id("roles-of-orders") permit (principal is Ephemera::Workload, action in [Ephemera::Action::"issue", Ephemera::Action::"renew"],
                              resource is Ephemera::DatabaseRole in Ephemera::Database::"orders");`,
			req: func(r *policy.Request) { r.Action = policy.ActionRenew }, allowed: true, ids: []string{"roles-of-orders"}},
		{name: "resource attribute-free condition on the parent", policies: `
@id("cond-in") permit (principal, action, resource) when { resource in Ephemera::Database::"orders" };`,
			allowed: true, ids: []string{"cond-in"}},
		{name: "admin_revoke on a database", policies: `
@id("dba") permit (principal == Ephemera::Workload::"` + dbaARN + `", action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");`,
			req: func(r *policy.Request) {
				r.Principal, r.Action, r.DBRole = principal(dbaARN), policy.ActionAdminRevoke, ""
			},
			allowed: true, ids: []string{"dba"}},
		{name: "admin_revoke: in database is reflexive", policies: `
@id("dba") permit (principal, action == Ephemera::Action::"admin_revoke", resource in Ephemera::Database::"orders");`,
			req:     func(r *policy.Request) { r.Action, r.DBRole = policy.ActionAdminRevoke, "" },
			allowed: true, ids: []string{"dba"}},
		{name: "admin_revoke: other database", policies: `
@id("dba") permit (principal == Ephemera::Workload::"` + dbaARN + `", action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");`,
			req: func(r *policy.Request) {
				r.Principal, r.Action, r.DBRole, r.Database = principal(dbaARN), policy.ActionAdminRevoke, "", "billing"
			}},
		{name: "admin_revoke: other principal", policies: `
@id("dba") permit (principal == Ephemera::Workload::"` + dbaARN + `", action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");`,
			req: func(r *policy.Request) { r.Action, r.DBRole = policy.ActionAdminRevoke, "" }},
		{name: "office hours: tuesday 10:00 prod", policies: hours, allowed: true, ids: []string{"office-hours"}},
		{name: "office hours: tuesday 20:00", policies: hours,
			req: func(r *policy.Request) { r.Now = tuesday10.Add(10 * time.Hour) }},
		{name: "office hours: saturday 10:00", policies: hours,
			req: func(r *policy.Request) { r.Now = tuesday10.AddDate(0, 0, 4) }},
		{name: "office hours: stage dev", policies: hours,
			req: func(r *policy.Request) { r.Stage = "dev" }},
		{name: "office hours: derived from UTC", policies: hours,
			req: func(r *policy.Request) { // 19:00 in Tokyo is 10:00 UTC
				r.Now = tuesday10.In(time.FixedZone("JST", 9*3600))
			},
			allowed: true, ids: []string{"office-hours"}},
		{name: "office hours: local hour is not used", policies: hours,
			req: func(r *policy.Request) { // 10:00 in Tokyo is 01:00 UTC
				r.Now = time.Date(2025, 3, 4, 10, 0, 0, 0, time.FixedZone("JST", 9*3600))
			}},
		{name: "office hours: datetime comparison", policies: hours,
			req: func(r *policy.Request) { r.Now = time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC) }}, // a Tuesday
		{name: "source_ip in range", policies: ipPermit, req: ipAddr("10.1.2.3"),
			allowed: true, ids: []string{"from-vpc"}},
		{name: "source_ip ipv4-mapped ipv6 in range", policies: ipPermit, req: ipAddr("::ffff:10.1.2.3"),
			allowed: true, ids: []string{"from-vpc"}},
		{name: "source_ip equal", policies: ipPermit, req: ipAddr("192.168.7.7"),
			allowed: true, ids: []string{"from-bastion"}},
		{name: "source_ip out of range", policies: ipPermit, req: ipAddr("192.168.1.1")},
		{name: "source_ip ipv6 out of range", policies: ipPermit, req: ipAddr("2001:db8::1")},
		{name: "source_ip absent does not allow", policies: ipPermit},
		{name: "forbid unless source_ip: in range", policies: ipForbid, req: ipAddr("10.9.9.9"),
			allowed: true, ids: []string{"all"}},
		{name: "forbid unless source_ip: absent", policies: ipForbid, ids: []string{"vpc-only"}},
		{name: "evaluation error is reported and does not allow", policies: `
@id("overflow") permit (principal, action, resource) when { context.ttl_seconds * 9223372036854775807 > 0 };`,
			errs: []string{"overflow: "}},
		{name: "evaluation error next to a permit", policies: examplePolicies + `
@id("overflow") permit (principal, action, resource) when { context.ttl_seconds * 9223372036854775807 > 0 };`,
			allowed: true, ids: []string{ordersPolicy}, errs: []string{"overflow: "}},
		{name: "evaluation error in a forbid is ignored by cedar", policies: examplePolicies + `
@id("overflow-forbid") forbid (principal, action, resource) when { context.ttl_seconds * 9223372036854775807 > 0 };`,
			allowed: true, ids: []string{ordersPolicy}, errs: []string{"overflow-forbid: "}},
		{name: "unknown action denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.Action = "frob" }, errs: []string{"request: unknown action"}},
		{name: "issue without db role denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.DBRole = "" }, errs: []string{"request: action issue needs a database role"}},
		{name: "admin_revoke with db role denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.Action = policy.ActionAdminRevoke }, errs: []string{"request: admin_revoke"}},
		{name: "database with slash denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.Database = "orders/readonly" }, errs: []string{"request: database name"}},
		{name: "empty database denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.Database = "" }, errs: []string{"request: empty database"}},
		{name: "empty ARN denied", policies: `@id("all") permit (principal, action, resource);`,
			req: func(r *policy.Request) { r.Principal.ARN = "" }, errs: []string{"request: empty principal ARN"}},
		{name: "zero Now uses the clock", policies: `
@id("recent") permit (principal, action, resource) when { context.now > datetime("2025-01-01") };`,
			req: func(r *policy.Request) { r.Now = time.Time{} }, allowed: true, ids: []string{"recent"}},
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, map[string][]byte{"test.cedar": []byte(tc.policies)})
			req := baseRequest()
			if tc.req != nil {
				tc.req(&req)
			}
			got := s.Decide(req)
			if got.Allowed != tc.allowed {
				t.Errorf("Allowed = %v, want %v (decision %+v)", got.Allowed, tc.allowed, got)
			}
			if !slices.Equal(got.Policies, tc.ids) {
				t.Errorf("Policies = %q, want %q", got.Policies, tc.ids)
			}
			if len(got.Errors) != len(tc.errs) {
				t.Fatalf("Errors = %q, want %d matching %q", got.Errors, len(tc.errs), tc.errs)
			}
			for i, want := range tc.errs {
				if !strings.Contains(got.Errors[i], want) {
					t.Errorf("Errors[%d] = %q, want it to contain %q", i, got.Errors[i], want)
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	rows := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{name: "parse error names file and line",
			files: map[string]string{
				"good.cedar": `permit (principal, action, resource);`,
				"bad.cedar":  "permit (principal, action, resource);\n\npermit (principal, action resource);\n",
			},
			want: []string{"bad.cedar", "bad.cedar:3:"}},
		{name: "parse error in condition",
			files: map[string]string{"x.cedar": "\n\npermit (principal, action, resource) when { 1 + };"},
			want:  []string{"x.cedar:3:"}},
		{name: "duplicate @id across files",
			files: map[string]string{
				"a.cedar": `@id("dup") permit (principal, action, resource);`,
				"b.cedar": "\n@id(\"dup\") forbid (principal, action, resource);",
			},
			want: []string{`b.cedar:2:1: duplicate policy id "dup"`, "a.cedar:1:1"}},
		{name: "duplicate @id in one file",
			files: map[string]string{"a.cedar": `@id("dup") permit (principal, action, resource); @id("dup") permit (principal, action, resource);`},
			want:  []string{`duplicate policy id "dup"`}},
		{name: "duplicate of a default id",
			files: map[string]string{
				"a.cedar": `permit (principal, action, resource);`,
				"b.cedar": `@id("a.cedar#0") permit (principal, action, resource);`,
			},
			want: []string{`duplicate policy id "a.cedar#0"`}},
		{name: "empty @id",
			files: map[string]string{"a.cedar": `@id("") permit (principal, action, resource);`},
			want:  []string{"a.cedar:1:1", "empty @id"}},
		{name: "unknown principal entity type",
			files: map[string]string{"a.cedar": "// header\n@id(\"alice\") permit (principal == User::\"alice\", action, resource);"},
			want:  []string{"a.cedar:2:1", `"alice"`, "unrecognized entity type `User`"}},
		{name: "unknown resource entity type",
			files: map[string]string{"a.cedar": `permit (principal, action, resource in Ephemera::Table::"t");`},
			want:  []string{`"a.cedar#0"`, "Ephemera::Table"}},
		{name: "entity type without namespace",
			files: map[string]string{"a.cedar": `permit (principal, action, resource == DatabaseRole::"orders/readonly");`},
			want:  []string{"DatabaseRole"}},
		{name: "unknown action",
			files: map[string]string{"a.cedar": `permit (principal, action == Ephemera::Action::"frob", resource);`},
			want:  []string{`Ephemera::Action::"frob"`}},
		{name: "unknown action in a set",
			files: map[string]string{"a.cedar": `permit (principal, action in [Ephemera::Action::"issue", Ephemera::Action::"delete"], resource);`},
			want:  []string{`Ephemera::Action::"delete"`}},
		{name: "action of another namespace",
			files: map[string]string{"a.cedar": `permit (principal, action == Action::"issue", resource);`},
			want:  []string{`Action::"issue"`}},
		{name: "admin_revoke on a database role",
			files: map[string]string{"a.cedar": `permit (principal, action == Ephemera::Action::"admin_revoke", resource == Ephemera::DatabaseRole::"orders/x");`},
			want:  []string{"unable to find an applicable action"}},
		{name: "unknown principal attribute",
			files: map[string]string{"a.cedar": `permit (principal, action, resource) when { principal.team == "x" };`},
			want:  []string{"attribute `team`"}},
		{name: "unknown context attribute",
			files: map[string]string{"a.cedar": `permit (principal, action, resource) when { context.ttl < 5 };`},
			want:  []string{"attribute `ttl`"}},
		{name: "type error",
			files: map[string]string{"a.cedar": `permit (principal, action, resource) when { context.ttl_seconds < "900" };`},
			want:  []string{"a.cedar:1:1", "Long", "String"}},
		{name: "unguarded optional source_ip",
			files: map[string]string{"a.cedar": `forbid (principal, action, resource) unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };`},
			want:  []string{"optional attribute `source_ip`"}},
		{name: "all problems reported",
			files: map[string]string{
				"a.cedar": `permit (principal == User::"x", action, resource);`,
				"b.cedar": `permit (principal, action resource);`,
			},
			want: []string{"a.cedar:1:1", "b.cedar"}},
	}
	for _, tc := range rows {
		t.Run(tc.name, func(t *testing.T) {
			files := make(map[string][]byte)
			for k, v := range tc.files {
				files[k] = []byte(v)
			}
			check := func(how string, s *policy.Set, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error, got set with ids %q", how, s.IDs())
				}
				if s != nil {
					t.Errorf("%s: non-nil set with an error", how)
				}
				if !errors.Is(err, policy.ErrInvalid) {
					t.Errorf("%s: error %v does not wrap ErrInvalid", how, err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", how, err, w)
					}
				}
			}
			s, err := policy.Parse(files)
			check("Parse", s, err)
			s, err = policy.LoadDir(writeDir(t, files))
			check("LoadDir", s, err)
		})
	}
}

func TestDefaultIDs(t *testing.T) {
	s := mustParse(t, map[string][]byte{
		"orders.cedar": []byte(`
permit (principal, action, resource in Ephemera::Database::"orders");
@id("named") permit (principal, action, resource in Ephemera::Database::"billing");
forbid (principal, action, resource in Ephemera::Database::"audit");`),
	})
	want := []string{"named", "orders.cedar#0", "orders.cedar#2"}
	if got := s.IDs(); !slices.Equal(got, want) {
		t.Fatalf("IDs() = %q, want %q", got, want)
	}
	if s.Len() != 3 {
		t.Fatalf("Len() = %d, want 3", s.Len())
	}
	if d := s.Decide(baseRequest()); !d.Allowed || !slices.Equal(d.Policies, []string{"orders.cedar#0"}) {
		t.Fatalf("Decide = %+v, want allowed by orders.cedar#0", d)
	}
	s.IDs()[0] = "mutated"
	if s.IDs()[0] != "named" {
		t.Fatal("IDs() exposes internal state")
	}
}

func TestLoadDirMissing(t *testing.T) {
	_, err := policy.LoadDir(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !errors.Is(err, policy.ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDir(missing) error = %v, want ErrInvalid and fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "nope") {
		t.Errorf("error %q does not name the directory", err)
	}
}

func TestLoadDirNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file.cedar")
	if err := os.WriteFile(f, []byte(examplePolicies), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.LoadDir(f); !errors.Is(err, policy.ErrInvalid) {
		t.Fatalf("LoadDir(file) error = %v, want ErrInvalid", err)
	}
}

func TestLoadDirEmpty(t *testing.T) {
	dir := t.TempDir()
	// Not policies: other extensions, subdirectories, nested files.
	mustWrite(t, filepath.Join(dir, "README.md"), "permit (principal, action, resource);")
	mustWrite(t, filepath.Join(dir, "old.cedar.bak"), "permit (principal, action, resource);")
	if err := os.MkdirAll(filepath.Join(dir, "sub.cedar"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, "sub.cedar", "nested.cedar"), "permit (principal, action, resource);")
	mustWrite(t, filepath.Join(dir, "empty.cedar"), "// no policies yet\n")

	for name, load := range map[string]func() (*policy.Set, error){
		"LoadDir":        func() (*policy.Set, error) { return policy.LoadDir(dir) },
		"LoadDir(empty)": func() (*policy.Set, error) { return policy.LoadDir(t.TempDir()) },
		"Parse(nil)":     func() (*policy.Set, error) { return policy.Parse(nil) },
	} {
		s, err := load()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.Len() != 0 || len(s.IDs()) != 0 {
			t.Errorf("%s: Len() = %d, IDs() = %q, want empty", name, s.Len(), s.IDs())
		}
		for _, a := range []policy.Action{policy.ActionIssue, policy.ActionRenew, policy.ActionRevoke} {
			req := baseRequest()
			req.Action = a
			if d := s.Decide(req); d.Allowed || len(d.Policies) != 0 || len(d.Errors) != 0 {
				t.Errorf("%s: Decide(%s) = %+v, want default deny", name, a, d)
			}
		}
	}
}

func TestLoadDirSymlink(t *testing.T) {
	src := t.TempDir()
	mustWrite(t, filepath.Join(src, "real.cedar"), examplePolicies)
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(src, "real.cedar"), filepath.Join(dir, "linked.cedar")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	if err := os.Symlink(src, filepath.Join(dir, "dir.cedar")); err != nil {
		t.Fatal(err)
	}
	s, err := policy.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.IDs(), []string{ordersPolicy, quarantinePol}; !slices.Equal(got, want) {
		t.Fatalf("IDs() = %q, want %q", got, want)
	}
}

func TestParseAndLoadDirAgree(t *testing.T) {
	files := map[string][]byte{
		"10-orders.cedar": []byte(examplePolicies),
		"20-admin.cedar": []byte(`
@id("dba") permit (principal == Ephemera::Workload::"` + dbaARN + `", action, resource in Ephemera::Database::"orders");
permit (principal, action == Ephemera::Action::"renew", resource in Ephemera::Database::"orders") when { context.ttl_seconds <= 300 };`),
		"30-net.cedar": []byte(`
forbid (principal, action, resource in Ephemera::Database::"orders")
unless { context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8")) };`),
	}
	fromMem := mustParse(t, files)
	fromDir, err := policy.LoadDir(writeDir(t, files))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := []string{"20-admin.cedar#1", "30-net.cedar#0", "dba", ordersPolicy, quarantinePol}
	if got := fromMem.IDs(); !slices.Equal(got, wantIDs) {
		t.Fatalf("Parse IDs() = %q, want %q", got, wantIDs)
	}
	if got := fromDir.IDs(); !slices.Equal(got, wantIDs) {
		t.Fatalf("LoadDir IDs() = %q, want %q", got, wantIDs)
	}
	for _, req := range sampleRequests() {
		a, b := fromMem.Decide(req), fromDir.Decide(req)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("request %+v: Parse set says %+v, LoadDir set says %+v", req, a, b)
		}
	}
}

func TestConcurrentDecide(t *testing.T) {
	s := mustParse(t, map[string][]byte{"a.cedar": []byte(examplePolicies)})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if d := s.Decide(baseRequest()); !d.Allowed {
					t.Error("denied")
					return
				}
			}
		})
	}
	wg.Wait()
}

// sampleRequests varies every field of the request.
func sampleRequests() []policy.Request {
	var out []policy.Request
	for _, arn := range []string{ordersARN, compromised, dbaARN, "arn:aws:iam::999999999999:role/orders-api-role"} {
		for _, a := range []policy.Action{policy.ActionIssue, policy.ActionRenew, policy.ActionRevoke, policy.ActionAdminRevoke} {
			for _, db := range []string{"orders", "billing"} {
				for _, ttl := range []int64{60, 300, 900, 901} {
					for _, ip := range []string{"", "10.0.0.1", "192.168.0.1"} {
						r := baseRequest()
						r.Principal = principal(arn)
						r.Action, r.Database, r.TTLSeconds = a, db, ttl
						if a == policy.ActionAdminRevoke {
							r.DBRole = ""
						}
						if ip != "" {
							r.SourceIP = netip.MustParseAddr(ip)
						}
						out = append(out, r)
					}
				}
			}
		}
	}
	return out
}

func writeDir(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		mustWrite(t, filepath.Join(dir, name), string(b))
	}
	return dir
}

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, scoped := range []bool{true, false} {
			name := fmt.Sprintf("policies=%d/resource-scoped", n)
			if !scoped {
				name = fmt.Sprintf("policies=%d/unscoped", n)
			}
			b.Run(name, func(b *testing.B) {
				s := mustParse(b, policytest.Fleet(n, scoped))
				req := baseRequest()
				req.Principal = principal("arn:aws:iam::123456789012:role/svc-0-api")
				req.Database = "db0"
				req.SourceIP = netip.MustParseAddr("10.1.2.3")
				if d := s.Decide(req); !d.Allowed {
					b.Fatalf("benchmark request denied: %+v", d)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					s.Decide(req)
				}
			})
		}
	}
}

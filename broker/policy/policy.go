package policy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// ErrInvalid is wrapped by every error returned by [LoadDir] and [Parse]:
// unreadable directories and files, parse errors, duplicate policy ids and
// schema validation failures. Test for it with [errors.Is].
var ErrInvalid = errors.New("policy: invalid policy set")

// Principal is the authenticated caller of a request: an AWS workload (an
// IAM role, through one of its sessions) or, when the broker allows IAM
// users, an IAM user. A workload becomes the Cedar principal
// Ephemera::Workload::"<ARN>" with the attributes account, role, session and
// user_id; a user becomes Ephemera::User::"<ARN>" with the attributes
// account, user and user_id. The two types never mix: a policy that reads
// principal.role, or names an Ephemera::Workload, never applies to a user.
type Principal struct {
	// ARN is the canonical, path-less ARN, and the entity id:
	// "arn:aws:iam::123456789012:role/orders-api-role" for a workload,
	// "arn:aws:iam::123456789012:user/alice" for a user.
	ARN string
	// Account is the AWS account id (principal.account).
	Account string
	// Role is the IAM role name (principal.role), e.g. "orders-api-role".
	// Ignored for a user.
	Role string
	// Session is the role session name, the Lambda function name
	// (principal.session). Ignored for a user.
	Session string
	// UserID is the IAM unique id of the session or user (principal.user_id).
	UserID string
	// Kind selects the Cedar type. The zero value, KindFromARN, reads it
	// from ARN: an IAM user ARN (arn:<p>:iam::<acct>:user/...) is a user,
	// any other ARN a workload. A Kind that contradicts ARN denies the
	// request.
	Kind PrincipalKind
	// User is the IAM user name (principal.user); when empty, the last
	// segment of a user ARN. Ignored for a workload.
	User string
}

// PrincipalKind is the Cedar entity type a Principal becomes.
type PrincipalKind string

// The kinds of principal.
const (
	// KindFromARN takes the kind from Principal.ARN.
	KindFromARN PrincipalKind = ""
	// KindWorkload is an IAM role: Ephemera::Workload.
	KindWorkload PrincipalKind = "workload"
	// KindUser is an IAM user: Ephemera::User.
	KindUser PrincipalKind = "user"
)

// IsUser reports whether p becomes an Ephemera::User (by Kind, or by its ARN
// when Kind is KindFromARN).
func (p Principal) IsUser() bool {
	if p.Kind == KindFromARN {
		return isUserARN(p.ARN)
	}
	return p.Kind == KindUser
}

// isUserARN reports whether arn names an IAM user: arn:<p>:iam::<acct>:user/...
func isUserARN(arn string) bool {
	parts := strings.SplitN(arn, ":", 6)
	return len(parts) == 6 && parts[0] == "arn" && parts[2] == "iam" && strings.HasPrefix(parts[5], "user/")
}

// Action is a broker operation; it becomes Ephemera::Action::"<Action>".
type Action string

// The actions known to the broker and to the schema. Decide denies any other
// value.
const (
	// ActionIssue asks for a new temporary database user.
	ActionIssue Action = "issue"
	// ActionRenew extends the lifetime of an issued user.
	ActionRenew Action = "renew"
	// ActionRevoke drops a user issued to the caller.
	ActionRevoke Action = "revoke"
	// ActionAdminRevoke drops every temporary user of a database; its
	// resource is the Ephemera::Database itself (Request.DBRole is "").
	ActionAdminRevoke Action = "admin_revoke"
	// ActionAssume asks for temporary AWS credentials of a profile; its
	// resource is Ephemera::AwsProfile::"<Profile>" (Database and DBRole are "").
	ActionAssume Action = "assume"
)

// Request is one authorization question: may Principal perform Action on
// Database/DBRole?
type Request struct {
	// Principal is the authenticated workload.
	Principal Principal
	// Action is the requested operation.
	Action Action
	// Database is the database name. It must not be empty and must not
	// contain "/".
	Database string
	// DBRole is the database role. "" means the resource is
	// Ephemera::Database::"<Database>", which is required for (and only
	// allowed with) ActionAdminRevoke; otherwise the resource is
	// Ephemera::DatabaseRole::"<Database>/<DBRole>" whose parent is
	// Ephemera::Database::"<Database>".
	DBRole string
	// Profile is the AWS profile of ActionAssume (and only of it).
	Profile string
	// TTLSeconds is the requested lifetime (context.ttl_seconds).
	TTLSeconds int64
	// Now is the request time (context.now); context.hour_utc and
	// context.weekday derive from Now.UTC(). The zero value means time.Now().
	Now time.Time
	// SourceIP is the caller's address (context.source_ip). The zero value
	// omits source_ip from the context.
	SourceIP netip.Addr
	// Stage is the deployment stage of the broker (context.stage).
	Stage string
}

// Decision is the outcome of [Set.Decide].
type Decision struct {
	// Allowed reports whether the request is permitted.
	Allowed bool
	// Policies holds the sorted ids of the policies that determined the
	// decision: the matching permits when allowed, the matching forbids when
	// denied by a forbid, and nothing on default deny.
	Policies []string
	// Errors holds evaluation errors reported by Cedar, each formatted as
	// "<policy id>: <message>", sorted. A policy that fails to evaluate is
	// ignored by Cedar (so it neither permits nor forbids). Malformed
	// requests are denied with an error prefixed by "request: ".
	Errors []string
}

// Set is a validated, immutable set of Cedar policies. It is safe for
// concurrent use by multiple goroutines.
type Set struct {
	ids []string // sorted
	// buckets hold the policies that can apply, per principal kind and
	// action.
	buckets [numKinds][numActions]bucket
}

// Principal kinds as indexes of Set.buckets.
const (
	kindWorkload = iota
	kindUser
	numKinds
)

// entry is one policy under its id.
type entry struct {
	id  cedar.PolicyID
	pol *cedar.Policy
	// kinds has bit 1<<k set for each principal kind k the policy applies
	// to: those under which it validates.
	kinds uint8
}

// bucket indexes the policies whose action scope can match one action.
// Policies whose resource scope names a single entity (==, in, is ... in) are
// kept under that entity; all others are in any.
type bucket struct {
	any        []entry
	byResource map[types.EntityUID][]entry
}

// Len returns the number of policies in the set.
func (s *Set) Len() int { return len(s.ids) }

// IDs returns the ids of all policies in the set, sorted. The caller owns
// the returned slice.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// LoadDir loads every regular file whose name ends in ".cedar" directly in
// dir (subdirectories are not searched), in order of file name, and
// validates the result like [Parse]. A directory without policies yields an
// empty Set that denies everything; a missing or unreadable directory is an
// error.
func LoadDir(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: reading policy directory: %w", ErrInvalid, err)
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".cedar") || e.IsDir() {
			continue
		}
		path := filepath.Join(dir, name)
		if e.Type()&fs.ModeType != 0 { // symlink or special file
			fi, err := os.Stat(path)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
			}
			if !fi.Mode().IsRegular() {
				continue
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
		}
		files[name] = b
	}
	return parse(files, true)
}

// Parse builds a Set from in-memory files (file name → Cedar source), in
// order of file name. Every entry is parsed whatever its name. The id of a
// policy is its @id("...") annotation, or "<file name>#<index in file>"
// (e.g. "orders.cedar#0") when it has none. Parse fails, with an error
// wrapping [ErrInvalid] that names the file and position of every problem,
// on a parse error, an empty or duplicate id, or a policy that does not
// validate against the embedded Cedar schema.
func Parse(files map[string][]byte) (*Set, error) {
	return parse(files, true)
}

//go:embed schema.cedarschema
var schemaText []byte

// bothPrincipals is how the embedded schema lists the principal types of
// every action.
const bothPrincipals = "principal: [Workload, User],"

// loadValidators resolves the embedded schema once, and once per principal
// kind: variant k lets every action apply to that kind of principal only.
// A policy applies to the kinds under whose variant it validates, so one
// that reads principal.role (a Workload attribute) or names an
// Ephemera::Workload applies to workloads only, and one that reads
// principal.user or names an Ephemera::User applies to users only; parse
// further keeps permits whose principal scope does not name Ephemera::User
// away from users.
var loadValidators = sync.OnceValues(func() ([numKinds]*validate.Validator, error) {
	var out [numKinds]*validate.Validator
	if _, err := resolveSchema(schemaText); err != nil {
		return out, err
	}
	if !bytes.Contains(schemaText, []byte(bothPrincipals)) {
		return out, fmt.Errorf("schema does not list %q", bothPrincipals)
	}
	for k, only := range [numKinds]string{kindWorkload: "principal: [Workload],", kindUser: "principal: [User],"} {
		rs, err := resolveSchema(bytes.ReplaceAll(schemaText, []byte(bothPrincipals), []byte(only)))
		if err != nil {
			return out, err
		}
		out[k] = validate.New(rs)
	}
	return out, nil
})

func resolveSchema(text []byte) (*resolved.Schema, error) {
	var s schema.Schema
	s.SetFilename("schema.cedarschema")
	if err := s.UnmarshalCedar(text); err != nil {
		return nil, err
	}
	return s.Resolve()
}

// allKinds applies a policy to every principal kind.
const allKinds = 1<<numKinds - 1

// parse implements Parse; withValidation is false only in tests that need
// to load policies the schema would reject (they apply to every kind).
func parse(files map[string][]byte, withValidation bool) (*Set, error) {
	var validators [numKinds]*validate.Validator
	if withValidation {
		var err error
		if validators, err = loadValidators(); err != nil {
			return nil, fmt.Errorf("%w: embedded schema: %w", ErrInvalid, err)
		}
	}

	names := slices.Sorted(func(yield func(string) bool) {
		for name := range files {
			if !yield(name) {
				return
			}
		}
	})

	var problems []string
	var all []entry
	where := make(map[string]string) // id → position, for duplicate reports
	for _, name := range names {
		list, err := cedar.NewPolicyListFromBytes(name, files[name])
		if err != nil {
			msg := strings.ReplaceAll(err.Error(), "<input>", name)
			problems = append(problems, name+": "+msg)
			continue
		}
		for i, p := range list {
			pos := p.Position()
			at := fmt.Sprintf("%s:%d:%d", name, pos.Line, pos.Column)
			id, err := policyID(name, i, p)
			if err != nil {
				problems = append(problems, at+": "+err.Error())
				continue
			}
			if prev, dup := where[id]; dup {
				problems = append(problems, fmt.Sprintf("%s: duplicate policy id %q (first defined at %s)", at, id, prev))
				continue
			}
			where[id] = at
			e := entry{id: cedar.PolicyID(id), pol: p, kinds: allKinds}
			if withValidation {
				var errs [numKinds]error
				e.kinds = 0
				for k, v := range validators {
					if errs[k] = v.Policy("", (*xast.Policy)(p.AST())); errs[k] == nil {
						e.kinds |= 1 << k
					}
				}
				if e.kinds == 0 {
					problems = append(problems, fmt.Sprintf("%s: policy %q does not validate against the schema: %s", at, id, joinErr(errs[principalScopeKind(p)])))
					continue
				}
				// A permit reaches IAM users only if its scope says so.
				if p.Effect() == cedar.Permit && principalScopeKind(p) != kindUser {
					if e.kinds &^= 1 << kindUser; e.kinds == 0 {
						problems = append(problems, fmt.Sprintf("%s: policy %q permits only IAM users but its scope does not say so: write `principal is %s`", at, id, typeUser))
						continue
					}
				}
			}
			all = append(all, e)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return newSet(all), nil
}

// principalScopeKind is kindUser if the principal scope of p names
// Ephemera::User (principal == / in / is Ephemera::User...), else
// kindWorkload.
func principalScopeKind(p *cedar.Policy) int {
	var t types.EntityType
	switch sc := p.AST().Principal.(type) {
	case xast.ScopeTypeEq:
		t = sc.Entity.Type
	case xast.ScopeTypeIn:
		t = sc.Entity.Type
	case xast.ScopeTypeIs:
		t = sc.Type
	case xast.ScopeTypeIsIn:
		t = sc.Type
	}
	if t == typeUser {
		return kindUser
	}
	return kindWorkload
}

// policyID returns the @id annotation of p, or "<file>#<index>".
func policyID(file string, index int, p *cedar.Policy) (string, error) {
	for _, a := range p.AST().Annotations {
		if a.Key == "id" {
			if strings.TrimSpace(string(a.Value)) == "" {
				return "", errors.New(`empty @id("") annotation`)
			}
			return string(a.Value), nil
		}
	}
	return fmt.Sprintf("%s#%d", file, index), nil
}

// joinErr flattens a (possibly joined) error into one line.
func joinErr(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// newSet indexes the policies by action and resource scope. The index only
// skips policies whose scope cannot match a request, so Decide gives the
// same answer as evaluating every policy.
func newSet(all []entry) *Set {
	s := &Set{ids: make([]string, 0, len(all))}
	for _, e := range all {
		s.ids = append(s.ids, string(e.id))
		ast := e.pol.AST()
		key, keyed := resourceKey(ast.Resource)
		for k, ai := range allBuckets {
			if e.kinds&(1<<k) == 0 || !actionScopeMatches(ast.Action, actionUIDs[ai]) {
				continue
			}
			b := &s.buckets[k][ai]
			if !keyed {
				b.any = append(b.any, e)
				continue
			}
			if b.byResource == nil {
				b.byResource = make(map[types.EntityUID][]entry)
			}
			b.byResource[key] = append(b.byResource[key], e)
		}
	}
	slices.Sort(s.ids)
	return s
}

// allBuckets iterates over every (kind, action index) pair.
func allBuckets(yield func(int, int) bool) {
	for k := range numKinds {
		for ai := range numActions {
			if !yield(k, ai) {
				return
			}
		}
	}
}

// resourceKey returns the single entity a resource scope is anchored to.
// `resource == E`, `resource in E` and `resource is T in E` can only match a
// request whose resource is E or has E as its parent (the broker's entity
// graph is one level deep: DatabaseRole in Database).
func resourceKey(scope xast.IsResourceScopeNode) (types.EntityUID, bool) {
	switch sc := scope.(type) {
	case xast.ScopeTypeEq:
		return sc.Entity, true
	case xast.ScopeTypeIn:
		return sc.Entity, true
	case xast.ScopeTypeIsIn:
		return sc.Entity, true
	}
	return types.EntityUID{}, false
}

// actionScopeMatches reports whether an action scope can match action. The
// broker's actions have no parents, so `in` is equality.
func actionScopeMatches(scope xast.IsActionScopeNode, action types.EntityUID) bool {
	switch sc := scope.(type) {
	case xast.ScopeTypeAll:
		return true
	case xast.ScopeTypeEq:
		return sc.Entity == action
	case xast.ScopeTypeIn:
		return sc.Entity == action
	case xast.ScopeTypeInSet:
		return slices.Contains(sc.Entities, action)
	}
	return true // unknown scope kind: never skip it
}

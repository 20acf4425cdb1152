package policy

import (
	"iter"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// Entity types and actions of the model (see schema.cedarschema).
const (
	typeWorkload     types.EntityType = "Ephemera::Workload"
	typeUser         types.EntityType = "Ephemera::User"
	typeDatabase     types.EntityType = "Ephemera::Database"
	typeDatabaseRole types.EntityType = "Ephemera::DatabaseRole"
	typeAction       types.EntityType = "Ephemera::Action"
	typeAwsProfile   types.EntityType = "Ephemera::AwsProfile"
)

// numActions is the number of known actions; actionIndex maps them to
// 0..numActions-1.
const numActions = 5

// Values built once and shared by every Decide call.
var (
	actionUIDs = [numActions]types.EntityUID{
		types.NewEntityUID(typeAction, types.String(ActionIssue)),
		types.NewEntityUID(typeAction, types.String(ActionRenew)),
		types.NewEntityUID(typeAction, types.String(ActionRevoke)),
		types.NewEntityUID(typeAction, types.String(ActionAdminRevoke)),
		types.NewEntityUID(typeAction, types.String(ActionAssume)),
	}
	actionEntities = func() (e [numActions]types.Entity) {
		for i, uid := range actionUIDs {
			e[i] = types.Entity{UID: uid}
		}
		return e
	}()
	hourValues = func() (v [24]types.Value) {
		for h := range v {
			v[h] = types.Long(h)
		}
		return v
	}()
	weekdayValues = func() (v [7]types.Value) {
		for d := range v {
			v[d] = types.String(time.Weekday(d).String())
		}
		return v
	}()
)

func actionIndex(a Action) int {
	switch a {
	case ActionIssue:
		return 0
	case ActionRenew:
		return 1
	case ActionRevoke:
		return 2
	case ActionAdminRevoke:
		return 3
	case ActionAssume:
		return 4
	}
	return -1
}

// Decide evaluates req against the set and returns the decision. With no
// applicable permit policy the request is denied (default deny); any
// matching forbid policy denies it. A malformed request (unknown action,
// empty principal ARN, a principal Kind that contradicts its ARN, empty
// database or one containing "/", DBRole given for admin_revoke or missing
// for another action, Profile missing for assume or given for another
// action) is denied with an error.
func (s *Set) Decide(req Request) Decision {
	ai := actionIndex(req.Action)
	kind := kindWorkload
	if req.Principal.IsUser() {
		kind = kindUser
	}
	switch {
	case ai < 0:
		return requestError("unknown action " + strconv.Quote(string(req.Action)))
	case req.Principal.ARN == "":
		return requestError("empty principal ARN")
	case req.Principal.Kind != KindFromARN && req.Principal.Kind != KindWorkload && req.Principal.Kind != KindUser:
		return requestError("unknown principal kind " + strconv.Quote(string(req.Principal.Kind)))
	case req.Principal.Kind != KindFromARN && req.Principal.IsUser() != isUserARN(req.Principal.ARN):
		return requestError("principal kind " + string(req.Principal.Kind) + " does not match its ARN")
	case req.Action == ActionAssume && (req.Profile == "" || req.Database != "" || req.DBRole != ""):
		return requestError("assume needs a profile and no database")
	case req.Action != ActionAssume && req.Profile != "":
		return requestError("a profile applies only to assume")
	case req.Action == ActionAssume:
	case req.Database == "":
		return requestError("empty database name")
	case strings.Contains(req.Database, "/"):
		return requestError("database name contains \"/\"")
	case req.Action == ActionAdminRevoke && req.DBRole != "":
		return requestError("admin_revoke applies to a database, not a database role")
	case req.Action != ActionAdminRevoke && req.DBRole == "":
		return requestError("action " + string(req.Action) + " needs a database role")
	}

	b := &s.buckets[kind][ai]
	dbUID := types.NewEntityUID(typeDatabase, types.String(req.Database))
	ents := requestEntities{
		action:   actionEntities[ai],
		database: types.Entity{UID: dbUID},
	}
	cands := candidates{b.any, nil, nil}
	if req.Action == ActionAssume {
		profileUID := types.NewEntityUID(typeAwsProfile, types.String(req.Profile))
		ents.resource = types.Entity{UID: profileUID}
		ents.database = types.Entity{}
		cands[1] = b.byResource[profileUID]
	} else if req.DBRole == "" {
		ents.resource = ents.database
		cands[1] = b.byResource[dbUID]
	} else {
		roleUID := types.NewEntityUID(typeDatabaseRole, types.String(req.Database+"/"+req.DBRole))
		cands[1] = b.byResource[roleUID]
		cands[2] = b.byResource[dbUID]
		ents.resource = types.Entity{UID: roleUID, Parents: types.NewEntityUIDSet(dbUID)}
	}
	if len(cands[0]) == 0 && len(cands[1]) == 0 && len(cands[2]) == 0 {
		return Decision{} // no policy can apply: default deny
	}

	ents.principal = principalEntity(req.Principal, kind)

	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	ctx := make(types.RecordMap, 6)
	ctx["ttl_seconds"] = types.Long(req.TTLSeconds)
	ctx["now"] = types.NewDatetime(now)
	ctx["hour_utc"] = hourValues[now.Hour()]
	ctx["weekday"] = weekdayValues[now.Weekday()]
	ctx["stage"] = types.String(req.Stage)
	if req.SourceIP.IsValid() {
		// Cedar has no IPv4-mapped IPv6 addresses or zones: normalize.
		ip := req.SourceIP.Unmap().WithZone("")
		ctx["source_ip"] = types.IPAddr(netip.PrefixFrom(ip, ip.BitLen()))
	}

	dec, diag := cedar.Authorize(&cands, &ents, cedar.Request{
		Principal: ents.principal.UID,
		Action:    ents.action.UID,
		Resource:  ents.resource.UID,
		Context:   types.NewRecord(ctx),
	})

	var out Decision
	out.Allowed = dec == cedar.Allow
	if len(diag.Reasons) > 0 {
		out.Policies = make([]string, len(diag.Reasons))
		for i, r := range diag.Reasons {
			out.Policies[i] = string(r.PolicyID)
		}
		slices.Sort(out.Policies)
		out.Policies = slices.Compact(out.Policies)
	}
	if len(diag.Errors) > 0 {
		out.Errors = make([]string, len(diag.Errors))
		for i, e := range diag.Errors {
			out.Errors[i] = string(e.PolicyID) + ": " + e.Message
		}
		slices.Sort(out.Errors)
	}
	return out
}

// principalEntity is the Cedar entity of p: Ephemera::Workload or
// Ephemera::User, with exactly the attributes the schema declares.
func principalEntity(p Principal, kind int) types.Entity {
	if kind == kindUser {
		user := p.User
		if user == "" {
			user = p.ARN[strings.LastIndexByte(p.ARN, '/')+1:]
		}
		return types.Entity{
			UID: types.NewEntityUID(typeUser, types.String(p.ARN)),
			Attributes: types.NewRecord(types.RecordMap{
				"account": types.String(p.Account),
				"user":    types.String(user),
				"user_id": types.String(p.UserID),
			}),
		}
	}
	return types.Entity{
		UID: types.NewEntityUID(typeWorkload, types.String(p.ARN)),
		Attributes: types.NewRecord(types.RecordMap{
			"account": types.String(p.Account),
			"role":    types.String(p.Role),
			"session": types.String(p.Session),
			"user_id": types.String(p.UserID),
		}),
	}
}

func requestError(msg string) Decision {
	return Decision{Errors: []string{"request: " + msg}}
}

// candidates are the policies that may apply to one request: those of the
// action bucket not tied to a resource, then those tied to the resource and
// to its database. A policy appears in at most one of the three lists.
type candidates [3][]entry

// All implements cedar.PolicyIterator.
func (c *candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, list := range c {
			for _, e := range list {
				if !yield(e.id, e.pol) {
					return
				}
			}
		}
	}
}

// requestEntities is the entity store of one request: the principal, the
// action, the resource and (for a DatabaseRole) its database. It implements
// types.EntityGetter without building a map.
type requestEntities struct {
	principal, action, resource, database types.Entity
}

// Get implements types.EntityGetter.
func (e *requestEntities) Get(uid types.EntityUID) (types.Entity, bool) {
	switch uid {
	case e.principal.UID:
		return e.principal, true
	case e.resource.UID:
		return e.resource, true
	case e.database.UID:
		return e.database, true
	case e.action.UID:
		return e.action, true
	}
	return types.Entity{}, false
}

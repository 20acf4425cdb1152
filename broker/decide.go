package broker

import (
	"context"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// policyRequest builds the Cedar request of a workload's decision.
// An operator has no policy request (decide never consults one for it).
func (b *Broker) policyRequest(c caller, info RequestInfo, action policy.Action, database, dbRole string, ttl time.Duration) policy.Request {
	p := c.principal
	if p == nil {
		return policy.Request{}
	}
	return policy.Request{
		Principal:  principal(p),
		Action:     action,
		Database:   database,
		DBRole:     dbRole,
		TTLSeconds: int64(ttl / time.Second),
		Now:        info.Received,
		SourceIP:   info.SourceIP,
		Stage:      b.cfg.Stage,
	}
}

// decide evaluates the policy inside a policy trace subsegment and records
// the determining policies in rec. An operator is never decided on: the
// operator CLI already holds the admin's login.
func (b *Broker) decide(ctx context.Context, rec *audit.Record, c caller, req policy.Request) error {
	if c.principal == nil {
		return nil
	}
	if b.policies == nil {
		return api.Errorf(api.CodeAccessDenied, "this broker has no policies")
	}
	_, end := trace.Start(ctx, "policy")
	d := b.policies.Decide(req)
	end(nil)
	rec.Policies = d.Policies
	if d.Allowed {
		return nil
	}
	target := req.Database
	if req.DBRole != "" {
		target += "/" + req.DBRole
	}
	if req.Profile != "" {
		target = "AWS profile " + req.Profile
	}
	if len(d.Policies) > 0 {
		return api.Errorf(api.CodeAccessDenied, "%s on %s denied by policy %v", req.Action, target, d.Policies)
	}
	return api.Errorf(api.CodeAccessDenied, "no policy permits %s on %s (default deny)", req.Action, target)
}

// ttlFor resolves a requested TTL against a role's limits: absent means
// the default; above max_ttl is an error, never silently capped.
func ttlFor(requested *int64, role *config.Role) (time.Duration, error) {
	if requested == nil {
		return role.DefaultTTL, nil
	}
	if *requested < 1 {
		return 0, api.Errorf(api.CodeInvalidRequest, "ttl_seconds must be a positive number of seconds")
	}
	if max := int64(role.MaxTTL / time.Second); *requested > max {
		return 0, api.Errorf(api.CodeTTLExceedsMax, "ttl_seconds %d exceeds the role's max_ttl of %d", *requested, max)
	}
	return time.Duration(*requested) * time.Second, nil
}

// dbDeadline bounds a request's database work (the pool wait, the nonce,
// the change and its audit row) by EPHEMERA_DB_TIMEOUT.
func (b *Broker) dbDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	d := b.cfg.DBTimeout
	if d <= 0 {
		d = config.DefaultDBTimeout
	}
	return context.WithTimeout(ctx, d)
}

// notConfigured is the 404 of a name the caller sent that names nothing
// configured; the name is cut, as in the audit record.
func notConfigured(format string, args ...any) error {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = callerText(s)
		}
	}
	return api.Errorf(api.CodeNotFound, format, args...)
}

// principal is the Cedar principal of a verified caller: an
// Ephemera::Workload for a role, an Ephemera::User for an IAM user (only
// with allow_iam_users), so no policy written for roles ever matches a user.
func principal(p *attest.Principal) policy.Principal {
	out := policy.Principal{ARN: p.RoleARN, Account: p.Account, Role: p.Role, Session: p.Session, UserID: p.UserID,
		Kind: policy.KindWorkload}
	if p.IsUser() {
		out.Kind, out.User = policy.KindUser, p.User
	}
	return out
}

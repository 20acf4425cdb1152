package broker

import (
	"context"
	"fmt"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
)

// AdminRevoke ends every unrevoked lease of a principal: incident response.
// It is decided once per database that holds live leases of the principal
// (or only the one named; with no live leases, on every configured
// database); if any decision denies, nothing is revoked. Each revocation
// commits with its own audit row; the answer names the canonical ARN.
func (b *Broker) AdminRevoke(ctx context.Context, in AdminRevokeInput) (out *api.AdminRevocation, err error) {
	info := b.requestInfo(ctx)
	rec := newRecord(info, audit.EventAdminRevoke)
	rec.Database = callerText(in.Database)
	audited := false // once revocations start, each database and lease is audited on its own
	defer func() {
		if !audited {
			b.finish(ctx, info, rec, err, false)
		}
	}()
	dbctx, cancel := b.dbDeadline(ctx)
	defer cancel()

	c, err := b.authenticate(dbctx, in.Identity, true)
	if err != nil {
		return nil, err
	}
	withCaller(&rec, c)
	target, err := b.canonicalPrincipal(in.PrincipalARN)
	if err != nil {
		return nil, err
	}
	var names []string
	if in.Database != "" {
		if b.stores.Get(in.Database) == nil {
			return nil, notConfigured("database %q is not configured", in.Database)
		}
		names = []string{in.Database}
	} else {
		names = b.databaseNames()
	}
	targets := map[string][]*lease.Lease{}
	for _, name := range names {
		ls, err := b.stores.Get(name).LiveByPrincipal(dbctx, target)
		if err != nil {
			return nil, fromStore(err)
		}
		if len(ls) > 0 || in.Database != "" {
			targets[name] = ls
		}
		if len(ls) > 0 {
			target = ls[0].PrincipalARN // as STS spells it (IAM ignores the case of role names)
		}
	}
	if len(targets) == 0 {
		for _, name := range names {
			targets[name] = nil
		}
	}
	// Decide once per database; any deny → nothing is revoked.
	decided := map[string]audit.Record{}
	for _, name := range b.databaseNames() {
		if _, ok := targets[name]; !ok {
			continue
		}
		drec := rec
		drec.Database = name
		if err := b.decide(ctx, &drec, c, b.policyRequest(c, info, policy.ActionAdminRevoke, name, "", 0)); err != nil {
			rec = drec
			return nil, err
		}
		decided[name] = drec
	}
	audited = true
	reason := "admin revoke by " + c.arn()
	if c.principal == nil {
		reason = "break-glass by " + c.operator
		for name, r := range decided {
			r.Reason = reasonBreakGlass
			decided[name] = r
		}
	}
	revoked := 0
	var failed error
	for _, name := range b.databaseNames() {
		ls, ok := targets[name]
		if !ok {
			continue
		}
		for _, l := range ls {
			lrec := decided[name]
			lrec.PrincipalARN, lrec.Account = l.PrincipalARN, l.Account
			if c.principal != nil {
				lrec.PrincipalARN, lrec.Account = c.principal.RoleARN, c.principal.Account
			}
			lrec.DBRole, lrec.Username, lrec.LeaseID = l.DBRole, l.Username, l.ID
			res, err := b.revokeOne(dbctx, info, lrec, l, reason, nil)
			if err != nil {
				failed = err
				b.finish(ctx, info, lrec, err, false)
				continue
			}
			revoked++
			if !res.revokedNow {
				lrec.Reason = alreadyRevoked(lrec.Reason)
			}
			b.finish(ctx, info, lrec, nil, res.revokedNow)
		}
		if len(ls) == 0 {
			b.finish(ctx, info, decided[name], nil, false)
		}
	}
	if failed != nil {
		return nil, &api.Error{Code: api.CodeOf(failed), RetryAfter: api.DefaultRetryAfter, Cause: failed,
			Message: fmt.Sprintf("%d leases revoked; at least one revocation failed and will be retried by the reaper", revoked)}
	}
	return &api.AdminRevocation{PrincipalARN: target, Revoked: revoked}, nil
}

// canonicalPrincipal turns the principal_arn of an admin revoke (a role
// ARN, canonical or with a path, an assumed-role ARN of it, or an IAM user
// ARN when users are allowed) into the canonical ARN that leases record;
// anything else is invalid_request, never a silent "revoked 0".
func (b *Broker) canonicalPrincipal(s string) (string, error) {
	if s == "" {
		return "", api.Errorf(api.CodeInvalidRequest, "principal_arn is required")
	}
	arn, err := attest.CanonicalPrincipalARN(s, b.cfg.AllowIAMUsers)
	if err != nil {
		return "", api.Wrap(api.CodeInvalidRequest, err, "principal_arn: "+err.Error())
	}
	return arn, nil
}

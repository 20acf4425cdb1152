package broker

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// RenewInput asks to extend a lease.
type RenewInput struct {
	Identity   Identity
	LeaseID    string
	TTLSeconds *int64
}

// RevokeInput asks to end a lease now.
type RevokeInput struct {
	Identity Identity
	LeaseID  string
}

// AdminRevokeInput asks to end every unrevoked lease of a principal.
type AdminRevokeInput struct {
	Identity Identity
	// PrincipalARN is the role, as a canonical role ARN, a path-form role
	// ARN or an assumed-role ARN of it.
	PrincipalARN string
	// Database limits the revocation to one database; "" means all.
	Database string
}

// findLease looks a lease up in every configured database.
func (b *Broker) findLease(ctx context.Context, id string) (*lease.Lease, error) {
	for _, name := range b.databaseNames() {
		l, err := b.stores.Get(name).Get(ctx, id)
		if errors.Is(err, lease.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fromStore(err)
		}
		return l, nil
	}
	return nil, api.Errorf(api.CodeNotFound, "no such lease")
}

// leaseRequest is the common start of renew and revoke: check the id,
// verify the caller, find the lease. It fills rec as far as it gets. A
// workload's proof nonce comes back pending (nil for an operator): the
// caller records it with the change (nonceFor) and settles it on every
// other path.
func (b *Broker) leaseRequest(ctx context.Context, rec *audit.Record, id Identity, leaseID string, operatorOK bool) (caller, *attest.PendingNonce, *lease.Lease, error) {
	if !uuidRE.MatchString(leaseID) {
		return caller{}, nil, nil, api.Errorf(api.CodeInvalidRequest, "lease_id must be a lowercase UUID")
	}
	rec.LeaseID = leaseID
	c, pending, err := b.verifyIdentity(ctx, id, operatorOK, true)
	if err != nil {
		return caller{}, nil, nil, err
	}
	withCaller(rec, c)
	l, err := b.findLease(ctx, leaseID)
	if err != nil {
		return c, pending, nil, err
	}
	rec.Database, rec.DBRole, rec.Username = l.Database, l.DBRole, l.Username
	if c.principal == nil { // an operator acts on the holder's lease: record the holder
		rec.PrincipalARN, rec.Account = l.PrincipalARN, l.Account
	}
	return c, pending, l, nil
}

// Renew extends a lease held by the caller, never past its max expiry.
// Once a revocation of the lease has begun, it fails with lease_revoked.
func (b *Broker) Renew(ctx context.Context, in RenewInput) (out *api.Renewal, err error) {
	info := b.requestInfo(ctx)
	rec := newRecord(info, audit.EventRenew)
	committed := false
	defer func() { b.finish(ctx, info, rec, err, committed) }()
	dbctx, cancel := b.dbDeadline(ctx)
	defer cancel()

	c, pending, l, err := b.leaseRequest(dbctx, &rec, in.Identity, in.LeaseID, false)
	defer func() { b.settleNonce(dbctx, pending, err) }()
	if err != nil {
		return nil, err
	}
	if !samePrincipal(l.PrincipalARN, c.arn()) {
		return nil, api.Errorf(api.CodeAccessDenied, "only the principal that holds a lease may renew it")
	}
	role := b.cfg.Database(l.Database).Roles[l.DBRole]
	if role == nil {
		return nil, api.Errorf(api.CodeNotFound, "role %q is no longer configured", l.DBRole)
	}
	ttl, err := ttlFor(in.TTLSeconds, role)
	if err != nil {
		return nil, err
	}
	rec.TTLSeconds = int64(ttl.Seconds())
	if err := b.decide(ctx, &rec, c, b.policyRequest(c, info, policy.ActionRenew, l.Database, l.DBRole, ttl)); err != nil {
		return nil, err
	}
	row := rec
	row.LatencyMS = float64(b.now().Sub(info.Received).Microseconds()) / 1000
	req := lease.RenewRequest{ID: l.ID, TTL: ttl, Renewal: role.Renewal, Audit: row}
	if req.Nonce, req.NonceExpires, err = b.nonceFor(dbctx, l.Database, pending); err != nil {
		return nil, err
	}
	renewed, err := b.stores.Get(l.Database).Renew(dbctx, req)
	settled(pending, err)
	if err != nil {
		return nil, fromStore(err)
	}
	committed = true
	return &api.Renewal{LeaseID: renewed.ID, ExpiresAt: renewed.ExpiresAt, MaxExpiresAt: renewed.MaxExpiresAt}, nil
}

// Revoke ends a lease now: its holder may, and so may a principal the
// policy allows admin_revoke on the lease's database, and an operator.
// Revoking a revoked lease succeeds again (idempotent).
func (b *Broker) Revoke(ctx context.Context, in RevokeInput) (out *api.Revocation, err error) {
	info := b.requestInfo(ctx)
	rec := newRecord(info, audit.EventRevoke)
	committed := false
	defer func() { b.finish(ctx, info, rec, err, committed) }()
	dbctx, cancel := b.dbDeadline(ctx)
	defer cancel()

	c, pending, l, err := b.leaseRequest(dbctx, &rec, in.Identity, in.LeaseID, true)
	defer func() { b.settleNonce(dbctx, pending, err) }()
	if err != nil {
		return nil, err
	}
	reason := "revoked by holder"
	switch {
	case c.principal == nil:
		reason, rec.Reason = "break-glass by "+c.operator, reasonBreakGlass
	case samePrincipal(l.PrincipalARN, c.arn()):
		err = b.decide(ctx, &rec, c, b.policyRequest(c, info, policy.ActionRevoke, l.Database, l.DBRole, 0))
	default:
		// Only an incident responder may revoke another principal's lease.
		reason = "revoked by " + c.arn()
		if err = b.decide(ctx, &rec, c, b.policyRequest(c, info, policy.ActionAdminRevoke, l.Database, "", 0)); err != nil {
			err = api.Errorf(api.CodeAccessDenied, "only the principal that holds a lease, or one allowed admin_revoke, may revoke it")
		}
	}
	if err != nil {
		return nil, err
	}
	got, err := b.revokeOne(dbctx, info, rec, l, reason, pending)
	if err != nil {
		return nil, err
	}
	committed = got.revokedNow
	if !committed {
		rec.Reason = alreadyRevoked(rec.Reason)
	}
	return &api.Revocation{LeaseID: got.lease.ID, RevokedAt: *got.lease.RevokedAt}, nil
}

type revokeResult struct {
	lease      *lease.Lease
	revokedNow bool
}

// revokeOne revokes l through its store, committing rec as the audit row of
// the revocation's first step, and the caller's pending proof nonce (nil
// for none) with it where the store holds the replay database's nonces.
func (b *Broker) revokeOne(ctx context.Context, info RequestInfo, rec audit.Record, l *lease.Lease, reason string, pending *attest.PendingNonce) (revokeResult, error) {
	rctx, end := trace.Start(ctx, "revoke_role")
	rec.LatencyMS = float64(b.now().Sub(info.Received).Microseconds()) / 1000
	req := lease.RevokeRequest{ID: l.ID, Reason: reason, Audit: rec}
	var err error
	if req.Nonce, req.NonceExpires, err = b.nonceFor(ctx, l.Database, pending); err != nil {
		end(err)
		return revokeResult{}, err
	}
	got, now, err := b.stores.Get(l.Database).Revoke(rctx, req)
	settled(pending, err)
	end(err)
	if err != nil {
		return revokeResult{}, fromStore(err)
	}
	return revokeResult{lease: got, revokedNow: now}, nil
}

// samePrincipal compares canonical role ARNs as IAM compares role names:
// ignoring case.
func samePrincipal(a, b string) bool { return a != "" && strings.EqualFold(a, b) }

// Audit reasons of allowed revocations that say more than "allow".
const (
	// reasonBreakGlass marks an operator's revocation (no policy decided).
	reasonBreakGlass = "break_glass"
	reasonAlready    = "already_revoked"
)

// alreadyRevoked is the reason of a revocation that found nothing to do.
func alreadyRevoked(reason string) string {
	if reason == "" {
		return reasonAlready
	}
	return reason + ":" + reasonAlready
}

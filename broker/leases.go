package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

type renewRequest struct {
	Identity   *attest.Proof `json:"identity"`
	TTLSeconds *int64        `json:"ttl_seconds"`
}

type revokeRequest struct {
	Identity *attest.Proof `json:"identity"`
}

type adminRevokeRequest struct {
	Identity     *attest.Proof `json:"identity"`
	PrincipalARN string        `json:"principal_arn"`
	Database     string        `json:"database"`
}

// findLease looks the lease up in every configured database.
func (b *Broker) findLease(ctx context.Context, id string) (*lease.Lease, *apiError) {
	for _, name := range b.cfg.DatabaseNames() {
		l, err := b.stores[name].Get(ctx, id)
		if errors.Is(err, lease.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fromStore(err)
		}
		return l, nil
	}
	return nil, fail(CodeNotFound, "no such lease")
}

// leaseRequest is the common start of renew and revoke: decode, verify,
// find the lease. It fills rec as far as it gets.
func (b *Broker) leaseRequest(r *http.Request, rec *audit.Record, dst any, proof func() *attest.Proof) (*attest.Principal, *lease.Lease, *apiError) {
	ctx := r.Context()
	id := r.PathValue("lease_id")
	if aerr := decode(r, dst); aerr != nil {
		return nil, nil, aerr
	}
	if !uuidRE.MatchString(id) {
		return nil, nil, fail(CodeInvalidRequest, "lease_id must be a lowercase UUID")
	}
	rec.LeaseID = id
	p, err := b.verify(ctx, proof())
	if err != nil {
		return nil, nil, fromVerify(err)
	}
	withPrincipal(rec, p)
	l, aerr := b.findLease(ctx, id)
	if aerr != nil {
		return p, nil, aerr
	}
	rec.Database, rec.DBRole, rec.Username = l.Database, l.DBRole, l.Username
	return p, l, nil
}

func (b *Broker) handleRenew(r *http.Request, ri *reqInfo) (status int, body any, aerr *apiError) {
	ctx := r.Context()
	rec := b.record(ri, audit.EventRenew)
	defer func() { b.finish(ctx, ri, rec, aerr) }()
	var req renewRequest
	p, l, aerr := b.leaseRequest(r, &rec, &req, func() *attest.Proof { return req.Identity })
	if aerr != nil {
		return 0, nil, aerr
	}
	if l.PrincipalARN != p.RoleARN {
		return 0, nil, fail(CodeAccessDenied, "only the principal that holds a lease may renew it")
	}
	db := b.cfg.Database(l.Database)
	role := db.Roles[l.DBRole]
	if role == nil {
		return 0, nil, fail(CodeNotFound, fmt.Sprintf("role %q is no longer configured", l.DBRole))
	}
	ttl, aerr := ttlFor(req.TTLSeconds, role)
	if aerr != nil {
		return 0, nil, aerr
	}
	rec.TTLSeconds = int64(ttl / time.Second)
	if aerr = b.decide(&rec, b.policyRequest(p, ri, policy.ActionRenew, l.Database, l.DBRole, ttl)); aerr != nil {
		return 0, nil, aerr
	}
	renewed, err := b.stores[l.Database].Renew(ctx, l.ID, ttl, role.Renewal, ri.start)
	if err != nil {
		return 0, nil, fromStore(err)
	}
	return http.StatusOK, map[string]any{"lease_id": renewed.ID, "expires_at": renewed.ExpiresAt, "max_expires_at": renewed.MaxExpiresAt}, nil
}

func (b *Broker) handleRevoke(r *http.Request, ri *reqInfo) (status int, body any, aerr *apiError) {
	ctx := r.Context()
	rec := b.record(ri, audit.EventRevoke)
	defer func() { b.finish(ctx, ri, rec, aerr) }()
	var req revokeRequest
	p, l, aerr := b.leaseRequest(r, &rec, &req, func() *attest.Proof { return req.Identity })
	if aerr != nil {
		return 0, nil, aerr
	}
	reason := "revoked by holder"
	if l.PrincipalARN == p.RoleARN {
		aerr = b.decide(&rec, b.policyRequest(p, ri, policy.ActionRevoke, l.Database, l.DBRole, 0))
	} else {
		// Only an incident responder may revoke another principal's lease.
		reason = "revoked by " + p.RoleARN
		aerr = b.decide(&rec, b.policyRequest(p, ri, policy.ActionAdminRevoke, l.Database, "", 0))
		if aerr != nil {
			aerr.Message = "only the principal that holds a lease, or one allowed admin_revoke, may revoke it"
		}
	}
	if aerr != nil {
		return 0, nil, aerr
	}
	revoked, err := b.stores[l.Database].Revoke(ctx, l.ID, reason, b.now())
	if err != nil {
		return 0, nil, fromStore(err)
	}
	return http.StatusOK, map[string]any{"lease_id": revoked.ID, "revoked_at": *revoked.RevokedAt}, nil
}

func (b *Broker) handleAdminRevoke(r *http.Request, ri *reqInfo) (status int, body any, aerr *apiError) {
	ctx := r.Context()
	rec := b.record(ri, audit.EventAdminRevoke)
	audited := false // once decisions are made, each database and lease is audited on its own
	defer func() {
		if !audited {
			b.finish(ctx, ri, rec, aerr)
		}
	}()
	var req adminRevokeRequest
	if aerr = decode(r, &req); aerr != nil {
		return
	}
	rec.Database = req.Database
	p, err := b.verify(ctx, req.Identity)
	if err != nil {
		return 0, nil, fromVerify(err)
	}
	withPrincipal(&rec, p)
	if req.PrincipalARN == "" {
		return 0, nil, fail(CodeInvalidRequest, "principal_arn is required")
	}
	// Which databases: the one named, else every one holding live leases of
	// the principal, else all (so that even "none" needs admin rights).
	var names []string
	if req.Database != "" {
		if b.cfg.Database(req.Database) == nil {
			return 0, nil, fail(CodeNotFound, fmt.Sprintf("database %q is not configured", truncate(req.Database, 64)))
		}
		names = []string{req.Database}
	} else {
		names = b.cfg.DatabaseNames()
	}
	targets := map[string][]*lease.Lease{}
	for _, name := range names {
		ls, err := b.stores[name].LiveByPrincipal(ctx, req.PrincipalARN)
		if err != nil {
			return 0, nil, fromStore(err)
		}
		if len(ls) > 0 || req.Database != "" {
			targets[name] = ls
		}
	}
	if len(targets) == 0 {
		for _, name := range names {
			targets[name] = nil
		}
	}
	// Decide once per database; any deny → nothing is revoked.
	decided := map[string]audit.Record{}
	for _, name := range b.cfg.DatabaseNames() {
		if _, ok := targets[name]; !ok {
			continue
		}
		drec := rec
		drec.Database = name
		if aerr := b.decide(&drec, b.policyRequest(p, ri, policy.ActionAdminRevoke, name, "", 0)); aerr != nil {
			rec = drec
			return 0, nil, aerr
		}
		decided[name] = drec
	}
	audited = true
	revoked := 0
	var failed *apiError
	for name, ls := range targets {
		for _, l := range ls {
			lrec := decided[name]
			lrec.DBRole, lrec.Username, lrec.LeaseID = l.DBRole, l.Username, l.ID
			_, err := b.stores[name].Revoke(ctx, l.ID, "admin revoke by "+p.RoleARN, b.now())
			var lerr *apiError
			if err != nil {
				lerr = fromStore(err)
				failed = lerr
			} else {
				revoked++
			}
			b.finish(ctx, ri, lrec, lerr)
		}
		if len(ls) == 0 {
			b.finish(ctx, ri, decided[name], nil)
		}
	}
	if failed != nil {
		return 0, nil, &apiError{Code: failed.Code, Message: fmt.Sprintf("%d leases revoked; at least one revocation failed and will be retried by the reaper", revoked), cause: failed.cause}
	}
	return http.StatusOK, map[string]int{"revoked": revoked}, nil
}

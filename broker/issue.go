package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// IssueInput asks for a new database credential.
type IssueInput struct {
	Identity Identity
	Database string
	Role     string
	// TTLSeconds is the requested lifetime; nil means the role's default.
	TTLSeconds *int64
}

// Issue verifies the caller, decides with the policy, and creates a
// PostgreSQL user with its lease and the audit row in one transaction. The
// returned credential is the only place its password ever exists.
func (b *Broker) Issue(ctx context.Context, in IssueInput) (cred *api.Credential, err error) {
	info := b.requestInfo(ctx)
	rec := newRecord(info, audit.EventIssue)
	rec.Database, rec.DBRole = callerText(in.Database), callerText(in.Role)
	if in.TTLSeconds != nil {
		rec.TTLSeconds = *in.TTLSeconds
	}
	committed := false
	defer func() { b.finish(ctx, info, rec, err, committed) }()
	dbctx, cancel := b.dbDeadline(ctx)
	defer cancel()

	start := time.Now()
	c, pending, err := b.authenticateDeferred(dbctx, in.Identity)
	verifyTime := time.Since(start)
	if err != nil {
		return nil, err
	}
	// The proof's nonce is recorded in the issue's own transaction when the
	// replay database is the issue's (one commit per credential), else just
	// before it; every other ending spends it here.
	defer func() { b.settleNonce(dbctx, pending, err) }()
	withCaller(&rec, c)
	db := b.cfg.Database(in.Database)
	if db == nil {
		return nil, notConfigured("database %q is not configured", in.Database)
	}
	role := db.Roles[in.Role]
	if role == nil {
		return nil, notConfigured("database %q has no role %q", db.Name, in.Role)
	}
	ttl, err := ttlFor(in.TTLSeconds, role)
	if err != nil {
		return nil, err
	}
	rec.TTLSeconds = int64(ttl / time.Second)
	policyStart := time.Now()
	err = b.decide(ctx, &rec, c, b.policyRequest(c, info, policy.ActionIssue, db.Name, role.Name, ttl))
	policyTime := time.Since(policyStart)
	if err != nil {
		return nil, err
	}
	username, err := pgrole.NewUsername(role.Name)
	if err != nil {
		return nil, internal(err)
	}
	password, err := pgrole.NewPassword()
	if err != nil {
		return nil, internal(err)
	}
	verifier, err := pgrole.SCRAMVerifier(password, db.SCRAMIterations)
	if err != nil {
		return nil, internal(err)
	}
	row := rec
	row.LatencyMS = float64(b.now().Sub(info.Received).Microseconds()) / 1000
	req := lease.IssueRequest{
		DBRole: role.Name, MemberOf: role.MemberOf, Creation: role.Creation,
		Username: username, Verifier: verifier,
		PrincipalARN: c.principal.RoleARN, Account: c.principal.Account, Session: c.principal.Session, RequestID: info.ID,
		IssuedAt: info.Received, TTL: ttl, MaxTTL: role.MaxTTL, MaxLeases: role.MaxLeases,
		Audit: row,
	}
	if req.Nonce, req.NonceExpires, err = b.nonceFor(dbctx, db.Name, pending); err != nil {
		return nil, err
	}
	ictx, endIssue := trace.Start(dbctx, "issue_role")
	l, err := b.stores.Get(db.Name).Issue(ictx, req)
	endIssue(err)
	settled(pending, err)
	if err != nil {
		return nil, fromStore(err)
	}
	committed = true
	rec.Username, rec.LeaseID = l.Username, l.ID
	b.metrics.IssueLatencies(time.Since(start), verifyTime, policyTime)
	b.reapSome(ctx, db.Name)
	return &api.Credential{
		LeaseID: l.ID, Database: db.Name, Role: role.Name, Username: l.Username, Password: password,
		Host: db.Host, Port: db.Port, DBName: db.DBName, SSLMode: db.SSLMode,
		IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, MaxExpiresAt: l.MaxExpiresAt,
		Renewable: l.ExpiresAt.Before(l.MaxExpiresAt),
	}, nil
}

// recordsNoncesIn reports whether db is the replay database, whose
// ephemera.nonces the replay check reads: only then can the issue's
// transaction record the proof's nonce. Another configured name is taken as
// another database even when its host, port and name match the replay
// database's: with auth "dsn" the admin pool connects where its DSN says,
// which the configuration's fields do not bind, and a nonce recorded
// anywhere but where the check looks would let the proof be used again.
func (b *Broker) recordsNoncesIn(db *config.Database) bool {
	return db.Name == b.cfg.ReplayDatabase
}

// nonceFor returns what the store's request records in its own transaction
// for a pending proof nonce: the nonce, when database holds the replay
// database's nonces; otherwise nothing, after spending the nonce in the
// replay database (its own commit). A nil pending nonce (an operator) is
// nothing to record.
func (b *Broker) nonceFor(ctx context.Context, database string, pending *attest.PendingNonce) (string, time.Time, error) {
	if pending == nil || pending.Spent() {
		return "", time.Time{}, nil
	}
	if db := b.cfg.Database(database); db != nil && b.recordsNoncesIn(db) {
		n, exp := pending.Value()
		return n, exp, nil
	}
	if err := b.verifier.Spend(ctx, pending); err != nil {
		return "", time.Time{}, fromVerify(err)
	}
	return "", time.Time{}, nil
}

// settled notes the outcome of a store call that carried the pending
// nonce: committed, or refused because another presentation of the proof
// recorded it first. Either way there is nothing left to spend.
func settled(pending *attest.PendingNonce, err error) {
	if pending != nil && (err == nil || errors.Is(err, lease.ErrReplayed)) {
		pending.MarkSpent()
	}
}

// Expired leases revoked opportunistically after each issue, so revocation
// does not wait only for the scheduled reaper.
const (
	reapOnIssue        = 3
	reapOnIssueTimeout = time.Second
	// reapOnIssueEvery spaces them per database and broker instance: a busy
	// broker does not pay three round trips on every issue.
	reapOnIssueEvery = 10 * time.Second
)

func (b *Broker) reapSome(ctx context.Context, database string) {
	now := b.now().UnixNano()
	last, _ := b.lastReap.LoadOrStore(database, new(atomic.Int64))
	prev := last.(*atomic.Int64).Load()
	if now-prev < int64(reapOnIssueEvery) || !last.(*atomic.Int64).CompareAndSwap(prev, now) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reapOnIssueTimeout)
	defer cancel()
	if s, err := b.reaper.Reap(ctx, database, reapOnIssue); err != nil {
		b.log.Warn("reap on issue failed", "database", database, "err", err)
	} else if s.Revoked+s.Failed > 0 {
		b.log.Info("reaped on issue", "database", database, "revoked", s.Revoked, "failed", s.Failed)
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

type issueRequest struct {
	Identity   *attest.Proof `json:"identity"`
	Database   string        `json:"database"`
	Role       string        `json:"role"`
	TTLSeconds *int64        `json:"ttl_seconds"`
}

// Credential is the answer to a successful issue. It is the only place a
// password ever appears, and it is never logged.
type Credential struct {
	LeaseID      string    `json:"lease_id"`
	Database     string    `json:"database"`
	Role         string    `json:"role"`
	Username     string    `json:"username"`
	Password     string    `json:"password"`
	Host         string    `json:"host"`
	Port         int       `json:"port"`
	DBName       string    `json:"dbname"`
	SSLMode      string    `json:"sslmode"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	MaxExpiresAt time.Time `json:"max_expires_at"`
	Renewable    bool      `json:"renewable"`
}

// record starts an audit record for the request.
func (b *Broker) record(ri *reqInfo, event string) audit.Record {
	r := audit.Record{RequestID: ri.id, Event: event, Time: ri.start}
	if ri.sourceIP.IsValid() {
		r.SourceIP = ri.sourceIP.String()
	}
	return r
}

// finishLine is finish for a record whose row was already written in the
// transaction it audits: the JSON line and the metric only.
func (b *Broker) finishLine(ctx context.Context, ri *reqInfo, rec audit.Record, aerr *apiError) {
	rec = b.complete(ri, rec, aerr)
	_, end := trace.Start(ctx, "audit")
	b.audit.Line(rec)
	end(nil)
	b.metrics.Decision(rec.Event, rec.Decision, rec.Reason)
}

// complete derives decision, reason and latency.
func (b *Broker) complete(ri *reqInfo, rec audit.Record, aerr *apiError) audit.Record {
	rec.Decision = audit.Allow
	if aerr != nil {
		rec.Reason = aerr.Code
		rec.Decision = audit.Deny
		if aerr.Status() >= 500 {
			rec.Decision = audit.Error
		}
	}
	rec.LatencyMS = float64(b.now().Sub(ri.start).Microseconds()) / 1000
	return rec
}

// finish completes and writes rec, deriving decision and reason from aerr.
func (b *Broker) finish(ctx context.Context, ri *reqInfo, rec audit.Record, aerr *apiError) {
	rec = b.complete(ri, rec, aerr)
	actx, end := trace.Start(ctx, "audit")
	end(b.audit.Write(actx, rec)) // a failed row is logged by audit; the stdout line stands
	b.metrics.Decision(rec.Event, rec.Decision, rec.Reason)
}

func withPrincipal(rec *audit.Record, p *attest.Principal) {
	rec.PrincipalARN, rec.Account, rec.Session = p.RoleARN, p.Account, p.Session
}

func (b *Broker) policyRequest(p *attest.Principal, ri *reqInfo, action policy.Action, database, dbRole string, ttl time.Duration) policy.Request {
	return policy.Request{
		Principal:  policy.Principal{ARN: p.RoleARN, Account: p.Account, Role: p.Role, Session: p.Session, UserID: p.UserID},
		Action:     action,
		Database:   database,
		DBRole:     dbRole,
		TTLSeconds: int64(ttl / time.Second),
		Now:        ri.start,
		SourceIP:   ri.sourceIP,
		Stage:      b.cfg.Stage,
	}
}

// verify checks a proof inside a verify_identity subsegment (the STS call
// is its remote child).
func (b *Broker) verify(ctx context.Context, p *attest.Proof) (*attest.Principal, error) {
	ctx, end := trace.Start(ctx, "verify_identity")
	principal, err := b.verifier.Verify(ctx, p)
	if err != nil {
		end(errors.New(attest.CodeOf(err))) // the code only: messages may name caller input
	} else {
		end(nil)
	}
	return principal, err
}

// decideTraced is decide inside a policy subsegment.
func (b *Broker) decideTraced(ctx context.Context, rec *audit.Record, req policy.Request) *apiError {
	_, end := trace.Start(ctx, "policy")
	aerr := b.decide(rec, req)
	end(nil)
	return aerr
}

// decide evaluates the policy and records the determining policies in rec.
func (b *Broker) decide(rec *audit.Record, req policy.Request) *apiError {
	d := b.policies.Decide(req)
	rec.Policies = d.Policies
	if d.Allowed {
		return nil
	}
	target := req.Database
	if req.DBRole != "" {
		target += "/" + req.DBRole
	}
	msg := fmt.Sprintf("no policy permits %s on %s", req.Action, target)
	if len(d.Policies) > 0 {
		msg = fmt.Sprintf("%s on %s denied by policy %v", req.Action, target, d.Policies)
	}
	return &apiError{Code: CodeAccessDenied, Message: msg}
}

// ttlFor resolves the requested TTL against the role's limits.
func ttlFor(requested *int64, role *config.Role) (time.Duration, *apiError) {
	if requested == nil {
		return role.DefaultTTL, nil
	}
	if *requested < 1 {
		return 0, fail(CodeInvalidRequest, "ttl_seconds must be a positive number of seconds")
	}
	if *requested > int64(role.MaxTTL/time.Second) {
		return 0, fail(CodeTTLExceedsMax, fmt.Sprintf("ttl_seconds %d exceeds the role's max_ttl of %d", *requested, int64(role.MaxTTL/time.Second)))
	}
	return time.Duration(*requested) * time.Second, nil
}

func (b *Broker) handleIssue(r *http.Request, ri *reqInfo) (status int, body any, aerr *apiError) {
	ctx := r.Context()
	rec := b.record(ri, audit.EventIssue)
	rowQueued := false
	defer func() {
		if rowQueued {
			b.finishLine(ctx, ri, rec, aerr)
		} else {
			b.finish(ctx, ri, rec, aerr)
		}
	}()

	var req issueRequest
	if aerr = decode(r, &req); aerr != nil {
		return
	}
	rec.Database, rec.DBRole = req.Database, req.Role
	if req.TTLSeconds != nil {
		rec.TTLSeconds = *req.TTLSeconds
	}
	verifyStart := time.Now()
	p, err := b.verify(ctx, req.Identity)
	verifyTime := time.Since(verifyStart)
	if err != nil {
		return 0, nil, fromVerify(err)
	}
	withPrincipal(&rec, p)
	db := b.cfg.Database(req.Database)
	if db == nil {
		return 0, nil, fail(CodeNotFound, fmt.Sprintf("database %q is not configured", truncate(req.Database, 64)))
	}
	role := db.Roles[req.Role]
	if role == nil {
		return 0, nil, fail(CodeNotFound, fmt.Sprintf("database %q has no role %q", db.Name, truncate(req.Role, 64)))
	}
	ttl, aerr := ttlFor(req.TTLSeconds, role)
	if aerr != nil {
		return 0, nil, aerr
	}
	rec.TTLSeconds = int64(ttl / time.Second)
	policyStart := time.Now()
	aerr = b.decideTraced(ctx, &rec, b.policyRequest(p, ri, policy.ActionIssue, db.Name, role.Name, ttl))
	policyTime := time.Since(policyStart)
	if aerr != nil {
		return 0, nil, aerr
	}
	store := b.stores[db.Name]
	username, err := pgrole.NewUsername(role.Name)
	if err != nil {
		return 0, nil, &apiError{Code: CodeInternal, Message: "internal error", cause: err}
	}
	password, err := pgrole.NewPassword()
	if err != nil {
		return 0, nil, &apiError{Code: CodeInternal, Message: "internal error", cause: err}
	}
	verifier, err := pgrole.SCRAMVerifier(password, db.SCRAMIterations)
	if err != nil {
		return 0, nil, &apiError{Code: CodeInternal, Message: "internal error", cause: err}
	}
	ictx, endIssue := trace.Start(ctx, "issue_role")
	l, err := store.Issue(ictx, lease.IssueRequest{
		DBRole: role.Name, MemberOf: role.MemberOf, Creation: role.Creation,
		Username: username, Verifier: verifier,
		PrincipalARN: p.RoleARN, Account: p.Account, Session: p.Session, RequestID: ri.id,
		IssuedAt: ri.start, TTL: ttl, MaxTTL: role.MaxTTL, MaxLeases: role.MaxLeases,
		// The allow row commits with the lease (finish then writes only the line).
		Audit: func(batch *pgx.Batch, l *lease.Lease) {
			row := rec
			row.Decision, row.Username, row.LeaseID = audit.Allow, l.Username, l.ID
			row.LatencyMS = float64(b.now().Sub(ri.start).Microseconds()) / 1000
			audit.Queue(batch, row)
			rowQueued = true
		},
	})
	if err != nil {
		rowQueued = false // rolled back with the lease
	}
	endIssue(err)
	if err != nil {
		return 0, nil, fromStore(err)
	}
	rec.Username, rec.LeaseID = l.Username, l.ID
	b.metrics.IssueLatencies(time.Since(verifyStart), verifyTime, policyTime)
	b.reapSome(ctx, db.Name)
	return http.StatusCreated, Credential{
		LeaseID: l.ID, Database: db.Name, Role: role.Name, Username: l.Username, Password: password,
		Host: db.Host, Port: db.Port, DBName: db.DBName, SSLMode: db.SSLMode,
		IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, MaxExpiresAt: l.MaxExpiresAt,
		Renewable: l.ExpiresAt.Before(l.MaxExpiresAt),
	}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
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

package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ephemera-sh/ephemera/broker/audit"
)

// RevokeRequest is everything Revoke needs. The caller has decided who may
// revoke the lease.
type RevokeRequest struct {
	ID     string
	Reason string
	// Audit is the allow record of the revocation; the store commits it
	// in the transaction that begins the revocation, and fills in the
	// lease's database role, username and id.
	Audit audit.Record
	// Nonce and NonceExpires: as in IssueRequest, recorded in the
	// transaction of step 1 (also when the lease was revoked already).
	Nonce        string
	NonceExpires time.Time
}

// Revoke ends the lease now, in three steps: (1) one transaction: the role
// loses LOGIN, the lease expires now and is marked as being revoked
// (renewals then fail with ErrRevoked), and the audit row commits; (2) the
// user's sessions are terminated (and awaited); (3) one transaction: the
// role is dropped and the lease marked revoked. A failure after step 1 is
// recorded on the lease and the reaper finishes the job (the lease is due:
// it expired in step 1). Revoking a revoked lease returns it unchanged and
// writes nothing but r.Nonce: the caller audits the repeat with AppendAudit. Revoked
// reports whether this call revoked it.
//
// Without sessions or owned objects (the common case) it takes two round
// trips: step 1 is one pipelined batch (an implicit transaction: all of it
// commits or none), steps 2 and 3 another, which checks that no session
// exists and runs a bare DROP ROLE. DROP ROLE fails (2BP01) while any
// database of the cluster records a dependency on the role, so a session
// (55006) or a dependency sends the revocation down revokeSlowly: every
// session ended and awaited, then REASSIGN/DROP OWNED in every database.
// The DO blocks read the role's name from a transaction-local setting, so
// every statement text is constant (prepared once per connection).
func (s *Store) Revoke(ctx context.Context, r RevokeRequest) (l *Lease, revokedNow bool, err error) {
	rec := audit.Normalize(r.Audit)
	rec.Decision = audit.Allow
	b := &pgx.Batch{}
	var begun bool
	if r.Nonce != "" {
		b.Queue(insertNonce, r.Nonce, r.NonceExpires)
	}
	b.Queue("SELECT "+leaseColumns+`, revoke_started_at IS NOT NULL
		FROM ephemera.leases WHERE lease_id = $1 AND database = $2 FOR UPDATE`, r.ID, s.database).QueryRow(func(row pgx.Row) error {
		l, err = scanLease(row, &begun)
		return err
	})
	b.Queue(`SELECT pg_catalog.set_config('ephemera.revoke_user', coalesce((SELECT username FROM ephemera.leases
		WHERE lease_id = $1 AND database = $2 AND revoked_at IS NULL), ''), true)`, r.ID, s.database)
	b.Queue(revokeDisableLogin)
	// The revocation starts when it holds the row lock, not when its
	// statement began (now()): a renewal that took the lock first may have
	// begun after this batch did, and must count as before the revocation.
	var expires *time.Time // the expiry step 1 stored; nil when the lease was revoked already
	b.Queue(`UPDATE ephemera.leases SET expires_at = least(expires_at, c.t), revoke_started_at = coalesce(revoke_started_at, c.t)
		FROM (SELECT pg_catalog.clock_timestamp() AS t) c WHERE lease_id = $1 AND database = $2 AND revoked_at IS NULL
		RETURNING expires_at`, r.ID, s.database).QueryRow(scanOptionalTime(&expires))
	b.Queue(`INSERT INTO ephemera.audit_log (time, request_id, event, decision, reason, principal_arn, account, session, source_ip,
		database, db_role, username, lease_id, ttl_seconds, policies, latency_ms, aws_profile, source_identity)
		SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, l.db_role, l.username, l.lease_id, $12, $13, $14, $15, $16
		FROM ephemera.leases l WHERE l.lease_id = $1 AND l.database = $17 AND l.revoked_at IS NULL`, r.ID, rec.Time, rec.RequestID, rec.Event, rec.Decision,
		rec.Reason, rec.PrincipalARN, rec.Account, rec.Session, rec.SourceIP, rec.Database, rec.TTLSeconds, rec.Policies,
		rec.LatencyMS, rec.AWSProfile, rec.SourceIdentity, s.database)
	err = s.pool.SendBatch(ctx, b).Close()
	if errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	if replayed(err) {
		return nil, false, ErrReplayed
	}
	if err != nil {
		return nil, false, fmt.Errorf("lease: revoke: begin revocation: %w", redactPgError(err))
	}
	if l.RevokedAt != nil {
		return l, false, nil
	}
	if expires != nil {
		l.ExpiresAt = *expires
	}
	// 2 and 3 at once, when no session exists and the role owns nothing.
	var revoked *time.Time
	b = &pgx.Batch{}
	b.Queue("SELECT pg_catalog.set_config('ephemera.revoke_user', $1, true)", l.Username)
	b.Queue(revokeNoSessions)
	b.Queue(`UPDATE ephemera.leases SET revoked_at = pg_catalog.now(), revoke_reason = $2, last_error = NULL, next_attempt_at = NULL
		WHERE lease_id = $1 AND revoked_at IS NULL RETURNING revoked_at`, r.ID, r.Reason).QueryRow(scanOptionalTime(&revoked))
	b.Queue(revokeDropRole)
	err = s.pool.SendBatch(ctx, b).Close()
	var pe *pgconn.PgError
	switch {
	case err == nil && revoked != nil:
		l.RevokedAt, l.RevokeReason = revoked, r.Reason
		return l, true, nil
	case err == nil: // a concurrent revoke or the reaper won
		cur, err := s.Get(ctx, r.ID)
		if err != nil {
			return nil, false, fmt.Errorf("lease: revoke: %w", err)
		}
		return cur, true, nil
	case errors.As(err, &pe) && (pe.Code == "55006" || pe.Code == "2BP01"):
		return s.revokeSlowly(ctx, r, l)
	}
	return nil, false, s.recordFailure(ctx, r.ID, redactPgError(err))
}

// The DO blocks of Revoke read the user's name from the transaction-local
// setting ephemera.revoke_user (empty: nothing to do).
const (
	revokeUser         = `DO $$ DECLARE u text := coalesce(pg_catalog.current_setting('ephemera.revoke_user', true), ''); BEGIN `
	revokeDisableLogin = revokeUser + `IF u <> '' AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = u) THEN
		EXECUTE pg_catalog.format('ALTER ROLE %I NOLOGIN', u); END IF; END $$`
	revokeNoSessions = revokeUser + `IF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE usename = u AND pid <> pg_catalog.pg_backend_pid()) THEN
		RAISE EXCEPTION 'ephemera: the user has sessions to end' USING ERRCODE = '55006'; END IF; END $$`
	revokeDropRole = revokeUser + `IF u <> '' THEN EXECUTE pg_catalog.format('DROP ROLE IF EXISTS %I', u); END IF; END $$`
)

// revokeSlowly is steps 2 and 3 of Revoke in general: every session ended
// and awaited, then what the role owns or holds reassigned and dropped in
// every database, the role dropped and the lease marked revoked.
func (s *Store) revokeSlowly(ctx context.Context, r RevokeRequest, l *Lease) (*Lease, bool, error) {
	// 2. End its sessions (and wait until they are gone).
	if err := TerminateSessions(ctx, s.pool, l.Username); err != nil {
		return nil, false, s.recordFailure(ctx, r.ID, err)
	}
	// 3. Drop the role and mark the lease revoked, together.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var now time.Time
		cur, err := scanLease(tx.QueryRow(ctx, "SELECT "+leaseColumns+`, pg_catalog.now()
			FROM ephemera.leases WHERE lease_id = $1 AND database = $2 FOR UPDATE`, r.ID, s.database), &now)
		if err != nil {
			return err
		}
		if cur.RevokedAt != nil { // a concurrent revoke or the reaper won
			l = cur
			return nil
		}
		if err := s.dropRole(ctx, tx, l.Username, firstGroup(l.MemberOf)); err != nil && !errors.Is(err, ErrRoleGone) {
			return err
		}
		revoked := now.UTC()
		if _, err := tx.Exec(ctx, `UPDATE ephemera.leases SET revoked_at = $2, revoke_reason = $3,
			last_error = NULL, next_attempt_at = NULL WHERE lease_id = $1`, r.ID, revoked, r.Reason); err != nil {
			return fmt.Errorf("mark revoked: %w", err)
		}
		l.RevokedAt, l.RevokeReason = &revoked, r.Reason
		return nil
	})
	if err != nil {
		return nil, false, s.recordFailure(ctx, r.ID, err)
	}
	return l, true, nil
}

// recordFailure notes a failed revocation on the lease so the reaper retries it.
func (s *Store) recordFailure(ctx context.Context, id string, cause error) error {
	msg := cause.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	_, err := s.pool.Exec(context.WithoutCancel(ctx), `UPDATE ephemera.leases SET attempts = attempts + 1, last_error = $2,
		next_attempt_at = pg_catalog.now() + least(interval '5 minutes', interval '1 second' * pg_catalog.power(2, least(attempts, 9)))
		WHERE lease_id = $1`, id, msg)
	return errors.Join(fmt.Errorf("lease: revoke: %w", cause), err)
}

// scanOptionalTime is a batch row callback that stores the row's one
// timestamp (UTC) in *dst, or leaves *dst nil when the statement returned
// no row.
func scanOptionalTime(dst **time.Time) func(pgx.Row) error {
	return func(row pgx.Row) error {
		var t time.Time
		if err := row.Scan(&t); errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return err
		}
		t = t.UTC()
		*dst = &t
		return nil
	}
}

// floor SQL: the hand-written physical floor the broker is measured against; the only SQL on schema ephemera outside broker/lease
//
// This file holds every statement of the bench that touches schema ephemera
// itself: the floor (the least SQL an issue or a revocation needs, sent as
// one round trip), the fixtures that revocation and scale phases start
// from, the cleanup between phases, and a few measurement fixtures. The
// broker's own SQL is measured only through broker/lease's functions.
package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// leaseInsertLit is the lease INSERT with literal values.
func leaseInsertLit(id, db, user string, issued, expires, maxExpires time.Time, requestID string) string {
	return fmt.Sprintf(`INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn,
		account, session, member_of, issued_at, expires_at, max_expires_at, request_id)
		VALUES (%s, %s, %s, %s, %s, %s, %s, ARRAY[%s], %s, %s, %s, %s)`,
		lit(id), lit(db), lit(dbRole), lit(user), lit(principalARN), lit(account), lit(workFunction), lit(group),
		tsLit(issued), tsLit(expires), tsLit(maxExpires), lit(requestID))
}

// ---------------------------------------------------------------------------
// Housekeeping

// cleanup drops every ephemera role and empties the ephemera tables, so that
// each phase starts from zero leases, then checkpoints so that no checkpoint
// of the previous phase's writes lands in the next one.
func (e *env) cleanup(ctx context.Context) error { return e.cleanupKeep(ctx, "") }

// cleanupKeep is cleanup that keeps the fixtures whose leases carry
// request id keep (and their roles).
func (e *env) cleanupKeep(ctx context.Context, keep string) error {
	if _, err := e.super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE 'eph\_%'`); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	rows, err := e.super.Query(ctx, `SELECT rolname FROM pg_roles r WHERE rolname LIKE 'eph\_%' AND NOT EXISTS (
		SELECT 1 FROM ephemera.leases l WHERE l.username = r.rolname AND l.request_id = $1)`, keep)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for len(names) > 0 {
		n := min(len(names), 2000)
		var sb strings.Builder
		sb.WriteString("BEGIN;")
		for _, r := range names[:n] {
			sb.WriteString("DROP ROLE IF EXISTS " + ident(r) + ";")
		}
		sb.WriteString("COMMIT")
		if _, err := e.super.Exec(ctx, sb.String()); err != nil {
			return fmt.Errorf("cleanup: drop roles: %w", err)
		}
		names = names[n:]
	}
	first := "TRUNCATE ephemera.leases, ephemera.audit_log, ephemera.nonces, ephemera.orphans"
	if keep != "" {
		first = "DELETE FROM ephemera.leases WHERE request_id <> " + lit(keep) + "; TRUNCATE ephemera.audit_log, ephemera.nonces, ephemera.orphans"
	}
	for _, s := range []string{
		first,
		"VACUUM ANALYZE ephemera.leases",
		"VACUUM pg_authid",
		"VACUUM pg_auth_members",
		"CHECKPOINT",
	} {
		if _, err := e.super.Exec(ctx, s); err != nil {
			return fmt.Errorf("cleanup: %s: %w", s, err)
		}
	}
	return nil
}

type fixture struct{ leaseID, user string }

// makeFixtures creates n login roles with their leases in database db,
// expiring at expires (the roles stay valid for logins for an hour), in
// transactions of 250, with the fast SCRAM verifier of fixturePassword.
func (e *env) makeFixtures(ctx context.Context, db string, n int, expires time.Time) ([]fixture, error) {
	now := time.Now().UTC().Truncate(time.Second)
	issued := now.Add(-time.Minute)
	maxExp := expires
	if now.After(maxExp) {
		maxExp = now
	}
	maxExp = maxExp.Add(time.Hour)
	validUntil := now.Add(2 * time.Hour)
	out := make([]fixture, 0, n)
	for len(out) < n {
		var sb strings.Builder
		sb.WriteString("BEGIN;")
		for range min(250, n-len(out)) {
			user, id := newNames()
			create, grant := roleSQL(user, e.fixtureVerifier, validUntil)
			sb.WriteString(create + ";" + grant + ";" + leaseInsertLit(id, db, user, issued, expires, maxExp, fixtureRequestID) + ";")
			out = append(out, fixture{leaseID: id, user: user})
		}
		sb.WriteString("COMMIT")
		if _, err := e.admin.Exec(ctx, sb.String()); err != nil {
			return nil, fmt.Errorf("fixtures: %w", err)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// The floor: what PostgreSQL itself allows.

// floorIssue is the bare SQL of an issue in one round trip: one
// multi-statement simple query holding BEGIN, CREATE ROLE ... VALID UNTIL,
// the membership grant, the lease insert and COMMIT.
func floorIssue(pool *pgxpool.Pool, db, verifier string) func(context.Context) error {
	return func(ctx context.Context) error {
		user, id := newNames()
		issued := time.Now().UTC().Truncate(time.Second)
		create, grant := roleSQL(user, verifier, issued.Add(15*time.Minute))
		sql := "BEGIN;" + create + ";" + grant + ";" +
			leaseInsertLit(id, db, user, issued, issued.Add(15*time.Minute), issued.Add(time.Hour), "floor") + ";COMMIT"
		_, err := pool.Exec(ctx, sql)
		return err
	}
}

const leaseInsert = `INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn,
			account, session, member_of, issued_at, expires_at, max_expires_at, request_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

// floorIssueStatements is the same transaction one statement per round
// trip (BEGIN, CREATE, GRANT, INSERT, COMMIT), as pgx.BeginFunc does it.
func floorIssueStatements(pool *pgxpool.Pool, db, verifier string) func(context.Context) error {
	return func(ctx context.Context) error {
		user, id := newNames()
		issued := time.Now().UTC().Truncate(time.Second)
		create, grant := roleSQL(user, verifier, issued.Add(15*time.Minute))
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, create); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, grant); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, leaseInsert, id, db, dbRole, user, principalARN, account, workFunction,
				[]string{group}, issued, issued.Add(15*time.Minute), issued.Add(time.Hour), "floor")
			return err
		})
	}
}

// floorRevoke is the bare SQL of a revocation in one round trip: end the
// user's sessions, drop the role, mark the lease revoked.
func floorRevoke(pool *pgxpool.Pool, next func() (fixture, bool)) func(context.Context) error {
	return func(ctx context.Context) error {
		f, ok := next()
		if !ok {
			return errExhausted
		}
		sql := "BEGIN;SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = " + lit(f.user) +
			";DROP ROLE " + ident(f.user) +
			";UPDATE ephemera.leases SET revoked_at = now(), revoke_reason = 'floor' WHERE lease_id = " + lit(f.leaseID) +
			";COMMIT"
		_, err := pool.Exec(ctx, sql)
		return err
	}
}

// expire makes the fixture leases of db expire at t.
func (e *env) expire(ctx context.Context, db string, ids []fixture, t time.Time) error {
	list := make([]string, len(ids))
	for i, f := range ids {
		list[i] = f.leaseID
	}
	_, err := e.admin.Exec(ctx, `UPDATE ephemera.leases SET expires_at = $1 WHERE database = $2 AND lease_id = ANY($3::uuid[])`, t, db, list)
	return err
}

// analyzeLeases refreshes the planner's statistics of the lease table after
// fixtures were created.
func (e *env) analyzeLeases(ctx context.Context) error {
	_, err := e.super.Exec(ctx, "VACUUM ANALYZE ephemera.leases")
	return err
}

// moveFixtures moves the fixture leases to database db (scale: the same
// rows, counted under another name).
func (e *env) moveFixtures(ctx context.Context, db string) error {
	_, err := e.admin.Exec(ctx, `UPDATE ephemera.leases SET database = $1 WHERE request_id = $2`, db, fixtureRequestID)
	return err
}

// countLiveCapped is the max_leases count capped at 500 rows.
func countLiveCapped(ctx context.Context, p *pgxpool.Pool, db string) error {
	var n int
	return p.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM ephemera.leases
			WHERE database = $1 AND db_role = $2 AND revoked_at IS NULL AND expires_at > $3 LIMIT 500) s`, db, dbRole, time.Now()).Scan(&n)
}

// formerAuditPrincipalIndex puts back (on) or removes (off) the audit index
// that migration 8 dropped, so that the replay phase prices it in the same
// run as the schema without it.
func (e *env) formerAuditPrincipalIndex(ctx context.Context, on bool) error {
	sql := "DROP INDEX IF EXISTS ephemera.audit_log_by_principal"
	if on {
		sql = "CREATE INDEX IF NOT EXISTS audit_log_by_principal ON ephemera.audit_log (principal_arn, time)"
	}
	_, err := e.super.Exec(ctx, sql)
	return err
}

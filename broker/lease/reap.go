package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// MaxBackoff caps the delay between attempts to revoke one lease.
const MaxBackoff = 5 * time.Minute

// Reaped is the outcome of revoking one lease (or one orphan role).
type Reaped struct {
	Lease    *Lease // nil for an orphan role
	Username string
	RoleGone bool  // the role was already gone: counted as revoked
	Err      error // non-nil: the attempt failed and was recorded for retry
	Attempts int   // attempts so far, including this one, when Err != nil
}

// Execer runs statements (a pgx.Tx or pool).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// AuditFunc describes the audit record of an outcome. The store writes it
// inside the transaction that revokes (or fails to revoke) the lease, so
// exactly one row commits per outcome.
type AuditFunc func(r Reaped) audit.Record

// Hooks let tests interrupt a reap at precise points.
type Hooks struct {
	// AfterTerminate runs after a lease's sessions are terminated and before
	// its role is dropped. An error aborts the whole batch, as a crash would.
	AfterTerminate func(ctx context.Context, l *Lease) error
	// BeforeDrop runs in the lease's savepoint; an error fails only that lease.
	BeforeDrop func(ctx context.Context, l *Lease) error
}

// SetHooks installs test hooks (nil to clear).
func (s *Store) SetHooks(h *Hooks) { s.hooks = h }

// ReapExpired revokes up to limit leases that are expired, unrevoked and not
// backing off, taken with FOR UPDATE SKIP LOCKED so concurrent reapers never
// share one. Each lease is revoked in its own savepoint: a failure records
// attempts, last_error and next_attempt_at (exponential backoff capped at
// MaxBackoff) and never stops the batch. It returns the outcomes; an error
// means the batch as a whole did not commit (nothing of it is lost: the
// leases stay due).
func (s *Store) ReapExpired(ctx context.Context, now time.Time, limit int, reason string, record AuditFunc) ([]Reaped, error) {
	now = now.UTC().Truncate(time.Microsecond)
	var out []Reaped
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = out[:0]
		rows, err := tx.Query(ctx, "SELECT "+leaseColumns+`, attempts FROM ephemera.leases
			WHERE database = $3 AND revoked_at IS NULL AND expires_at <= $1 AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
			ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit, s.database)
		if err != nil {
			return fmt.Errorf("select due leases: %w", err)
		}
		var due []*Lease
		var attempts []int
		for rows.Next() {
			var a int
			l, err := scanLease(rows, &a)
			if err != nil {
				rows.Close()
				return fmt.Errorf("scan due lease: %w", err)
			}
			due = append(due, l)
			attempts = append(attempts, a)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("select due leases: %w", err)
		}
		// End every due user's sessions at once; reapOne checks again per lease.
		users := make([]string, len(due))
		for i, l := range due {
			users[i] = l.Username
		}
		// When every session is confirmed gone, nobody can open another (the
		// roles are expired or NOLOGIN), so reapOne need not look again.
		allGone := TerminateAll(ctx, tx, users) == nil
		for i, l := range due {
			r, err := s.reapOne(ctx, tx, l, now, reason, attempts[i], allGone)
			if err != nil {
				return err // aborts the batch
			}
			if record != nil {
				if err := insertAudit(ctx, tx, record(r)); err != nil {
					return fmt.Errorf("record reap of %s: %w", l.ID, err)
				}
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease: reap: %w", err)
	}
	return out, nil
}

// reapOne revokes one locked lease inside tx. The returned error aborts the
// batch; a failure of the revocation itself is returned in Reaped.Err.
func (s *Store) reapOne(ctx context.Context, tx pgx.Tx, l *Lease, now time.Time, reason string, attempts int, sessionsGone bool) (Reaped, error) {
	r := Reaped{Lease: l, Username: l.Username}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return r, fmt.Errorf("savepoint: %w", err)
	}
	failed := func(cause error) (Reaped, error) {
		if err := sp.Rollback(ctx); err != nil {
			return r, fmt.Errorf("rollback to savepoint: %w", err)
		}
		r.Err, r.Attempts = cause, attempts+1
		msg := cause.Error()
		if len(msg) > 500 {
			msg = msg[:500]
		}
		backoff := min(MaxBackoff, time.Second<<min(attempts, 16))
		if _, err := tx.Exec(ctx, `UPDATE ephemera.leases SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
			WHERE lease_id = $1`, l.ID, msg, now.Add(backoff)); err != nil {
			return r, fmt.Errorf("record failure: %w", err)
		}
		return r, nil
	}
	if !sessionsGone {
		if err := TerminateSessions(ctx, sp, l.Username); err != nil {
			return failed(err)
		}
	}
	if h := s.hooks; h != nil && h.AfterTerminate != nil {
		if err := h.AfterTerminate(ctx, l); err != nil {
			return r, err
		}
	}
	if h := s.hooks; h != nil && h.BeforeDrop != nil {
		if err := h.BeforeDrop(ctx, l); err != nil {
			return failed(err)
		}
	}
	err = s.dropRole(ctx, sp, l.Username, firstGroup(l.MemberOf))
	if errors.Is(err, ErrRoleGone) {
		r.RoleGone, err = true, nil
	}
	if err != nil {
		return failed(err)
	}
	why := reason
	if r.RoleGone {
		why += " (role already gone)"
	}
	if _, err := sp.Exec(ctx, `UPDATE ephemera.leases SET revoked_at = $2, revoke_reason = $3, last_error = NULL,
		next_attempt_at = NULL WHERE lease_id = $1`, l.ID, now, why); err != nil {
		return failed(fmt.Errorf("mark revoked: %w", err))
	}
	if err := sp.Commit(ctx); err != nil {
		return r, fmt.Errorf("release savepoint: %w", err)
	}
	l.RevokedAt, l.RevokeReason = &now, why
	return r, nil
}

// Claimed reports whether another configured database holds a live lease
// for username (roles are cluster-wide; leases are per database).
type Claimed func(ctx context.Context, username string) (bool, error)

// Sweep drops this deployment's ephemeral users that no unrevoked lease
// claims here (nor, per claimed, elsewhere) once they have been seen
// orphaned for at least grace. Only members of the marker group are
// candidates (and, as a second guard, only names of NewUsername's form): a
// role created by hand is never swept, whatever its name. The login is
// disabled, sessions are terminated and the role dropped as a lease's would
// be (objects go to the first group the role belongs to, other than the
// marker).
func (s *Store) Sweep(ctx context.Context, now time.Time, grace time.Duration, claimed Claimed, record AuditFunc) ([]Reaped, error) {
	now = now.UTC().Truncate(time.Microsecond)
	marker, err := s.MarkerGroup(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: sweep: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT u.rolname::text FROM pg_catalog.pg_auth_members m
		JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
		JOIN pg_catalog.pg_roles u ON u.oid = m.member
		WHERE g.rolname = $1 AND u.rolname <> CURRENT_USER AND NOT EXISTS (
			SELECT 1 FROM ephemera.leases l WHERE l.username = u.rolname AND l.revoked_at IS NULL)
		ORDER BY 1`, marker)
	if err != nil {
		return nil, fmt.Errorf("lease: sweep: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("lease: sweep: %w", err)
	}
	var candidates []string
	for _, n := range names {
		if !pgrole.ValidUsername(n) {
			continue // marked by hand, not by Issue: leave it to its maker
		}
		if claimed != nil {
			c, err := claimed(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("lease: sweep: %w", err)
			}
			if c {
				continue
			}
		}
		candidates = append(candidates, n)
	}
	// Remember when each candidate was first seen; forget the others.
	if _, err := s.pool.Exec(ctx, `WITH c AS (SELECT pg_catalog.unnest($1::text[]) AS rolname),
		gone AS (DELETE FROM ephemera.orphans o WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.rolname = o.rolname))
		INSERT INTO ephemera.orphans (rolname, first_seen) SELECT rolname, $2 FROM c ON CONFLICT (rolname) DO NOTHING`,
		candidates, now); err != nil {
		return nil, fmt.Errorf("lease: sweep: track orphans: %w", err)
	}
	var out []Reaped
	for _, n := range candidates {
		var r Reaped
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			r = Reaped{Username: n}
			var ripe bool
			err := tx.QueryRow(ctx, `SELECT first_seen <= $2 FROM ephemera.orphans WHERE rolname = $1 FOR UPDATE SKIP LOCKED`,
				n, now.Add(-grace)).Scan(&ripe)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && !ripe) {
				r.Username = "" // another sweeper has it, or it is too young
				return nil
			}
			if err != nil {
				return err
			}
			// Re-check under the lock that no lease claims it now.
			var leased bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ephemera.leases WHERE username = $1 AND revoked_at IS NULL)`, n).Scan(&leased); err != nil {
				return err
			}
			if leased {
				r.Username = ""
				_, err := tx.Exec(ctx, "DELETE FROM ephemera.orphans WHERE rolname = $1", n)
				return err
			}
			var group string
			if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
					JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
					JOIN pg_catalog.pg_roles u ON u.oid = m.member
					WHERE u.rolname = $1 AND g.rolname <> $2 ORDER BY g.rolname LIMIT 1), '')`, n, marker).Scan(&group); err != nil {
				return fmt.Errorf("find group: %w", err)
			}
			if err := disableLogin(ctx, tx, n); err != nil {
				return err
			}
			if err := TerminateSessions(ctx, tx, n); err != nil {
				return err
			}
			if err := s.dropRole(ctx, tx, n, group); errors.Is(err, ErrRoleGone) {
				r.RoleGone = true
			} else if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "DELETE FROM ephemera.orphans WHERE rolname = $1", n); err != nil {
				return err
			}
			if record != nil {
				if err := insertAudit(ctx, tx, record(r)); err != nil {
					return err
				}
			}
			return nil
		})
		switch {
		case err != nil:
			out = append(out, Reaped{Username: n, Err: fmt.Errorf("sweep %s: %w", n, err)})
		case r.Username != "":
			out = append(out, r)
		}
	}
	return out, nil
}

// HasLiveLease reports whether username has an unrevoked lease here.
func (s *Store) HasLiveLease(ctx context.Context, username string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ephemera.leases WHERE username = $1 AND revoked_at IS NULL)`, username).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("lease: live lease: %w", err)
	}
	return ok, nil
}

// DeleteUsedNonces deletes nonces whose proofs can no longer pass the
// freshness check.
func (s *Store) DeleteUsedNonces(ctx context.Context, now time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM ephemera.nonces WHERE expires_at < $1", now)
	if err != nil {
		return 0, fmt.Errorf("lease: delete nonces: %w", err)
	}
	return tag.RowsAffected(), nil
}

// PruneAudit deletes audit rows older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM ephemera.audit_log WHERE time < $1", before)
	if err != nil {
		return 0, fmt.Errorf("lease: prune audit: %w", err)
	}
	return tag.RowsAffected(), nil
}

// LiveLeases returns every unrevoked lease (expired ones included), oldest first.
func (s *Store) LiveLeases(ctx context.Context) ([]*Lease, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+leaseColumns+" FROM ephemera.leases WHERE database = $1 AND revoked_at IS NULL ORDER BY issued_at", s.database)
	if err != nil {
		return nil, fmt.Errorf("lease: live leases: %w", err)
	}
	defer rows.Close()
	var out []*Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("lease: live leases: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

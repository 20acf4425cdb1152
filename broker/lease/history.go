package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/audit"
)

// The operator's read-only questions ("which workload held access to
// orders at 03:00?"), asked of one database's schema through any
// connection (a pool, a transaction). They live here so that no other
// package writes SQL against schema ephemera.

// DB is what the read-only queries need: a pool, a connection or a
// transaction.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckSchema reports whether db holds ephemera's tables (and the login can
// see them).
func CheckSchema(ctx context.Context, db DB) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT pg_catalog.to_regclass('ephemera.leases') IS NOT NULL
		AND pg_catalog.to_regclass('ephemera.audit_log') IS NOT NULL`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("lease: schema: %w", err)
	}
	return ok, nil
}

// DatabaseNames returns the configured database names that appear in
// ephemera.leases, sorted. It walks the (database, db_role, expires_at)
// index one distinct name at a time (a loose index scan), so its cost
// grows with the number of names, not of leases.
func DatabaseNames(ctx context.Context, db DB) ([]string, error) {
	rows, err := db.Query(ctx, `WITH RECURSIVE names(name) AS (
			(SELECT database FROM ephemera.leases ORDER BY database LIMIT 1)
			UNION ALL
			SELECT (SELECT l.database FROM ephemera.leases l WHERE l.database > n.name ORDER BY l.database LIMIT 1)
			FROM names n WHERE n.name IS NOT NULL)
		SELECT name FROM names WHERE name IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("lease: database names: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("lease: database names: %w", err)
	}
	return names, nil
}

// FindDatabase returns the configured name of the database that holds
// lease id, or ErrNotFound.
func FindDatabase(ctx context.Context, db DB, id string) (string, error) {
	var name string
	err := db.QueryRow(ctx, "SELECT database FROM ephemera.leases WHERE lease_id = $1", id).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("lease: find %s: %w", id, err)
	}
	return name, nil
}

// HistoryFilter selects leases and audit rows. Empty fields match all.
type HistoryFilter struct {
	Database     string
	PrincipalARN string
	// From and To bound the period: a lease matches when it was live at
	// some instant of [From, To] (From == To asks "live at that instant");
	// an audit row when its time is in [From, To].
	From, To time.Time
}

// LeasesLive returns the leases live at some point of [f.From, f.To]: issued
// at or before To, and ending (the earlier of expiry and revocation) after
// From. Oldest first.
func LeasesLive(ctx context.Context, db DB, f HistoryFilter) ([]*Lease, error) {
	rows, err := db.Query(ctx, "SELECT "+leaseColumns+` FROM ephemera.leases
		WHERE ($1 = '' OR database = $1) AND ($2 = '' OR pg_catalog.lower(principal_arn) = pg_catalog.lower($2))
		AND issued_at <= $4 AND least(expires_at, revoked_at) > $3
		ORDER BY issued_at, lease_id`, f.Database, f.PrincipalARN, f.From, f.To)
	if err != nil {
		return nil, fmt.Errorf("lease: history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Lease, error) { return scanLease(row) })
	if err != nil {
		return nil, fmt.Errorf("lease: history: %w", err)
	}
	return out, nil
}

// AuditRows returns up to limit audit rows of [f.From, f.To], oldest first,
// and whether more matched.
func AuditRows(ctx context.Context, db DB, f HistoryFilter, limit int) ([]audit.Record, bool, error) {
	rows, err := db.Query(ctx, `SELECT time, request_id, event, decision, reason, principal_arn, account, session,
		source_ip, database, db_role, username, coalesce(lease_id::text, ''), ttl_seconds, policies, latency_ms,
		aws_profile, source_identity
		FROM ephemera.audit_log
		WHERE ($1 = '' OR database = $1) AND ($2 = '' OR pg_catalog.lower(principal_arn) = pg_catalog.lower($2))
		AND time >= $3 AND time <= $4
		ORDER BY time, id LIMIT $5`, f.Database, f.PrincipalARN, f.From, f.To, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("lease: audit rows: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Record, error) {
		var r audit.Record
		err := row.Scan(&r.Time, &r.RequestID, &r.Event, &r.Decision, &r.Reason, &r.PrincipalARN, &r.Account, &r.Session,
			&r.SourceIP, &r.Database, &r.DBRole, &r.Username, &r.LeaseID, &r.TTLSeconds, &r.Policies, &r.LatencyMS,
			&r.AWSProfile, &r.SourceIdentity)
		return audit.Normalize(r), err
	})
	if err != nil {
		return nil, false, fmt.Errorf("lease: audit rows: %w", err)
	}
	if len(recs) > limit {
		return recs[:limit], true, nil
	}
	if recs == nil {
		recs = []audit.Record{}
	}
	return recs, false, nil
}

// LeaseByUsername returns the lease of an ephemeral user, or ErrNotFound.
func LeaseByUsername(ctx context.Context, db DB, username string) (*Lease, error) {
	l, err := scanLease(db.QueryRow(ctx, "SELECT "+leaseColumns+" FROM ephemera.leases WHERE username = $1", username))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("lease: by username: %w", err)
	}
	return l, err
}

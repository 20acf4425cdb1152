package lease

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/audit"
)

// Audit rows are written by this package only, and (for every change of
// state) in the transaction that makes the change: a crash can never leave
// a change without its record, nor a record of a change that rolled back.

const insertAuditSQL = `INSERT INTO ephemera.audit_log
		(time, request_id, event, decision, reason, principal_arn, account, session, source_ip,
		 database, db_role, username, lease_id, ttl_seconds, policies, latency_ms, aws_profile, source_identity)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`

func auditArgs(r audit.Record) []any {
	r = audit.Normalize(r)
	var leaseID any
	if r.LeaseID != "" {
		leaseID = r.LeaseID
	}
	return []any{r.Time, r.RequestID, r.Event, r.Decision, r.Reason, r.PrincipalARN, r.Account, r.Session, r.SourceIP,
		r.Database, r.DBRole, r.Username, leaseID, r.TTLSeconds, r.Policies, r.LatencyMS, r.AWSProfile, r.SourceIdentity}
}

// insertAudit writes r through q (the transaction of the change it records).
func insertAudit(ctx context.Context, q Execer, r audit.Record) error {
	if _, err := q.Exec(ctx, insertAuditSQL, auditArgs(r)...); err != nil {
		return fmt.Errorf("insert audit row: %w", err)
	}
	return nil
}

// queueAudit adds r's row to a batch pipelined in the change's transaction.
func queueAudit(b *pgx.Batch, r audit.Record) { b.Queue(insertAuditSQL, auditArgs(r)...) }

// AppendAudit writes the row of a decision that changed nothing (a denial,
// an error, an idempotent repeat) on its own.
func (s *Store) AppendAudit(ctx context.Context, r audit.Record) error {
	if err := insertAudit(ctx, s.pool, r); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	return nil
}

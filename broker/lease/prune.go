package lease

import (
	"context"
	"fmt"
	"time"
)

// Revoked leases are history once the audit log holds their record; the
// reaper prunes them after the audit retention so the table (and every
// index on it) stays the size of what is live.

// pruneBatch is how many rows one DELETE removes: short transactions, no
// long lock on the table, bounded WAL per statement.
const pruneBatch = 1000

// maxPruneBatches bounds one call; the next run continues.
const maxPruneBatches = 200

// PruneRevoked deletes this database's leases revoked before before, in
// batches of pruneBatch rows (oldest first, skipping rows another pruner
// holds), and returns how many it deleted. Unrevoked leases are never
// touched, however old.
func (s *Store) PruneRevoked(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for range maxPruneBatches {
		tag, err := s.pool.Exec(ctx, `DELETE FROM ephemera.leases WHERE lease_id IN (
			SELECT lease_id FROM ephemera.leases
			WHERE database = $1 AND revoked_at IS NOT NULL AND revoked_at < $2
			ORDER BY revoked_at LIMIT $3 FOR UPDATE SKIP LOCKED)`, s.database, before, pruneBatch)
		if err != nil {
			return total, fmt.Errorf("lease: prune revoked: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			break
		}
	}
	return total, nil
}

// Databases returns the configured database names that hold leases in
// this database's ephemera.leases (revoked ones included), sorted. It
// walks index leases_by_database with one probe per name (a recursive
// "loose index scan"), so it costs the number of names, not of rows.
func (s *Store) Databases(ctx context.Context) ([]string, error) {
	return DatabaseNames(ctx, s.pool)
}

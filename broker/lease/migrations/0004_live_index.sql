-- max_leases counts a role's live leases (revoked_at IS NULL AND expires_at > now);
-- with expires_at in the index, even PostgreSQL's generic plan for the cached
-- statement stays an index range scan (measured: 1.7 ms → 55 µs with 10,000
-- leases elsewhere in the table).
DROP INDEX IF EXISTS ephemera.leases_live_by_role;
CREATE INDEX leases_live_by_role ON ephemera.leases (database, db_role, expires_at) WHERE revoked_at IS NULL;

-- A principal's live leases (LiveByPrincipal) without reading its history.
CREATE INDEX leases_live_by_principal ON ephemera.leases (principal_arn, database, issued_at)
    WHERE revoked_at IS NULL;
-- PruneRevoked reads only revoked rows, oldest first.
CREATE INDEX leases_revoked_by_time ON ephemera.leases (database, revoked_at)
    WHERE revoked_at IS NOT NULL;
-- Which configured names hold leases (Databases): a loose index scan, one
-- index probe per name, whatever the number of rows.
CREATE INDEX leases_by_database ON ephemera.leases (database, issued_at);

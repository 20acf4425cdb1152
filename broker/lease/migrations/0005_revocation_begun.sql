-- A revocation in progress: set (with the database's clock) in the
-- transaction that disables the login, before sessions are ended and the
-- role dropped. A renew that finds it set answers lease_revoked, so a lease
-- whose revocation has begun can never be pushed forward again.
ALTER TABLE ephemera.leases ADD COLUMN revoke_started_at timestamptz;

-- Incident revocation finds a principal's unrevoked leases by ARN, ignoring
-- case: IAM role names are unique regardless of case, and an operator may
-- type the name in another case than STS reported it.
CREATE INDEX leases_unrevoked_by_principal ON ephemera.leases (pg_catalog.lower(principal_arn))
    WHERE revoked_at IS NULL;

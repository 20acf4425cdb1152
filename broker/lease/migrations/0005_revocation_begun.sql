-- A revocation in progress: set (with the database's clock) in the
-- transaction that disables the login, before sessions are ended and the
-- role dropped. A renew that finds it set answers lease_revoked, so a lease
-- whose revocation has begun can never be pushed forward again.
ALTER TABLE ephemera.leases ADD COLUMN revoke_started_at timestamptz;

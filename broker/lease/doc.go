// Package lease keeps ephemera's state in the target PostgreSQL cluster
// (schema ephemera: leases, audit_log, nonces) and performs the role changes
// that must be atomic with it. It is the only package with SQL on schema
// ephemera, and Open (admin pools through broker/admindb, the admin's
// preflight, migrations) is the one way to reach it. Every state change
// commits with its audit row:
//
//   - Issue creates the role, grants its group memberships and inserts the
//     lease and its audit row in ONE transaction: a crash at any point
//     leaves all or none.
//   - Renew moves VALID UNTIL and the lease expiry together, never past the
//     lease's max expiry.
//   - Revoke disables the login, expires the lease and records that its
//     revocation began (a renew after that fails with ErrRevoked), then
//     terminates the user's sessions, then drops the role in every database
//     where pg_shdepend records it and marks the lease revoked; it is
//     idempotent, and a failure after the first step is finished by the
//     reaper.
//
// Migrations are embedded and applied by Migrate under an advisory lock, so
// several brokers starting at once apply each exactly once.
package lease

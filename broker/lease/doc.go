// Package lease keeps ephemera's state in the target PostgreSQL cluster
// (schema ephemera: leases, audit_log, nonces) and performs the role changes
// that must be atomic with it (DESIGN §7):
//
//   - Issue creates the role, grants its group memberships and inserts the
//     lease in ONE transaction: a crash at any point leaves both or neither.
//   - Renew moves VALID UNTIL and the lease expiry together, never past the
//     lease's max expiry.
//   - Revoke disables the login, terminates the user's sessions, drops the
//     role and marks the lease revoked; it is idempotent.
//
// Migrations are embedded and applied by Migrate under an advisory lock, so
// several brokers starting at once apply each exactly once.
package lease

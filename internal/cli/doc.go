// Package cli is the ephemera operator command line (cmd/ephemera only
// wires it): one file per command, each with its own flag.FlagSet.
//
//	ephemera leases [--database D] [--all] [--json]     live leases
//	ephemera audit --database D --at TIME               who held access at an instant
//	ephemera audit --principal ARN --since 24h          one workload's history
//	ephemera revoke --lease ID | --principal ARN        break-glass revocation
//	ephemera reap                                       one reaper run
//	ephemera broker serve [--listen 127.0.0.1:8080]     the broker's HTTP API
//	ephemera reaper run [--every 1m]                    the reaper on an interval
//	ephemera policy validate DIR                        check Cedar policies
//	ephemera policy test DIR CASES.yaml                 policy test cases, for CI
//	ephemera doctor                                     the admin's privileges, PUBLIC CONNECT
//	ephemera local [--serve]                            the demo, or the local stack
//	ephemera local invoke|start DIR                     your own function with the extension
//	ephemera version | help [command]
//
// Database commands connect with --url (default $EPHEMERA_DATABASE_URL) as
// the broker's admin role to the target database and read ephemera.leases
// and ephemera.audit_log; lease rows carry the database's configured name,
// so they work on every name found there unless --database picks one.
// Broker commands (broker serve, reaper run, doctor) read the broker's
// environment: EPHEMERA_CONFIG, EPHEMERA_POLICY_DIR, EPHEMERA_AUDIENCE,
// EPHEMERA_STS_*, EPHEMERA_DB_TIMEOUT, EPHEMERA_DB_POOL_SIZE, EPHEMERA_METRICS_NAMESPACE,
// AWS_REGION.
//
// Main returns the exit status: 0, 1 when a command failed (one line
// "ephemera: ..." on stderr, never with a password), or 2 for a usage error
// (the command's usage and a hint on stderr).
package cli

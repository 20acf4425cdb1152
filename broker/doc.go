// Package broker is ephemera's credential broker as a library.
//
// The use cases are methods of *Broker, each taking a context and a typed
// input and returning a typed answer or an *api.Error (classify with
// errors.Is(err, api.ErrLeaseRevoked) or api.CodeOf(err)):
//
//	Issue        a PostgreSQL user and its lease     POST /v1/credentials
//	Renew        extend a lease                       POST /v1/leases/{lease_id}/renew
//	Revoke       end a lease now                      POST /v1/leases/{lease_id}/revoke
//	AdminRevoke  every live lease of a principal      POST /v1/admin/revoke
//	AssumeAWS    an STS session of an AWS profile     POST /v1/aws-credentials
//
// Every input carries an Identity: Proof(p) for API callers, whose proof is
// verified with STS on every request, or Operator(name) for the operator
// CLI (Revoke and AdminRevoke only; no policy, audited with session
// "operator:<name>" and reason break_glass). Request metadata (id, source
// IP, time) travels in the context (NewContext).
//
// New wires the parts from a *config.Config: proof verification
// (broker/attest), Cedar policy (broker/policy), role statements
// (broker/pgrole), the lease stores (broker/lease, the only code with SQL on
// schema ephemera), the audit log (broker/audit) and metrics
// (broker/metrics). ForOperator builds the CLI's operator-only broker over
// already-open stores. Handler serves the HTTP API: it only decodes (strictly,
// api.Unmarshal), calls a use case and encodes (the error document, with
// Retry-After on 503 and 429). The same handler runs in Lambda
// (functions/broker, through internal/apigw) and locally (ephemera broker
// serve).
//
// Issuing a credential is: verify the proof with STS → decide with Cedar →
// create the role, its lease and its audit row in one transaction. Every
// outcome, allow, deny or error, is audited. A dependency that fails (STS,
// PostgreSQL, or a database deadline of EPHEMERA_DB_TIMEOUT passed) is a 503
// with Retry-After, never a 500. docs/design.md at the repository root has
// the whole contract.
package broker

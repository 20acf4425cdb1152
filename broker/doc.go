// Package broker is ephemera's credential broker as a library (DESIGN §1, §4).
//
// New wires the parts from a *config.Config: proof verification
// (broker/attest), Cedar policy (broker/policy), role statements
// (broker/pgrole), the lease store (broker/lease) and the audit log
// (broker/audit). Handler serves the HTTP API; the same handler runs in Lambda
// (functions/broker, through internal/apigw) and locally (ephemera broker
// serve).
//
// Issuing a credential is: verify the proof with STS → decide with Cedar →
// create the role and its lease in one transaction → audit. Every outcome,
// allow, deny or error, is audited.
package broker

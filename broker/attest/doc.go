// Package attest signs and verifies ephemera identity proofs (DESIGN §3).
//
// A workload proves who it is without holding any secret of its own: it signs
// an STS GetCallerIdentity request with its execution role's temporary
// credentials, binds the request to one broker (X-Ephemera-Audience) and one
// use (X-Ephemera-Nonce), and hands the signed request to the broker instead
// of sending it. The broker checks the request's shape, forwards it unchanged
// to STS, and learns the caller's role from STS's answer.
//
// # Signing (extension side)
//
//	proof, err := attest.Sign(ctx, creds, "eu-west-1", "prod-orders", time.Now())
//
// # Verifying (broker side)
//
//	v, err := attest.NewVerifier(attest.Config{Audience: "prod-orders", Region: "eu-west-1", Nonces: store})
//	principal, err := v.Verify(ctx, proof)
//
// Verify runs the checks of DESIGN §3 in order and makes no outbound call
// unless checks 1 to 8 pass. Every failure is an *Error whose Code is one of
// the broker's stable API codes; its message never contains a signature,
// session token or nonce.
package attest

// Package attest signs and verifies ephemera identity proofs.
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
//	proof, err := attest.ParseProof(body) // strict JSON, or take a decoded *attest.Proof
//	principal, err := v.Verify(ctx, proof)
//
// Verify runs these checks in order, and makes no outbound call unless
// checks 1 to 8 pass:
//
//  1. the method is POST; the URL is https, has no query, fragment or user
//     info, and its path is "/";
//  2. the URL's host is on the STS allowlist (Config.AllowedHosts);
//  3. the body is exactly Action=GetCallerIdentity&Version=2011-06-15;
//  4. header names are only Authorization, Content-Type, Host, X-Amz-Date,
//     X-Amz-Security-Token, X-Ephemera-Audience, X-Ephemera-Nonce and an
//     optional Content-Length equal to the body's length (case-insensitive),
//     each with exactly one value; Host equals the URL's host and
//     Content-Type is form-urlencoded;
//  5. X-Ephemera-Audience is the broker's audience; the nonce is 32
//     lowercase hex characters;
//  6. Authorization is one AWS4-HMAC-SHA256 value whose SignedHeaders
//     include host, x-amz-date, x-ephemera-audience, x-ephemera-nonce (and
//     x-amz-security-token when present) and whose scope's service is sts;
//     X-Amz-Date is well-formed;
//  7. X-Amz-Date is at most 5 minutes old and 1 minute ahead (Config.MaxAge,
//     Config.MaxAhead);
//  8. the nonce was never used (Config.Nonces records it until check 7
//     would refuse the proof anyway). Verify records it here, before STS is
//     asked; VerifyDeferred only reads the store here and hands the caller a
//     PendingNonce to record in its own transaction (the broker records it
//     with the credential it issues: one commit) or with Spend;
//  9. the unchanged request, sent to the configured endpoint with the signed
//     Host header, is answered 200 text/xml with exactly one XML document
//     whose root is GetCallerIdentityResponse with exactly one
//     GetCallerIdentityResult — nothing but an XML declaration (at the very
//     start) and whitespace before it, nothing but whitespace after; no
//     redirect is followed and a call times out after 2 s. A 5xx answer, a
//     timeout or a network failure is sts_unavailable, any other answer
//     identity_rejected;
//  10. the ARN is arn:<p>:sts::<acct>:assumed-role/<role>/<session> (an IAM
//     user arn:<p>:iam::<acct>:user/<name> only with Config.AllowIAMUsers)
//     and its account equals the answer's Account.
//
// Every failure is an *Error whose Code is one of the broker's stable API
// codes and whose Check is the number above; its message never contains a
// signature, session token or nonce, and quotes at most 64 bytes
// ([MaxCallerText]) of anything the caller sent.
//
// # Principals and their ARNs
//
// A verified [Principal] is a role (Kind [KindRole]) named by its canonical,
// path-less ARN arn:<p>:iam::<acct>:role/<role>, or an IAM user (Kind
// [KindUser]) named arn:<p>:iam::<acct>:user/<name>. [CanonicalRoleARN]
// turns any form of a role's ARN (canonical, with a path, or a session's
// assumed-role ARN) into that canonical name, for example to revoke every
// lease of a role during an incident:
//
//	arn, err := attest.CanonicalRoleARN("arn:aws:sts::123456789012:assumed-role/orders-api/orders-fn")
//	// arn == "arn:aws:iam::123456789012:role/orders-api"
package attest

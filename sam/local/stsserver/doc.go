// Package stsserver is a local stand-in for the AWS Security Token Service
// that really verifies AWS Signature Version 4 and answers
// GetCallerIdentity.
//
// It exists for tests and local demos of a credential broker. A broker
// receives a pre-signed GetCallerIdentity request from a workload and
// forwards it unchanged (same headers, same body) to STS. When the target is
// this server the broker connects to 127.0.0.1:PORT but keeps the original
// signed Host header (for example sts.us-east-1.amazonaws.com); the server
// therefore verifies the signature against the Host of the incoming request.
//
// Verification mirrors the real service (Query protocol, POST with a
// form-encoded body), in this order:
//
//  1. method must be POST and the body must parse as
//     application/x-www-form-urlencoded;
//  2. the Authorization header must be a well formed AWS4-HMAC-SHA256
//     header (missing: 403 MissingAuthenticationToken, malformed: 400
//     IncompleteSignature);
//  3. the access key must be known and the X-Amz-Security-Token header must
//     match the key's session token (or be absent for a long-term key),
//     otherwise 403 InvalidClientTokenId;
//  4. X-Amz-Date must be present and consistent with the credential scope,
//     the scope must be for the "sts" service and end in "aws4_request", and
//     SignedHeaders must cover host, x-amz-date and (when sent)
//     x-amz-security-token;
//  5. X-Amz-Date must be within 15 minutes of the server clock;
//  6. the signature is recomputed with the aws-sdk-go-v2 SigV4 signer over
//     exactly the headers named in SignedHeaders and compared in constant
//     time;
//  7. the body must carry Action=GetCallerIdentity and Version=2011-06-15.
//
// Answers have the shape of the real service: text/xml
// GetCallerIdentityResponse documents on success and ErrorResponse
// documents on failure. Every request is recorded (see [Server.Requests])
// before it is verified, and [Server.SetMode] makes the server misbehave in
// specific ways so that clients' defensive checks can be tested.
//
// The package does not import "testing"; [StartTB] accepts the small [TB]
// interface that *testing.T satisfies.
package stsserver

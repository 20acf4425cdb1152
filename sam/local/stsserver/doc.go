// Package stsserver is a local stand-in for the AWS Security Token Service
// that really verifies AWS Signature Version 4 and answers
// GetCallerIdentity and AssumeRole.
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
//     otherwise 403 InvalidClientTokenId; a key whose
//     [Identity.Expiration] has passed (by the server clock) is refused
//     with 403 ExpiredToken;
//  4. X-Amz-Date must be present and consistent with the credential scope,
//     the scope must be for the "sts" service and end in "aws4_request", and
//     SignedHeaders must cover host, x-amz-date and (when sent)
//     x-amz-security-token;
//  5. X-Amz-Date must be within 15 minutes of the server clock;
//  6. the signature is recomputed with the aws-sdk-go-v2 SigV4 signer over
//     exactly the headers named in SignedHeaders and compared in constant
//     time;
//  7. the body must carry Action=GetCallerIdentity or Action=AssumeRole,
//     and Version=2011-06-15.
//
// # AssumeRole
//
// Roles are registered with [Server.AddRole]. The caller is the identity
// that signed the request; it may assume a role only if the role's
// TrustedPrincipals name it (see [Role]); otherwise, and for an unknown
// role, the answer is 403 AccessDenied "User: <caller arn> is not
// authorized to perform: sts:AssumeRole on resource: <role arn>".
// Parameters are checked against the constraints of the STS API model
// (RoleSessionName and SourceIdentity 2-64 characters of [\w+=,.@-],
// DurationSeconds 900-43200, Policy 1-2048 characters, at most 50 tags with
// keys of 1-128 and values of 0-256 characters, ...) and failures are
// reported as 400 ValidationError in the style of STS ("1 validation error
// detected: Value '899' at 'durationSeconds' failed to satisfy constraint:
// Member must have value greater than or equal to 900"). Then:
// DurationSeconds (default one hour) above the role's MaxSessionDuration,
// or above one hour when the caller is itself an assumed-role session
// (role chaining), is a ValidationError; a Policy that is not a JSON object
// is 400 MalformedPolicyDocument; duplicate tag keys (case-insensitive)
// are a ValidationError; an approximate packed size above 100% is 400
// PackedPolicyTooLarge; a region disabled with [Server.SetDisabledRegions]
// gives 403 RegionDisabledException.
//
// On success the server mints new temporary credentials (ASIA... key id,
// secret, session token) and registers them as an [Identity] with the ARN
// arn:aws:sts::<account>:assumed-role/<role name>/<session name>, the
// UserID AROA...:<session name> and an Expiration DurationSeconds from
// the server clock; requests signed with them are accepted until then and
// refused with ExpiredToken afterwards. The session (source identity,
// tags, transitive tag keys, inline policy, duration, minted identity) is
// recorded, see [Server.Sessions]. A minted session that assumes another
// role passes on its source identity (which cannot then be changed) and its
// transitive tags, as in role chaining.
//
// Answers have the shape of the real service: text/xml
// GetCallerIdentityResponse and AssumeRoleResponse documents on success
// and ErrorResponse documents on failure. Every request is recorded (see [Server.Requests])
// before it is verified, and [Server.SetMode] makes the server misbehave in
// specific ways so that clients' defensive checks can be tested.
//
// The package does not import "testing"; [StartTB] accepts the small [TB]
// interface that *testing.T satisfies.
package stsserver

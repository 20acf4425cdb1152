// Package api is the broker's wire contract: the JSON requests and answers of
// its HTTP API, the error codes with their HTTP statuses, the error document,
// and the strict JSON decoder that every party uses to read them.
//
// It is the one definition shared by the broker (which serves it), the
// extension (which calls it), extension/client and every test double, so a
// field cannot drift between them.
//
// # Strict JSON
//
// Unmarshal rejects what Go's encoding/json would silently accept: duplicate
// keys (encoding/json keeps the last), keys that differ from a field only in
// case (encoding/json matches them case-insensitively), keys in one object
// that are equal ignoring case, NUL characters and invalid UTF-8 in any
// string, unknown fields and trailing data. A proxy or WAF that reads the
// first of two duplicate keys must never see another request than the broker
// does. UnmarshalAnswer is the same without the unknown-field rule, for
// answers from the broker and from Lambda, whose newer versions may add
// fields.
//
// # Errors
//
// Every failure answer is an *Error with a stable Code. Callers classify with
// errors.Is against the sentinels (errors.Is(err, api.ErrLeaseRevoked)) or
// read the code with errors.As. An Error's Message is sent to the caller and
// must never hold a password, signature or session token; its Cause is for
// logs only.
package api

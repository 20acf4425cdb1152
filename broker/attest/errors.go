package attest

import (
	"errors"
	"fmt"
)

// Codes of the broker's API (DESIGN §4) that proof verification produces.
const (
	CodeInvalidProof     = "invalid_proof"
	CodeStaleProof       = "stale_proof"
	CodeReplayedProof    = "replayed_proof"
	CodeIdentityRejected = "identity_rejected"
	CodeSTSUnavailable   = "sts_unavailable"
	CodeInternal         = "internal"
)

// Error is a failed verification. Code is a stable API code, Check the number
// of the DESIGN §3 check that failed (0 when none applies). Message is safe to
// return to callers: it never holds a signature, token or nonce.
type Error struct {
	Code    string
	Check   int
	Message string
	Err     error // cause, for logs; never returned to callers
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("attest: %s (check %d): %s: %v", e.Code, e.Check, e.Message, e.Err)
	}
	return fmt.Sprintf("attest: %s (check %d): %s", e.Code, e.Check, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// CodeOf returns err's API code, or "" if err is not an *Error.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func invalid(check int, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidProof, Check: check, Message: fmt.Sprintf(format, args...)}
}

package attest

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Codes of the broker's API that proof verification produces (the same
// strings as package api's codes).
const (
	CodeInvalidProof     = "invalid_proof"
	CodeStaleProof       = "stale_proof"
	CodeReplayedProof    = "replayed_proof"
	CodeIdentityRejected = "identity_rejected"
	CodeSTSUnavailable   = "sts_unavailable"
	CodeInternal         = "internal"
)

// Error is a failed verification. Code is a stable API code, Check the
// number (1 to 10) of the verification step that failed, as listed in the
// package documentation, or 0 when none applies (a proof that is not even
// well-formed JSON). Message is safe to return to callers: it never holds a
// signature, token or nonce, and quotes at most 64 bytes of any text the
// caller sent.
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

// MaxCallerText is the most bytes of caller-sent text (a host, a header
// name, an ARN) that an error message of this package quotes.
const MaxCallerText = 64

// clip cuts caller text to at most MaxCallerText bytes of valid UTF-8:
// invalid bytes become "?", and a cut string ends in "…" (counted in the
// 64 bytes). A 64,000-byte header name is never echoed back.
func clip(s string) string {
	if len(s) <= MaxCallerText && utf8.ValidString(s) {
		return s
	}
	const ellipsis = "…"
	var b strings.Builder
	cut := 0 // length of b when it last had room for the ellipsis
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+size]
		if r == utf8.RuneError && size == 1 {
			piece = "?"
		}
		if b.Len()+len(piece) > MaxCallerText {
			return b.String()[:cut] + ellipsis
		}
		b.WriteString(piece)
		if b.Len()+len(ellipsis) <= MaxCallerText {
			cut = b.Len()
		}
		i += size
	}
	return b.String()
}

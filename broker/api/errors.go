package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Code is a stable error code of the API.
type Code string

// The API's error codes.
const (
	CodeInvalidRequest      Code = "invalid_request"
	CodeTTLExceedsMax       Code = "ttl_exceeds_max"
	CodeInvalidProof        Code = "invalid_proof"
	CodeStaleProof          Code = "stale_proof"
	CodeReplayedProof       Code = "replayed_proof"
	CodeIdentityRejected    Code = "identity_rejected"
	CodeAccessDenied        Code = "access_denied"
	CodeNotFound            Code = "not_found"
	CodeLeaseExpired        Code = "lease_expired"
	CodeLeaseRevoked        Code = "lease_revoked"
	CodePayloadTooLarge     Code = "payload_too_large"
	CodeLeaseLimit          Code = "lease_limit"
	CodeSTSUnavailable      Code = "sts_unavailable"
	CodeDatabaseUnavailable Code = "database_unavailable"
	CodeInternal            Code = "internal"
)

var statusOf = map[Code]int{
	CodeInvalidRequest:      http.StatusBadRequest,
	CodeTTLExceedsMax:       http.StatusBadRequest,
	CodeInvalidProof:        http.StatusUnauthorized,
	CodeStaleProof:          http.StatusUnauthorized,
	CodeReplayedProof:       http.StatusUnauthorized,
	CodeIdentityRejected:    http.StatusUnauthorized,
	CodeAccessDenied:        http.StatusForbidden,
	CodeNotFound:            http.StatusNotFound,
	CodeLeaseExpired:        http.StatusConflict,
	CodeLeaseRevoked:        http.StatusConflict,
	CodePayloadTooLarge:     http.StatusRequestEntityTooLarge,
	CodeLeaseLimit:          http.StatusTooManyRequests,
	CodeSTSUnavailable:      http.StatusServiceUnavailable,
	CodeDatabaseUnavailable: http.StatusServiceUnavailable,
	CodeInternal:            http.StatusInternalServerError,
}

// Codes lists every code, in the order of the table above.
func Codes() []Code {
	return []Code{CodeInvalidRequest, CodeTTLExceedsMax, CodeInvalidProof, CodeStaleProof, CodeReplayedProof,
		CodeIdentityRejected, CodeAccessDenied, CodeNotFound, CodeLeaseExpired, CodeLeaseRevoked,
		CodePayloadTooLarge, CodeLeaseLimit, CodeSTSUnavailable, CodeDatabaseUnavailable, CodeInternal}
}

// Status is the HTTP status of the code; an unknown code is 500.
func (c Code) Status() int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Retryable reports whether a request that failed with this code may
// succeed if sent again later unchanged (with a fresh proof): the 503s and
// lease_limit.
func (c Code) Retryable() bool {
	return c == CodeSTSUnavailable || c == CodeDatabaseUnavailable || c == CodeLeaseLimit
}

// DefaultRetryAfter is the Retry-After of a 503 or 429 that names none.
const DefaultRetryAfter = time.Second

// Error is a failed request: the broker returns it from its use cases, the
// HTTP layer writes it as an ErrorDocument, and the extension's broker
// client reads it back. Message is shown to the caller and never holds a
// password, signature or session token; Cause is for logs only and is never
// sent.
type Error struct {
	Code      Code
	Message   string
	RequestID string
	// RetryAfter is how long a caller should wait before retrying a
	// retryable code; the HTTP layer sends it as Retry-After (whole seconds,
	// at least 1).
	RetryAfter time.Duration
	// Cause is the underlying error (logged, never sent).
	Cause error
}

// Errorf returns an *Error with a formatted message and no cause.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with code and message whose Cause is cause.
func Wrap(code Code, cause error, message string) *Error {
	return &Error{Code: code, Message: message, Cause: cause}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the cause, so errors.Is/As see through an *Error.
func (e *Error) Unwrap() error { return e.Cause }

// Is reports whether target is an *Error with the same code and no message:
// errors.Is(err, api.ErrAccessDenied) matches any access_denied error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Cause == nil && t.Code == e.Code
}

// Status is the HTTP status of the error's code.
func (e *Error) Status() int { return e.Code.Status() }

// RetryAfterSeconds is the value of the Retry-After header for the error:
// its RetryAfter rounded up to whole seconds, at least 1; 0 when the code
// is not retryable.
func (e *Error) RetryAfterSeconds() int {
	if !e.Code.Retryable() {
		return 0
	}
	d := e.RetryAfter
	if d <= 0 {
		d = DefaultRetryAfter
	}
	return int((d + time.Second - 1) / time.Second)
}

// RetryAfterHeader formats RetryAfterSeconds for the Retry-After header,
// or "" when none applies.
func (e *Error) RetryAfterHeader() string {
	if s := e.RetryAfterSeconds(); s > 0 {
		return strconv.Itoa(s)
	}
	return ""
}

// Document is the error's wire form.
func (e *Error) Document() ErrorDocument {
	return ErrorDocument{Error: ErrorBody{Code: e.Code, Message: e.Message, RequestID: e.RequestID}}
}

// Sentinels for errors.Is: each matches every *Error of its code.
var (
	ErrInvalidRequest      = &Error{Code: CodeInvalidRequest}
	ErrTTLExceedsMax       = &Error{Code: CodeTTLExceedsMax}
	ErrInvalidProof        = &Error{Code: CodeInvalidProof}
	ErrStaleProof          = &Error{Code: CodeStaleProof}
	ErrReplayedProof       = &Error{Code: CodeReplayedProof}
	ErrIdentityRejected    = &Error{Code: CodeIdentityRejected}
	ErrAccessDenied        = &Error{Code: CodeAccessDenied}
	ErrNotFound            = &Error{Code: CodeNotFound}
	ErrLeaseExpired        = &Error{Code: CodeLeaseExpired}
	ErrLeaseRevoked        = &Error{Code: CodeLeaseRevoked}
	ErrPayloadTooLarge     = &Error{Code: CodePayloadTooLarge}
	ErrLeaseLimit          = &Error{Code: CodeLeaseLimit}
	ErrSTSUnavailable      = &Error{Code: CodeSTSUnavailable}
	ErrDatabaseUnavailable = &Error{Code: CodeDatabaseUnavailable}
	ErrInternal            = &Error{Code: CodeInternal}
)

// CodeOf returns the code of the first *Error in err's chain, or "".
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrorDocument is the body of every failure answer:
// {"error": {"code": "...", "message": "...", "request_id": "..."}}.
type ErrorDocument struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the inside of an ErrorDocument.
type ErrorBody struct {
	Code      Code   `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// Err returns the document as an *Error.
func (d ErrorDocument) Err() *Error {
	return &Error{Code: d.Error.Code, Message: d.Error.Message, RequestID: d.Error.RequestID}
}

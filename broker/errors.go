package broker

import (
	"errors"
	"net"
	"net/http"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

// API error codes (DESIGN §4).
const (
	CodeInvalidRequest      = "invalid_request"
	CodeTTLExceedsMax       = "ttl_exceeds_max"
	CodeInvalidProof        = attest.CodeInvalidProof
	CodeStaleProof          = attest.CodeStaleProof
	CodeReplayedProof       = attest.CodeReplayedProof
	CodeIdentityRejected    = attest.CodeIdentityRejected
	CodeAccessDenied        = "access_denied"
	CodeNotFound            = "not_found"
	CodeLeaseExpired        = "lease_expired"
	CodeLeaseRevoked        = "lease_revoked"
	CodePayloadTooLarge     = "payload_too_large"
	CodeLeaseLimit          = "lease_limit"
	CodeSTSUnavailable      = attest.CodeSTSUnavailable
	CodeDatabaseUnavailable = "database_unavailable"
	CodeInternal            = "internal"
)

var statusOf = map[string]int{
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

// apiError is an answer other than success. Message is returned to the
// caller and must never hold a password, signature or token; cause is logged.
type apiError struct {
	Code    string
	Message string
	cause   error
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func fail(code, msg string) *apiError { return &apiError{Code: code, Message: msg} }

// Status is the HTTP status of the error's code.
func (e *apiError) Status() int {
	if s, ok := statusOf[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// fromVerify maps a verification error to an API error.
func fromVerify(err error) *apiError {
	var ae *attest.Error
	if errors.As(err, &ae) {
		return &apiError{Code: ae.Code, Message: ae.Message, cause: err}
	}
	return &apiError{Code: CodeInternal, Message: "identity verification failed", cause: err}
}

// fromStore maps a lease store error to an API error.
func fromStore(err error) *apiError {
	switch {
	case errors.Is(err, lease.ErrNotFound):
		return &apiError{Code: CodeNotFound, Message: "no such lease", cause: err}
	case errors.Is(err, lease.ErrExpired):
		return &apiError{Code: CodeLeaseExpired, Message: "the lease has expired", cause: err}
	case errors.Is(err, lease.ErrRevoked):
		return &apiError{Code: CodeLeaseRevoked, Message: "the lease was revoked", cause: err}
	case errors.Is(err, lease.ErrLimit):
		return &apiError{Code: CodeLeaseLimit, Message: "the role has reached max_leases", cause: err}
	case databaseUnavailable(err):
		return &apiError{Code: CodeDatabaseUnavailable, Message: "the database is unavailable", cause: err}
	}
	return &apiError{Code: CodeInternal, Message: "internal error", cause: err}
}

// databaseUnavailable reports errors of reaching the database rather than of
// a statement: connect failures, timeouts, network errors, shutdowns.
func databaseUnavailable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 57P0x: admin/crash shutdown, cannot connect now; 53: insufficient resources
		return len(pe.Code) == 5 && (pe.Code[:2] == "08" || pe.Code[:4] == "57P0" || pe.Code[:2] == "53")
	}
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err)
}

package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors callers can test with errors.Is.
var (
	ErrNotFound = errors.New("lease: not found")
	ErrExpired  = errors.New("lease: expired")
	ErrRevoked  = errors.New("lease: revoked")
	ErrLimit    = errors.New("lease: max_leases reached for this role")
)

// Unavailable reports whether err means the database could not be used
// rather than that a statement was wrong: it cannot be reached, refuses or
// ends the connection (down, starting up or shutting down, too many
// connections, terminated), a pool cannot hand out a connection in time,
// the request's database deadline passed, or the request was cancelled
// before the database answered (its caller left, or the process is
// shutting down: a deadline moved earlier, not a wrong statement). It sees through any wrapping
// (errors.Is/As), including the redacted errors of this package.
//
// Callers answer such errors with 503 database_unavailable and Retry-After;
// every other store error is a bug of ours (500).
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return unavailableState(pe.Code)
	}
	var se interface{ SQLState() string }
	if errors.As(err, &se) {
		return unavailableState(se.SQLState())
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), errors.As(err, &oe):
		return true
	case pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return true
	}
	// pgx reports a connection that died under a statement as "conn closed"
	// or "unexpected EOF" strings in some paths; its type is unexported.
	msg := err.Error()
	for _, s := range []string{"conn closed", "closed pool", "unexpected EOF", "connection reset", "broken pipe", "server closed the connection"} {
		if containsFold(msg, s) {
			return true
		}
	}
	return false
}

// unavailableState: class 08 connection exception, 53 insufficient
// resources (too many connections, out of memory or disk), 57P01..57P05
// (admin/crash shutdown, cannot connect now, idle session timeout), 57014
// query canceled (statement_timeout: the server did not answer in time),
// 55P03 lock not available (lock_timeout).
func unavailableState(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch {
	case code[:2] == "08", code[:2] == "53", code[:4] == "57P0", code == "57014", code == "55P03":
		return true
	}
	return false
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if equalFoldASCII(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// redactPgError keeps a PostgreSQL error's code and message but not its
// detail or the statement position: role statements carry a password
// verifier. The original stays reachable only through SQLState and
// errors.As on *SafePgError, never through Error().
func redactPgError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &SafePgError{Code: pe.Code, Message: pe.Message}
	}
	return err
}

// SafePgError is a PostgreSQL error without the parts that may quote a
// statement's values (Detail, Where, position).
type SafePgError struct {
	Code    string
	Message string
}

func (e *SafePgError) Error() string { return fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code) }

// SQLState returns the error's SQLSTATE code.
func (e *SafePgError) SQLState() string { return e.Code }

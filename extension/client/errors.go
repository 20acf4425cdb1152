package client

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors, one per answer of the extension that a caller may want to
// treat specially. Test for them with errors.Is; every error from a Client
// that stems from an error response is an *Error that unwraps to one of
// these (or to none, for unexpected statuses).
var (
	// ErrUnauthorized: the extension refused the session token (401), or
	// the client has no token to send.
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrNotFound: the extension has no credential of that name (404);
	// check EPHEMERA_CREDENTIALS.
	ErrNotFound = errors.New("client: no such credential")
	// ErrMisdirected: the extension refused the request's Host (421). The
	// extension answers only requests addressed to 127.0.0.1.
	ErrMisdirected = errors.New("client: misdirected request")
	// ErrNotReady: the extension has no valid credential yet, usually
	// because the broker is unreachable (503). It is temporary: a later
	// call may succeed.
	ErrNotReady = errors.New("client: credentials not ready")
)

// Error is an error response of the extension. Its text names the
// credential, the HTTP status and the extension's error code and message;
// it never contains a password or the session token.
type Error struct {
	Name       string // the credential asked for
	StatusCode int    // HTTP status, e.g. 503
	Code       string // the extension's error code, e.g. "not_ready"; may be empty
	Message    string // the extension's message; may be empty
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client: credential %q: %d %s", e.Name, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		b.WriteString(": " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}

// Unwrap returns the sentinel error matching the status code (ErrNotReady
// for 503, ...), or nil.
func (e *Error) Unwrap() error {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusMisdirectedRequest:
		return ErrMisdirected
	case http.StatusServiceUnavailable:
		return ErrNotReady
	}
	return nil
}

// maxMessage bounds how much of the extension's message an Error keeps.
const maxMessage = 200

// cleanMessage keeps an error message printable and short.
func cleanMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxMessage {
		n := maxMessage
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "..."
	}
	return strings.TrimSpace(s)
}

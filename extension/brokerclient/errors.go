package brokerclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
)

// ErrInsecureURL is wrapped by New's error when the base URL is plain http to a host
// that is not a loopback address.
var ErrInsecureURL = errors.New("the broker URL must be https unless it names a loopback address")

// Error is an answer of the broker (or of API Gateway, or anything else in front of it)
// other than success. When the answer was the broker's error document, API holds it and
// Unwrap returns it, so errors.Is(err, api.ErrAccessDenied) and api.CodeOf(err) classify
// it; otherwise (API Gateway refusing the SigV4 signature, a proxy's page, a redirect)
// API is nil and Message says what was answered.
type Error struct {
	// Status is the HTTP status.
	Status int
	// RequestID is the answer's X-Request-Id (or the document's request_id), for finding
	// the broker's log line and audit record.
	RequestID string
	// API is the broker's error, or nil when the answer was not an error document.
	API *api.Error
	// Message describes an answer that was not an error document (API Gateway's own
	// "message", or the status text); it never holds a secret.
	Message string
	// Location is a redirect's target, which was not followed.
	Location string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("broker answered %d", e.Status)
	switch {
	case e.API != nil:
		s += " " + e.API.Error()
	case e.Message != "":
		s += ": " + e.Message
	}
	if e.Location != "" {
		s += " (redirect to " + e.Location + " not followed)"
	}
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Unwrap returns the broker's *api.Error, if the answer was one.
func (e *Error) Unwrap() error {
	if e.API == nil {
		return nil
	}
	return e.API
}

// StatusOf returns the broker's HTTP status in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Retryable reports whether trying again may succeed: the broker answered 5xx, or it was
// not reached or did not answer in time. A 3xx answer (a redirect, never followed), a 4xx
// answer, a cancelled context, an answer that is not strict JSON and a local failure
// (signing, encoding) are not retryable.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 500
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var te *transportError
	return errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded)
}

// retryAfter is the wait a retryable answer asked for (Retry-After), or 0.
func retryAfter(err error) time.Duration {
	var e *api.Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// transportError marks a failure to get an answer at all.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// redactURLError keeps a transport error's operation and cause; the URL it names is the
// broker's, which holds no secret, but nothing else of the request is kept.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: ue.URL, Err: ue.Err}
	}
	return err
}

// answerError builds the *Error of a failed answer. The body is decoded strictly; a body
// that is not a strict error document leaves API nil.
func answerError(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		e.Location = clip(resp.Header.Get("Location"), 200)
	}
	var doc struct {
		api.ErrorDocument
		Message string `json:"message"` // API Gateway's own answers
	}
	if api.UnmarshalAnswer(body, &doc) == nil {
		switch {
		case doc.Error.Code != "":
			e.API = doc.ErrorDocument.Err()
			if e.RequestID == "" {
				e.RequestID = e.API.RequestID
			}
			e.API.Message = clip(e.API.Message, 300)
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				e.API.RetryAfter = time.Duration(s) * time.Second
			}
		case doc.Message != "":
			e.Message = clip(doc.Message, 300)
		}
	}
	if e.API == nil && e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

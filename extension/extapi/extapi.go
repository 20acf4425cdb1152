// Package extapi is the extension's client of the Lambda Extensions API, and the only
// package of ephemera that speaks it.
//
// The API lives at http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension. An extension
// registers once during INIT, then loops on [Client.Next], which blocks until Lambda
// delivers the next INVOKE or SHUTDOWN event:
//
//	c, err := extapi.New(os.Getenv(extapi.EnvRuntimeAPI))
//	id, err := c.Register(ctx, "ephemera", extapi.Invoke, extapi.Shutdown)
//	for {
//		ev, err := c.Next(ctx)
//		...
//	}
//
// If INIT cannot complete, [Client.InitError] tells Lambda why (the sandbox's INIT then
// fails); if the extension must quit later, [Client.ExitError] does. Every call takes a
// context and stops when it ends; every error starts with "extapi: ".
//
// Every answer is decoded with api.UnmarshalAnswer: fields Lambda adds later are
// ignored, but a duplicate key, a key that differs from a known one only in case, or a
// NUL character fails the call instead of being read one way or another.
package extapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
)

// EnvRuntimeAPI names the variable that holds the API's host:port.
const EnvRuntimeAPI = "AWS_LAMBDA_RUNTIME_API"

// Header names of the Extensions API.
const (
	HeaderName       = "Lambda-Extension-Name"
	HeaderIdentifier = "Lambda-Extension-Identifier"
	HeaderErrorType  = "Lambda-Extension-Function-Error-Type"
)

const basePath = "/2020-01-01/extension"

// maxBody bounds what is read from an answer.
const maxBody = 1 << 20

// EventType is the type of an event from [Client.Next].
type EventType string

// Event types an extension can register for.
const (
	Invoke   EventType = "INVOKE"
	Shutdown EventType = "SHUTDOWN"
)

// Event is one event delivered by [Client.Next].
type Event struct {
	Type EventType
	// Deadline is when the invocation (INVOKE) or the shutdown phase (SHUTDOWN) ends.
	Deadline time.Time
	// RequestID and InvokedFunctionARN are set for INVOKE.
	RequestID          string
	InvokedFunctionARN string
	// ShutdownReason is set for SHUTDOWN: "spindown", "timeout" or "failure".
	ShutdownReason string
	// Tracing is the invocation's X-Ray header (INVOKE), if any.
	Tracing Tracing
}

// Tracing is the tracing header of an INVOKE event.
type Tracing struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// RegisterResponse is what Lambda answers to a registration.
type RegisterResponse struct {
	FunctionName    string `json:"functionName"`
	FunctionVersion string `json:"functionVersion"`
	Handler         string `json:"handler"`
}

// StatusError is an answer with an unexpected HTTP status. Type and Message come from
// the API's error document when it sent one.
type StatusError struct {
	Status  int
	Type    string
	Message string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("status %d", e.Status)
	if e.Type != "" {
		s += " " + e.Type
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ErrNotRegistered is returned by calls that need an identifier before Register succeeded.
var ErrNotRegistered = errors.New("extapi: not registered")

// Client talks to one Extensions API endpoint. Register must succeed before the other
// calls; once it has returned, a Client is safe for concurrent use.
type Client struct {
	base string
	http *http.Client
	id   string
	info RegisterResponse
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. Default: a client without a timeout (Next blocks
// until an event arrives; contexts bound every call).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// New returns a client of the API at runtimeAPI (host:port, the value of
// AWS_LAMBDA_RUNTIME_API).
func New(runtimeAPI string, opts ...Option) (*Client, error) {
	runtimeAPI = strings.TrimSpace(runtimeAPI)
	if runtimeAPI == "" {
		return nil, fmt.Errorf("extapi: %s is not set", EnvRuntimeAPI)
	}
	if strings.Contains(runtimeAPI, "/") {
		return nil, fmt.Errorf("extapi: %s must be host:port, got %q", EnvRuntimeAPI, runtimeAPI)
	}
	c := &Client{base: "http://" + runtimeAPI + basePath, http: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ID is the identifier Register obtained, or "".
func (c *Client) ID() string { return c.id }

// Info is what Lambda said about the function at registration.
func (c *Client) Info() RegisterResponse { return c.info }

// Register registers the extension under name (it must equal the extension's file name)
// for events, and returns the extension identifier. Call it once, before anything else.
func (c *Client) Register(ctx context.Context, name string, events ...EventType) (string, error) {
	if name == "" {
		return "", errors.New("extapi: register: name is empty")
	}
	body, err := json.Marshal(struct {
		Events []EventType `json:"events"`
	}{Events: events})
	if err != nil {
		return "", fmt.Errorf("extapi: register: %w", err)
	}
	resp, data, err := c.do(ctx, http.MethodPost, "/register", map[string]string{HeaderName: name}, body, http.StatusOK)
	if err != nil {
		return "", fmt.Errorf("extapi: register: %w", err)
	}
	id := resp.Header.Get(HeaderIdentifier)
	if id == "" {
		return "", fmt.Errorf("extapi: register: the answer has no %s header", HeaderIdentifier)
	}
	var info RegisterResponse
	if len(bytes.TrimSpace(data)) > 0 {
		if err := api.UnmarshalAnswer(data, &info); err != nil {
			return "", fmt.Errorf("extapi: register: decoding the answer: %w", err)
		}
	}
	c.id, c.info = id, info
	return id, nil
}

// nextEvent is the wire form of an event.
type nextEvent struct {
	EventType          EventType `json:"eventType"`
	DeadlineMs         int64     `json:"deadlineMs"`
	RequestID          string    `json:"requestId"`
	InvokedFunctionARN string    `json:"invokedFunctionArn"`
	ShutdownReason     string    `json:"shutdownReason"`
	Tracing            Tracing   `json:"tracing"`
}

// Next blocks until Lambda delivers the next event, or ctx ends. Calling it also tells
// Lambda that the extension finished its work for the previous event.
func (c *Client) Next(ctx context.Context) (*Event, error) {
	if c.id == "" {
		return nil, fmt.Errorf("extapi: next: %w", ErrNotRegistered)
	}
	_, data, err := c.do(ctx, http.MethodGet, "/event/next", map[string]string{HeaderIdentifier: c.id}, nil, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("extapi: next: %w", err)
	}
	var ne nextEvent
	if err := api.UnmarshalAnswer(data, &ne); err != nil {
		return nil, fmt.Errorf("extapi: next: decoding the event: %w", err)
	}
	switch ne.EventType {
	case Invoke, Shutdown:
	default:
		return nil, fmt.Errorf("extapi: next: unknown event type %q", ne.EventType)
	}
	ev := &Event{
		Type: ne.EventType, RequestID: ne.RequestID, InvokedFunctionARN: ne.InvokedFunctionARN,
		ShutdownReason: ne.ShutdownReason, Tracing: ne.Tracing,
	}
	if ne.DeadlineMs > 0 {
		ev.Deadline = time.UnixMilli(ne.DeadlineMs)
	}
	return ev, nil
}

// InitError reports that INIT failed; Lambda then fails the sandbox's INIT. errorType
// is a category such as "Extension.ConfigInvalid"; err's text becomes the message and
// must hold no secret. The extension should exit afterwards.
func (c *Client) InitError(ctx context.Context, errorType string, err error) error {
	if e := c.reportError(ctx, "/init/error", errorType, err); e != nil {
		return fmt.Errorf("extapi: init error: %w", e)
	}
	return nil
}

// ExitError reports that the extension is about to exit because of err. errorType is a
// category such as "Extension.BrokerUnavailable".
func (c *Client) ExitError(ctx context.Context, errorType string, err error) error {
	if e := c.reportError(ctx, "/exit/error", errorType, err); e != nil {
		return fmt.Errorf("extapi: exit error: %w", e)
	}
	return nil
}

// errorDoc is the body of an error report, and of the API's own error answers.
type errorDoc struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	StackTrace   []string `json:"stackTrace,omitempty"`
}

func (c *Client) reportError(ctx context.Context, path, errorType string, err error) error {
	if c.id == "" {
		return ErrNotRegistered
	}
	if errorType == "" {
		return errors.New("error type is empty")
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	body, jerr := json.Marshal(errorDoc{ErrorMessage: msg, ErrorType: errorType, StackTrace: []string{}})
	if jerr != nil {
		return jerr
	}
	headers := map[string]string{HeaderIdentifier: c.id, HeaderErrorType: errorType}
	_, _, derr := c.do(ctx, http.MethodPost, path, headers, body, http.StatusAccepted)
	return derr
}

// do sends one request and returns the answer and its body if the status is want.
func (c *Client) do(ctx context.Context, method, path string, headers map[string]string, body []byte, want int) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != want {
		se := &StatusError{Status: resp.StatusCode}
		var doc errorDoc
		if api.UnmarshalAnswer(data, &doc) == nil {
			se.Type, se.Message = doc.ErrorType, doc.ErrorMessage
		}
		return nil, nil, se
	}
	return resp, data, nil
}

package apigw

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Error codes used in the JSON error bodies produced by Handler.
const (
	// CodeInvalidRequest is the error code of the 400 response returned when
	// an event cannot be converted to an *http.Request.
	CodeInvalidRequest = "invalid_request"
	// CodeInternal is the error code of the 500 response returned when the
	// wrapped handler panics.
	CodeInternal = "internal"
)

// RequestError reports why an API Gateway event could not be converted to an
// *http.Request. Its Reason is short and safe to show to clients.
type RequestError struct {
	// Reason is a short, client-safe description such as "invalid path".
	Reason string
	// Err is the underlying error, if any.
	Err error
}

// Error implements the error interface.
func (e *RequestError) Error() string {
	if e.Err != nil {
		return "apigw: " + e.Reason + ": " + e.Err.Error()
	}
	return "apigw: " + e.Reason
}

// Unwrap returns the underlying error.
func (e *RequestError) Unwrap() error { return e.Err }

// Handler adapts h to a typed Lambda handler for API Gateway HTTP API payload
// format version 2.0, suitable for lambda.Start. If h is nil,
// http.DefaultServeMux is used, as with http.ListenAndServe.
//
// The returned function never returns a non-nil error: a malformed event
// yields a 400 response and a panic in h yields a 500 response, both with a
// JSON body of the form
//
//	{"error":{"code":"...","message":"...","request_id":"..."}}
//
// where request_id is the Lambda AWS request ID found in ctx, if any.
func Handler(h http.Handler) func(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if h == nil {
		h = http.DefaultServeMux
	}
	return func(ctx context.Context, e events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
		r, err := Request(ctx, e)
		return exchange(ctx, h, r, err).responseV2(), nil
	}
}

// exchange serves one converted request and returns the buffered answer: h's
// own, or a JSON error document when the event was invalid (convErr != nil)
// or h panicked. Both payload formats share it, so they answer alike.
func exchange(ctx context.Context, h http.Handler, r *http.Request, convErr error) *responseWriter {
	if convErr != nil {
		reason := "invalid request"
		if re, ok := errors.AsType[*RequestError](convErr); ok {
			reason = re.Reason
		}
		return errorAnswer(http.StatusBadRequest, CodeInvalidRequest, reason, requestID(ctx))
	}
	w := newResponseWriter(r.Method)
	if panicked := serve(h, w, r); panicked {
		return errorAnswer(http.StatusInternalServerError, CodeInternal, "internal error", requestID(ctx))
	}
	return w
}

// serve runs h and reports whether it panicked; the panic is logged.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (panicked bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		panicked = true
		if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
			return
		}
		ctx := r.Context()
		slog.ErrorContext(ctx, "apigw: panic serving request",
			slog.Any("panic", v),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("request_id", requestID(ctx)),
			slog.String("stack", string(debug.Stack())),
		)
	}()
	h.ServeHTTP(w, r)
	return false
}

// Request converts an API Gateway HTTP API (payload v2) event to an
// *http.Request bound to ctx, shaped like one received by net/http's server:
// the URL is a relative request URL (RequestURI is set too), the Host header
// is moved to r.Host, cookies are joined into a single Cookie header and the
// body is base64-decoded when e.IsBase64Encoded is set.
//
// Header values are kept as received; API Gateway joins repeated headers with
// commas, so such a header arrives as a single comma-separated value.
//
// Errors are of type *RequestError.
func Request(ctx context.Context, e events.APIGatewayV2HTTPRequest) (*http.Request, error) {
	path := e.RawPath
	if path == "" {
		path = e.RequestContext.HTTP.Path
	}
	header := make(http.Header, len(e.Headers)+1)
	// In key order, so that keys differing only in case merge deterministically.
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) {
		ck := http.CanonicalHeaderKey(k)
		header[ck] = append(header[ck], e.Headers[k])
	}
	if len(e.Cookies) > 0 {
		cookie := strings.Join(e.Cookies, "; ")
		if prev := header.Get("Cookie"); prev != "" {
			cookie = prev + "; " + cookie
		}
		header["Cookie"] = []string{cookie}
	}

	return newRequest(ctx, requestParts{
		method:     e.RequestContext.HTTP.Method,
		path:       path,
		rawQuery:   e.RawQueryString,
		header:     header,
		domainName: e.RequestContext.DomainName,
		body:       e.Body,
		isBase64:   e.IsBase64Encoded,
		sourceIP:   e.RequestContext.HTTP.SourceIP,
	})
}

// requestParts is what both payload formats carry once their differences
// (where the path, query, headers and source IP live) are resolved.
type requestParts struct {
	method     string
	path       string      // escaped path as the client sent it; "" means "/"
	rawQuery   string      // escaped query without '?'; must not contain '#'
	header     http.Header // canonical keys, Host still included
	domainName string      // r.Host when no Host header was received
	body       string
	isBase64   bool
	sourceIP   string
}

// newRequest applies the checks shared by both payload formats, in this
// order: the method is an HTTP token, the path is absolute and carries no '?'
// or '#', the query carries no '#', the request URI parses, and a base64 body
// decodes. It then builds
// the *http.Request as net/http's server would have.
func newRequest(ctx context.Context, p requestParts) (*http.Request, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if !validMethod(p.method) {
		return nil, &RequestError{Reason: "invalid method"}
	}
	path := p.path
	if path == "" {
		path = "/"
	}
	if path[0] != '/' || strings.ContainsAny(path, "?#") {
		return nil, &RequestError{Reason: "invalid path"}
	}
	requestURI := path
	if p.rawQuery != "" {
		if strings.Contains(p.rawQuery, "#") {
			return nil, &RequestError{Reason: "invalid query string"}
		}
		requestURI += "?" + p.rawQuery
	}
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return nil, &RequestError{Reason: "invalid path", Err: err}
	}

	var body []byte
	if p.isBase64 {
		body, err = base64.StdEncoding.DecodeString(p.body)
		if err != nil {
			return nil, &RequestError{Reason: "invalid base64 body", Err: err}
		}
	} else {
		body = []byte(p.body)
	}

	header := p.header
	host := header.Get("Host")
	if host == "" {
		host = p.domainName
	}
	header.Del("Host")

	r := &http.Request{
		Method:        p.method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: int64(len(body)),
		Host:          host,
		RequestURI:    requestURI,
	}
	if len(body) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(body)), nil
		}
	}
	if p.sourceIP != "" {
		r.RemoteAddr = net.JoinHostPort(p.sourceIP, "0")
	}
	return r.WithContext(ctx), nil
}

// validMethod reports whether m is a non-empty HTTP token (RFC 9110 §5.6.2).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !isTokenChar(m[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// requestID returns the Lambda AWS request ID carried by ctx, or "".
func requestID(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc != nil {
		return lc.AwsRequestID
	}
	return ""
}

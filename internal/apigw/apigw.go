package apigw

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"unicode/utf8"

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
		if err != nil {
			reason := "invalid request"
			if re, ok := errors.AsType[*RequestError](err); ok {
				reason = re.Reason
			}
			return errorResponse(http.StatusBadRequest, CodeInvalidRequest, reason, requestID(ctx)), nil
		}
		w := newResponseWriter(r.Method)
		if panicked := serve(h, w, r); panicked {
			return errorResponse(http.StatusInternalServerError, CodeInternal, "internal error", requestID(ctx)), nil
		}
		return w.response(), nil
	}
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
	if ctx == nil {
		ctx = context.Background()
	}
	method := e.RequestContext.HTTP.Method
	if !validMethod(method) {
		return nil, &RequestError{Reason: "invalid method"}
	}

	path := e.RawPath
	if path == "" {
		path = e.RequestContext.HTTP.Path
	}
	if path == "" {
		path = "/"
	}
	if path[0] != '/' || strings.ContainsAny(path, "?#") {
		return nil, &RequestError{Reason: "invalid path"}
	}
	requestURI := path
	if e.RawQueryString != "" {
		if strings.Contains(e.RawQueryString, "#") {
			return nil, &RequestError{Reason: "invalid query string"}
		}
		requestURI += "?" + e.RawQueryString
	}
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return nil, &RequestError{Reason: "invalid path", Err: err}
	}

	var body []byte
	if e.IsBase64Encoded {
		body, err = base64.StdEncoding.DecodeString(e.Body)
		if err != nil {
			return nil, &RequestError{Reason: "invalid base64 body", Err: err}
		}
	} else {
		body = []byte(e.Body)
	}

	header := make(http.Header, len(e.Headers)+1)
	// Sort keys so that keys differing only in case merge deterministically.
	keys := make([]string, 0, len(e.Headers))
	for k := range e.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
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

	host := header.Get("Host")
	if host == "" {
		host = e.RequestContext.DomainName
	}
	header.Del("Host")

	r := &http.Request{
		Method:        method,
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
	if ip := e.RequestContext.HTTP.SourceIP; ip != "" {
		r.RemoteAddr = net.JoinHostPort(ip, "0")
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

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// errorResponse builds a JSON error response.
func errorResponse(status int, code, message, reqID string) events.APIGatewayV2HTTPResponse {
	b, err := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: message, RequestID: reqID}})
	if err != nil { // cannot happen with string fields
		b = []byte(`{"error":{"code":"internal","message":"internal error","request_id":""}}`)
	}
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       string(b),
	}
}

// responseWriter is a minimal buffering http.ResponseWriter.
type responseWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
	head        bool // HEAD request: body is discarded, as net/http does
}

var _ http.Flusher = (*responseWriter)(nil)

func newResponseWriter(method string) *responseWriter {
	return &responseWriter{header: make(http.Header), head: method == http.MethodHead}
}

// Header returns the response header map.
func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader records the status code of the first final (non-1xx) call.
// Like net/http it panics on codes outside 100-999.
func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return // informational responses are not supported; ignore them
	}
	w.wroteHeader = true
	w.status = code
}

// Write buffers p, implicitly writing a 200 status first.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.head {
		return len(p), nil
	}
	return w.body.Write(p)
}

// Flush is a no-op: the response is sent when the handler returns.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199) && status != http.StatusNoContent && status != http.StatusNotModified
}

// response converts the buffered response to an API Gateway v2 response.
func (w *responseWriter) response() events.APIGatewayV2HTTPResponse {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	body := w.body.Bytes()
	// Sniff a missing Content-Type like net/http's server does, so that the
	// handler behaves the same locally and in Lambda. A Content-Type key
	// present with no values suppresses sniffing, as in net/http.
	if _, ok := w.header["Content-Type"]; !ok && len(body) > 0 && w.header.Get("Transfer-Encoding") == "" {
		w.header.Set("Content-Type", http.DetectContentType(body))
	}

	res := events.APIGatewayV2HTTPResponse{
		StatusCode: w.status,
		Headers:    make(map[string]string, len(w.header)),
	}
	for k, vs := range w.header {
		if len(vs) == 0 {
			continue
		}
		if http.CanonicalHeaderKey(k) == "Set-Cookie" {
			res.Cookies = append(res.Cookies, vs...)
			continue
		}
		res.Headers[k] = strings.Join(vs, ", ")
	}
	if len(body) == 0 {
		return res
	}
	if isTextual(w.header.Get("Content-Type"), body) {
		res.Body = string(body)
	} else {
		res.Body = base64.StdEncoding.EncodeToString(body)
		res.IsBase64Encoded = true
	}
	return res
}

// isTextual reports whether a body with the given Content-Type can be
// returned to API Gateway as a plain (UTF-8) string. Bodies that are not
// valid UTF-8 are never textual, since JSON encoding would corrupt them.
func isTextual(contentType string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	if strings.TrimSpace(contentType) == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		mt == "application/json",
		mt == "application/xml",
		strings.HasSuffix(mt, "+json"),
		strings.HasSuffix(mt, "+xml"):
		return true
	}
	return false
}

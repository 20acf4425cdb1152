package apigw

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// errorAnswer buffers a JSON error document, so that an error answer goes
// through the same conversion to either payload format as a handler's.
func errorAnswer(status int, code, message, reqID string) *responseWriter {
	b, err := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: message, RequestID: reqID}})
	if err != nil { // cannot happen with string fields
		b = []byte(`{"error":{"code":"internal","message":"internal error","request_id":""}}`)
	}
	w := newResponseWriter("")
	w.header.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b) // a bytes.Buffer write does not fail
	return w
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

// finish completes the buffered response as net/http's server would when
// the handler returns: an implicit 200, and a missing Content-Type sniffed
// from the body so that the handler behaves the same locally and in Lambda.
// A Content-Type key present with no values suppresses sniffing, as in
// net/http.
func (w *responseWriter) finish() []byte {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	body := w.body.Bytes()
	if _, ok := w.header["Content-Type"]; !ok && len(body) > 0 && w.header.Get("Transfer-Encoding") == "" {
		w.header.Set("Content-Type", http.DetectContentType(body))
	}
	return body
}

// encodeBody returns body as API Gateway wants it: a plain string when it is
// textual, base64 otherwise.
func (w *responseWriter) encodeBody(body []byte) (s string, isBase64 bool) {
	if len(body) == 0 {
		return "", false
	}
	if isTextual(w.header.Get("Content-Type"), body) {
		return string(body), false
	}
	return base64.StdEncoding.EncodeToString(body), true
}

// responseV2 converts the buffered response to an HTTP API payload v2
// answer. Payload v2 has one value per header, so repeated headers are
// joined with ", ", except Set-Cookie, which goes to Cookies (one entry per
// cookie) because a comma may appear inside a cookie's Expires attribute.
func (w *responseWriter) responseV2() events.APIGatewayV2HTTPResponse {
	body := w.finish()
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
	res.Body, res.IsBase64Encoded = w.encodeBody(body)
	return res
}

// responseV1 converts the buffered response to a REST API (payload v1)
// proxy answer. Every header goes to MultiValueHeaders with its values kept
// apart, so that two Set-Cookie headers stay two. Headers is an empty object,
// not null: API Gateway merges both maps (so nothing is repeated there), and
// some validators of the proxy answer, emulators among them, want the key.
func (w *responseWriter) responseV1() events.APIGatewayProxyResponse {
	body := w.finish()
	res := events.APIGatewayProxyResponse{
		StatusCode:        w.status,
		Headers:           map[string]string{},
		MultiValueHeaders: make(map[string][]string, len(w.header)),
	}
	for k, vs := range w.header {
		if len(vs) == 0 {
			continue
		}
		res.MultiValueHeaders[k] = slices.Clone(vs)
	}
	res.Body, res.IsBase64Encoded = w.encodeBody(body)
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

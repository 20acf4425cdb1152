package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/ephemera-sh/ephemera/broker/lease"
)

// MaxBodyBytes is the largest request body the API accepts.
const MaxBodyBytes = 64 << 10

// Handler returns the broker's HTTP API (DESIGN §4).
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/credentials", b.route(http.MethodPost, b.handleIssue))
	mux.HandleFunc("/v1/leases/{lease_id}/renew", b.route(http.MethodPost, b.handleRenew))
	mux.HandleFunc("/v1/leases/{lease_id}/revoke", b.route(http.MethodPost, b.handleRevoke))
	mux.HandleFunc("/v1/admin/revoke", b.route(http.MethodPost, b.handleAdminRevoke))
	mux.HandleFunc("/v1/aws-credentials", b.route(http.MethodPost, b.handleAWSCredentials))
	mux.HandleFunc("/v1/health", b.route(http.MethodGet, b.handleHealth))
	mux.HandleFunc("/", b.route("", func(*http.Request, *reqInfo) (int, any, *apiError) {
		return 0, nil, fail(CodeNotFound, "no such endpoint")
	}))
	return mux
}

// reqInfo is per-request state shared by the route wrapper and handlers.
type reqInfo struct {
	id       string
	start    time.Time
	sourceIP netip.Addr
}

type handlerFunc func(r *http.Request, ri *reqInfo) (status int, body any, err *apiError)

// route wraps a handler: request id, method check, JSON answer, one log line.
func (b *Broker) route(method string, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ri := &reqInfo{start: b.now(), sourceIP: sourceIP(r)}
		id, err := lease.NewID()
		if err != nil {
			id = "unavailable"
		}
		ri.id = id
		w.Header().Set("X-Request-Id", ri.id)
		var status int
		var body any
		var aerr *apiError
		if method != "" && r.Method != method {
			w.Header().Set("Allow", method)
			aerr = fail(CodeInvalidRequest, fmt.Sprintf("method %s is not allowed here; use %s", r.Method, method))
		} else {
			status, body, aerr = h(r, ri)
		}
		code := ""
		if aerr != nil {
			status, code = aerr.Status(), aerr.Code
			body = map[string]any{"error": map[string]string{"code": aerr.Code, "message": aerr.Message, "request_id": ri.id}}
		}
		writeJSON(w, status, body)
		attrs := []any{"request_id", ri.id, "method", r.Method, "path", r.URL.Path, "status", status,
			"latency_ms", float64(b.now().Sub(ri.start).Microseconds()) / 1000}
		if aerr != nil {
			attrs = append(attrs, "code", code)
			if aerr.cause != nil {
				attrs = append(attrs, "cause", aerr.cause.Error())
			}
		}
		if aerr != nil && aerr.Status() >= 500 {
			b.log.ErrorContext(r.Context(), "request", attrs...)
		} else {
			b.log.InfoContext(r.Context(), "request", attrs...)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// decode reads a JSON body of at most MaxBodyBytes into dst, rejecting
// unknown fields and trailing data.
func decode(r *http.Request, dst any) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return fail(CodeInvalidRequest, "Content-Type must be application/json")
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(CodePayloadTooLarge, fmt.Sprintf("the body exceeds %d bytes", MaxBodyBytes))
		}
		return fail(CodeInvalidRequest, "the body could not be read")
	}
	return decodeBytes(data, dst)
}

func decodeBytes(data []byte, dst any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fail(CodeInvalidRequest, "the body is not the expected JSON: "+jsonProblem(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(CodeInvalidRequest, "the body has data after the JSON object")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the body's values.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return msg // e.g. json: unknown field "x"; illegal base64 data at input byte N
}

func sourceIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func (b *Broker) handleHealth(*http.Request, *reqInfo) (int, any, *apiError) {
	return http.StatusOK, map[string]string{"status": "ok", "version": Version}, nil
}

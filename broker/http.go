package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

// MaxBodyBytes is the largest request body the API accepts.
const MaxBodyBytes = api.MaxBodyBytes

// Handler returns the broker's HTTP API. It only decodes, calls a use case
// and encodes: the use cases (Issue, Renew, Revoke, AdminRevoke, AssumeAWS)
// know no transport.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(api.PathCredentials, b.route(http.MethodPost, func(ctx context.Context, r *http.Request) (int, any, error) {
		var req api.IssueRequest
		if err := decode(r, &req); err != nil {
			b.finishUndecoded(ctx, "issue", err)
			return 0, nil, err
		}
		out, err := b.Issue(ctx, IssueInput{Identity: Proof(req.Identity), Database: req.Database, Role: req.Role, TTLSeconds: req.TTLSeconds})
		return http.StatusCreated, out, err
	}))
	mux.Handle(api.PathRenew, b.route(http.MethodPost, func(ctx context.Context, r *http.Request) (int, any, error) {
		var req api.RenewRequest
		if err := decode(r, &req); err != nil {
			b.finishUndecoded(ctx, "renew", err)
			return 0, nil, err
		}
		out, err := b.Renew(ctx, RenewInput{Identity: Proof(req.Identity), LeaseID: r.PathValue("lease_id"), TTLSeconds: req.TTLSeconds})
		return http.StatusOK, out, err
	}))
	mux.Handle(api.PathRevoke, b.route(http.MethodPost, func(ctx context.Context, r *http.Request) (int, any, error) {
		var req api.RevokeRequest
		if err := decode(r, &req); err != nil {
			b.finishUndecoded(ctx, "revoke", err)
			return 0, nil, err
		}
		out, err := b.Revoke(ctx, RevokeInput{Identity: Proof(req.Identity), LeaseID: r.PathValue("lease_id")})
		return http.StatusOK, out, err
	}))
	mux.Handle(api.PathAdminRevoke, b.route(http.MethodPost, func(ctx context.Context, r *http.Request) (int, any, error) {
		var req api.AdminRevokeRequest
		if err := decode(r, &req); err != nil {
			b.finishUndecoded(ctx, "admin_revoke", err)
			return 0, nil, err
		}
		out, err := b.AdminRevoke(ctx, AdminRevokeInput{Identity: Proof(req.Identity), PrincipalARN: req.PrincipalARN, Database: req.Database})
		return http.StatusOK, out, err
	}))
	mux.Handle(api.PathAWSCredentials, b.route(http.MethodPost, func(ctx context.Context, r *http.Request) (int, any, error) {
		var req api.AWSCredentialsRequest
		if err := decode(r, &req); err != nil {
			b.finishUndecoded(ctx, "assume", err)
			return 0, nil, err
		}
		out, err := b.AssumeAWS(ctx, AssumeAWSInput{Identity: Proof(req.Identity), Profile: req.Profile, TTLSeconds: req.TTLSeconds})
		return http.StatusCreated, out, err
	}))
	mux.Handle(api.PathHealth, b.route(http.MethodGet, func(context.Context, *http.Request) (int, any, error) {
		return http.StatusOK, api.Health{Status: "ok", Version: Version}, nil
	}))
	mux.Handle("/", b.route("", func(context.Context, *http.Request) (int, any, error) {
		return 0, nil, api.Errorf(api.CodeNotFound, "no such endpoint")
	}))
	return mux
}

type handlerFunc func(ctx context.Context, r *http.Request) (status int, body any, err error)

// route wraps a handler: request id and info in the context, method check,
// JSON answer (the error document, with Retry-After on 503 and 429), one
// log line.
func (b *Broker) route(method string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := RequestInfo{Received: b.now(), SourceIP: sourceIP(r)}
		id, err := lease.NewID()
		if err != nil {
			id = "unavailable"
		}
		info.ID = id
		ctx := NewContext(r.Context(), info)
		w.Header().Set("X-Request-Id", info.ID)
		var status int
		var body any
		if method != "" && r.Method != method {
			w.Header().Set("Allow", method)
			err = api.Errorf(api.CodeInvalidRequest, "method %s is not allowed here; use %s", r.Method, method)
		} else {
			status, body, err = h(ctx, r)
		}
		var aerr *api.Error
		if err != nil {
			if !errors.As(err, &aerr) {
				aerr = internal(err).(*api.Error)
			}
			status = aerr.Status()
			doc := aerr.Document()
			doc.Error.RequestID = info.ID
			body = doc
			if ra := aerr.RetryAfterHeader(); ra != "" {
				w.Header().Set("Retry-After", ra)
			}
		}
		writeJSON(w, status, body)
		attrs := []any{"request_id", info.ID, "method", r.Method, "path", r.URL.Path, "status", status,
			"latency_ms", float64(b.now().Sub(info.Received).Microseconds()) / 1000}
		if aerr != nil {
			attrs = append(attrs, "code", string(aerr.Code))
			if aerr.Cause != nil {
				attrs = append(attrs, "cause", aerr.Cause.Error())
			}
		}
		if aerr != nil && aerr.Status() >= 500 {
			b.log.ErrorContext(ctx, "request", attrs...)
		} else {
			b.log.InfoContext(ctx, "request", attrs...)
		}
	})
}

// finishUndecoded audits a request whose body could not be read: it names
// nothing, so only the JSON line is written.
func (b *Broker) finishUndecoded(ctx context.Context, event string, err error) {
	info := b.requestInfo(ctx)
	b.finish(ctx, info, newRecord(info, event), err, false)
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

// decode reads a JSON body of at most MaxBodyBytes into dst with the strict
// rules of api.Unmarshal.
func decode(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return api.Errorf(api.CodeInvalidRequest, "Content-Type must be application/json")
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.Errorf(api.CodePayloadTooLarge, "the body exceeds %d bytes", MaxBodyBytes)
		}
		return api.Errorf(api.CodeInvalidRequest, "the body could not be read")
	}
	return decodeBytes(data, dst)
}

func decodeBytes(data []byte, dst any) error {
	if err := api.Unmarshal(data, dst); err != nil {
		return api.Wrap(api.CodeInvalidRequest, err, fmt.Sprintf("the body is not the expected JSON: %v", err))
	}
	return nil
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

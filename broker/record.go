package broker

import (
	"context"
	"errors"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Every decision is audited: one JSON line on stdout, always, and one row
// in ephemera.audit_log of the database the request names, when it names a
// configured one. A decision that changes state has its row committed by
// the store in the same transaction as the change (issue, renew, revoke);
// the others (denials, errors, idempotent repeats) are appended here.

// auditRowTimeout bounds the write of a row that records no change, so an
// answer is never held long past the request's database deadline.
const auditRowTimeout = time.Second

// newRecord starts the audit record of a request.
func newRecord(info RequestInfo, event string) audit.Record {
	r := audit.Record{RequestID: info.ID, Event: event, Time: info.Received}
	if info.SourceIP.IsValid() {
		r.SourceIP = info.SourceIP.String()
	}
	return r
}

// withCaller fills the verified caller into rec.
func withCaller(rec *audit.Record, c caller) {
	if c.principal != nil {
		rec.PrincipalARN, rec.Account, rec.Session = c.principal.RoleARN, c.principal.Account, c.principal.Session
		return
	}
	rec.Session = "operator:" + c.operator
}

// complete derives decision, reason and latency from the outcome.
func (b *Broker) complete(info RequestInfo, rec audit.Record, err error) audit.Record {
	rec.Decision = audit.Allow
	if err != nil {
		code := api.CodeOf(err)
		if code == "" {
			code = api.CodeInternal
		}
		rec.Reason = string(code)
		rec.Decision = audit.Deny
		if code.Status() >= 500 {
			rec.Decision = audit.Error
		}
	}
	rec.LatencyMS = float64(b.now().Sub(info.Received).Microseconds()) / 1000
	return rec
}

// finish audits a decision. committed says the store already wrote the
// row in the transaction of the change; otherwise the row is appended here
// (unless the database is the thing that failed: the line then stands
// alone, as it does for a request that names no configured database).
func (b *Broker) finish(ctx context.Context, info RequestInfo, rec audit.Record, err error, committed bool) {
	rec = b.complete(info, rec, err)
	actx, end := trace.Start(ctx, "audit")
	var rowErr error
	if store := b.stores.Get(rec.Database); store != nil && !committed && !errors.Is(err, api.ErrDatabaseUnavailable) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(actx), auditRowTimeout)
		rowErr = store.AppendAudit(wctx, rec)
		cancel()
		if rowErr != nil {
			b.log.ErrorContext(ctx, "audit row not written; the audit line stands", "request_id", rec.RequestID,
				"database", rec.Database, "err", rowErr)
		}
	}
	b.audit.Line(rec)
	end(rowErr)
	b.metrics.Decision(rec.Event, rec.Decision, rec.Reason)
}

// callerText cuts text a caller sent, for records and messages made before
// it was verified or found configured.
func callerText(s string) string { return audit.CutCallerText(s) }

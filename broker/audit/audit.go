// Package audit describes every broker decision: one Record per decision,
// written as one JSON line on stdout (CloudWatch Logs) by Log and as one row
// in ephemera.audit_log of the database the request names by the lease
// store (package lease, the only writer of that schema), in the same
// transaction as the change it records. A Record has no field that could hold a password,
// signature, session token or nonce, so none can be written by mistake.
package audit

import (
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// Events.
const (
	EventIssue       = "issue"
	EventRenew       = "renew"
	EventRevoke      = "revoke"
	EventReap        = "reap"
	EventAdminRevoke = "admin_revoke"
	EventSweep       = "sweep"
	EventAssume      = "assume"
)

// Decisions.
const (
	Allow = "allow"
	Deny  = "deny"
	Error = "error"
)

// Record is one audited decision.
type Record struct {
	Time         time.Time `json:"time"`
	RequestID    string    `json:"request_id"`
	Event        string    `json:"event"`
	Decision     string    `json:"decision"`
	Reason       string    `json:"reason"`
	PrincipalARN string    `json:"principal_arn"`
	Account      string    `json:"account"`
	Session      string    `json:"session"`
	SourceIP     string    `json:"source_ip"`
	Database     string    `json:"database"`
	DBRole       string    `json:"db_role"`
	Username     string    `json:"username"`
	LeaseID      string    `json:"lease_id"`
	TTLSeconds   int64     `json:"ttl_seconds"`
	Policies     []string  `json:"policies"`
	LatencyMS    float64   `json:"latency_ms"`
	// AWSProfile and SourceIdentity describe an AWS session (event assume).
	AWSProfile     string `json:"aws_profile,omitempty"`
	SourceIdentity string `json:"source_identity,omitempty"`
}

// Log writes audit JSON lines. Safe for concurrent use. Rows are written
// by the lease store, in the transaction of the change they record.
type Log struct {
	mu  sync.Mutex
	out io.Writer
	err *slog.Logger
}

// New returns a Log writing JSON lines to out. Failures to write are
// reported on errLog.
func New(out io.Writer, errLog *slog.Logger) *Log {
	if errLog == nil {
		errLog = slog.New(slog.DiscardHandler)
	}
	return &Log{out: out, err: errLog}
}

// Line writes r's JSON line.
func (l *Log) Line(r Record) {
	r = Normalize(r)
	line, err := json.Marshal(struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
		Record
	}{"INFO", "audit", r})
	if err != nil {
		l.err.Error("audit line not encoded", "err", err)
		return
	}
	l.mu.Lock()
	_, werr := l.out.Write(append(line, '\n'))
	l.mu.Unlock()
	if werr != nil {
		l.err.Error("audit line not written", "err", werr)
	}
}

// CallerTextLimit is how many bytes of caller text that failed
// verification, or names nothing configured, an audit record keeps: an
// unauthenticated caller must not be able to grow the audit trail with
// large strings.
const CallerTextLimit = 64

// CutCallerText cuts s to CallerTextLimit bytes on a UTF-8 boundary.
func CutCallerText(s string) string {
	if len(s) <= CallerTextLimit {
		return s
	}
	s = s[:CallerTextLimit]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Normalize fills the time (UTC) and a nil policy list.
func Normalize(r Record) Record {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	if r.Policies == nil {
		r.Policies = []string{}
	}
	return r
}

// Package audit records every broker decision (DESIGN §8): one JSON line on
// stdout (CloudWatch Logs) and one row in ephemera.audit_log of the database
// the request names. A Record has no field that could hold a password,
// signature, session token or nonce, so none can be written by mistake.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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

// Log writes audit records. Safe for concurrent use.
type Log struct {
	mu    sync.Mutex
	out   io.Writer
	pools map[string]*pgxpool.Pool
	err   *slog.Logger
}

// New returns a Log writing JSON lines to out and rows through pools (by
// configured database name). Failures to write a row are reported on errLog.
func New(out io.Writer, pools map[string]*pgxpool.Pool, errLog *slog.Logger) *Log {
	if errLog == nil {
		errLog = slog.New(slog.DiscardHandler)
	}
	return &Log{out: out, pools: pools, err: errLog}
}

// Write records r: the stdout line always; the table row when r.Database
// names a configured database. It returns the row's error, which callers
// should log but not turn into a different API answer.
func (l *Log) Write(ctx context.Context, r Record) error {
	l.Line(r)
	pool := l.pools[r.Database]
	if pool == nil {
		return nil
	}
	if err := Insert(context.WithoutCancel(ctx), pool, r); err != nil {
		l.err.Error("audit row not written", "request_id", r.RequestID, "database", r.Database, "err", err)
		return err
	}
	return nil
}

// Execer runs a statement (a pool or a transaction).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Line writes r's JSON line to the log's output only.
func (l *Log) Line(r Record) {
	r = normalize(r)
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

const insertSQL = `INSERT INTO ephemera.audit_log
		(time, request_id, event, decision, reason, principal_arn, account, session, source_ip,
		 database, db_role, username, lease_id, ttl_seconds, policies, latency_ms, aws_profile, source_identity)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`

func insertArgs(r Record) []any {
	r = normalize(r)
	var leaseID any
	if r.LeaseID != "" {
		leaseID = r.LeaseID
	}
	return []any{r.Time, r.RequestID, r.Event, r.Decision, r.Reason, r.PrincipalARN, r.Account, r.Session, r.SourceIP,
		r.Database, r.DBRole, r.Username, leaseID, r.TTLSeconds, r.Policies, r.LatencyMS, r.AWSProfile, r.SourceIdentity}
}

// Queue adds the row of r to b, for a caller that pipelines it with the
// change it audits in one transaction.
func Queue(b *pgx.Batch, r Record) { b.Queue(insertSQL, insertArgs(r)...) }

// Insert writes r as a row of ephemera.audit_log through db, so that a
// caller can commit it with the change it audits.
func Insert(ctx context.Context, db Execer, r Record) error {
	_, err := db.Exec(ctx, insertSQL, insertArgs(r)...)
	if err != nil {
		return fmt.Errorf("audit: insert: %w", err)
	}
	return nil
}

func normalize(r Record) Record {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	if r.Policies == nil {
		r.Policies = []string{}
	}
	return r
}

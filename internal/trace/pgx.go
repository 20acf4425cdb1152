package trace

import (
	"context"
	"strconv"
	"strings"
	"unicode"

	"github.com/aws/aws-xray-sdk-go/v2/xray"
	"github.com/jackc/pgx/v5"
)

// redacted replaces the part of a statement that is not recorded.
const redacted = "[redacted]"

// maxQueryLen bounds the statement text recorded for one query.
const maxQueryLen = 2048

// PgxTracer returns a tracer for pgx.ConnConfig.Tracer that, when the
// context of a call carries a segment (see Start), records one remote
// subsegment per SQL statement, per batch (with one child per statement)
// and per connection attempt, named "database@host", with
// sql.database_type "PostgreSQL", sql.url "host:port/database", sql.user,
// and sql.sanitized_query: the statement text only, never the argument
// values, and cut before the first single quote or dollar quote, so that
// literals are not recorded either. A statement whose text contains
// PASSWORD (as CREATE ROLE … PASSWORD 'SCRAM-SHA-256$…' does) is recorded
// as its first two words only ("CREATE ROLE [redacted]"). A failed
// statement records its SQLSTATE, not the server's message, which can quote
// argument values.
//
// The tracer implements pgx.QueryTracer, pgx.BatchTracer and
// pgx.ConnectTracer. Combine it with other tracers with
// github.com/jackc/pgx/v5/multitracer.
func PgxTracer() pgx.QueryTracer { return pgxTracer{} }

type pgxTracer struct{}

var (
	_ pgx.QueryTracer   = pgxTracer{}
	_ pgx.BatchTracer   = pgxTracer{}
	_ pgx.ConnectTracer = pgxTracer{}
)

// Each span's subsegment is kept under its own key, so that an end never
// closes the caller's segment when the start recorded nothing.
type (
	querySegKey   struct{}
	batchSegKey   struct{}
	connectSegKey struct{}
)

type dbInfo struct {
	host     string
	port     uint16
	database string
	user     string
	version  string
}

func (t pgxTracer) begin(ctx context.Context, key any, info dbInfo, query string) context.Context {
	pctx, ok := parentContext(ctx)
	if !ok {
		return ctx
	}
	cctx, seg := xray.BeginSubsegment(pctx, info.database+"@"+info.host)
	if seg == nil {
		return ctx
	}
	seg.Lock()
	seg.Namespace = "remote"
	sql := seg.GetSQL()
	sql.DatabaseType = "PostgreSQL"
	sql.DatabaseVersion = info.version
	sql.DriverVersion = "pgx/v5"
	sql.URL = info.host + ":" + strconv.Itoa(int(info.port)) + "/" + info.database
	sql.User = info.user
	sql.SanitizedQuery = query
	seg.Unlock()
	return context.WithValue(cctx, key, seg)
}

func end(ctx context.Context, key any, err error) {
	if seg, ok := ctx.Value(key).(*xray.Segment); ok {
		seg.Close(err)
	}
}

func connInfo(conn *pgx.Conn) dbInfo {
	cfg := conn.Config()
	return dbInfo{
		host:     cfg.Host,
		port:     cfg.Port,
		database: cfg.Database,
		user:     cfg.User,
		version:  conn.PgConn().ParameterStatus("server_version"),
	}
}

// traced reports cheaply whether a call with ctx would be recorded, before
// the connection's settings are copied.
func traced(ctx context.Context) bool {
	return Enabled() && (xray.GetSegment(ctx) != nil || incomingHeader(ctx) != "")
}

// TraceQueryStart implements pgx.QueryTracer.
func (t pgxTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !traced(ctx) {
		return ctx
	}
	return t.begin(ctx, querySegKey{}, connInfo(conn), sanitizeSQL(data.SQL))
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t pgxTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	end(ctx, querySegKey{}, data.Err)
}

// TraceBatchStart implements pgx.BatchTracer.
func (t pgxTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !traced(ctx) {
		return ctx
	}
	n := 0
	if data.Batch != nil {
		n = data.Batch.Len()
	}
	return t.begin(ctx, batchSegKey{}, connInfo(conn), "BATCH OF "+strconv.Itoa(n)+" STATEMENTS")
}

// TraceBatchQuery implements pgx.BatchTracer: it records the statement,
// which has already run, as a child of the batch's subsegment.
func (t pgxTracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	if _, ok := ctx.Value(batchSegKey{}).(*xray.Segment); !ok {
		return
	}
	qctx := t.begin(ctx, querySegKey{}, connInfo(conn), sanitizeSQL(data.SQL))
	end(qctx, querySegKey{}, data.Err)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (t pgxTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	end(ctx, batchSegKey{}, data.Err)
}

// TraceConnectStart implements pgx.ConnectTracer.
func (t pgxTracer) TraceConnectStart(ctx context.Context, data pgx.TraceConnectStartData) context.Context {
	if !traced(ctx) || data.ConnConfig == nil {
		return ctx
	}
	cfg := data.ConnConfig
	info := dbInfo{host: cfg.Host, port: cfg.Port, database: cfg.Database, user: cfg.User}
	return t.begin(ctx, connectSegKey{}, info, "")
}

// TraceConnectEnd implements pgx.ConnectTracer.
func (t pgxTracer) TraceConnectEnd(ctx context.Context, data pgx.TraceConnectEndData) {
	end(ctx, connectSegKey{}, data.Err)
}

// sanitizeSQL returns the part of a statement's text that may be recorded:
// for a statement that mentions PASSWORD (in any case), its first two
// words if they are keywords-like (letters only); otherwise the text before the first single quote (string
// literals, E'…', U&'…') or the first '$' that does not start a
// placeholder such as $1 (dollar-quoted literals), at most maxQueryLen
// bytes. "[redacted]" marks what was cut.
func sanitizeSQL(sql string) string {
	s := strings.TrimSpace(sql)
	if containsFold(s, "password") {
		kw := leadingKeywords(s, 2)
		if kw == "" {
			return redacted
		}
		return kw + " " + redacted
	}
	cut := -1
	for i := 0; i < len(s) && cut < 0; i++ {
		switch s[i] {
		case '\'':
			cut = i
		case '$':
			if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
				continue
			}
			cut = i
		}
	}
	if cut >= 0 {
		s = strings.TrimRightFunc(s[:cut], unicode.IsSpace)
		if s == "" {
			return redacted
		}
		s += " " + redacted
	}
	return truncate(s, maxQueryLen)
}

// leadingKeywords returns the first n words of s, as long as they are made
// of ASCII letters only, separated by one space.
func leadingKeywords(s string, n int) string {
	words := make([]string, 0, n)
	for _, f := range strings.Fields(s) {
		if len(words) == n {
			break
		}
		for i := 0; i < len(f); i++ {
			if c := f[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return strings.Join(words, " ")
			}
		}
		words = append(words, f)
	}
	return strings.Join(words, " ")
}

// containsFold reports whether s contains the lower-case ASCII word sub,
// ignoring case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

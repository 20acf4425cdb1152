package trace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// flatNode is one (sub)segment of a trace with the ID of its parent,
// whether it was nested in its parent's document or sent on its own.
type flatNode struct {
	node
	parentID string
}

// traceNodes returns every (sub)segment the daemon received for traceID.
func traceNodes(traceID string) []flatNode {
	_, docs := testDaemon.all()
	var out []flatNode
	var walk func(n node, parentID string)
	walk = func(n node, parentID string) {
		out = append(out, flatNode{n, parentID})
		for _, c := range n.children() {
			walk(c, n.str("id"))
		}
	}
	for _, d := range docs {
		if d["trace_id"] == traceID {
			walk(d, node(d).str("parent_id"))
		}
	}
	return out
}

func findNode(t *testing.T, nodes []flatNode, what string, match func(flatNode) bool) flatNode {
	t.Helper()
	for _, n := range nodes {
		if match(n) {
			return n
		}
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.str("name"))
	}
	t.Fatalf("no %s among the trace's (sub)segments %q", what, names)
	return flatNode{}
}

func named(name string) func(flatNode) bool {
	return func(n flatNode) bool { return n.str("name") == name }
}

func withQuery(q string) func(flatNode) bool {
	return func(n flatNode) bool { return n.obj("sql").str("sanitized_query") == q }
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newTraceID(t testing.TB) string {
	return fmt.Sprintf("1-%08x-%s", time.Now().Unix(), randomHex(t, 12))
}

func connect(ctx context.Context, t *testing.T) (*pgx.Conn, *pgx.ConnConfig) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testDBURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracer = PgxTracer()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, cfg
}

// headerServer answers 200 and sends on its channel the X-Amzn-Trace-Id
// header of each request.
func headerServer(t *testing.T) (*httptest.Server, chan string) {
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(HeaderName)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func get(ctx context.Context, t *testing.T, c *http.Client, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	return req
}

func TestSegmentsReachDaemon(t *testing.T) {
	srv, gotHeader := headerServer(t)

	ctx, endRoot := BeginSegment(context.Background(), "test-root")
	rootHeader := TraceHeader(ctx)
	traceID := traceIDOf(rootHeader)
	if traceID == "" || headerField(rootHeader, "Sampled") != "1" {
		t.Fatalf("TraceHeader of a root segment = %q, want a sampled trace", rootHeader)
	}
	Annotate(ctx, "lease_id", "lease-123")
	Annotate(ctx, "ttl seconds", int64(900))
	AddMetadata(ctx, "policies", []string{"orders-read", "orders-write"})

	ctx1, end1 := Start(ctx, "issue")
	ctx2, end2 := Start(ctx1, "nested-child")

	req := get(ctx2, t, HTTPClient(srv.Client()), srv.URL+"/v1/lease?token=query-secret-value")
	if h := req.Header.Get(HeaderName); h != "" {
		t.Errorf("HTTPClient modified the caller's request: %s = %q", HeaderName, h)
	}
	sentHeader := <-gotHeader

	conn, cfg := connect(ctx2, t)
	var n int
	if err := conn.QueryRow(ctx2, "SELECT $1::int + 1 WHERE 'a' = 'a'", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("query: %d, %v", n, err)
	}

	end2(nil)
	end1(errBoom)
	end1(errors.New("a second end is ignored"))
	endRoot(nil)

	testDaemon.waitFor(t, "the root segment", byTraceAndName(traceID, "test-root"))
	nodes := traceNodes(traceID)

	root := findNode(t, nodes, "root segment", named("test-root"))
	if ann := root.obj("annotations"); ann["lease_id"] != "lease-123" || ann["ttl_seconds"] != float64(900) {
		t.Errorf("root annotations = %v", ann)
	}
	if pol := root.obj("metadata").obj("default")["policies"]; fmt.Sprint(pol) != "[orders-read orders-write]" {
		t.Errorf("root metadata policies = %v", pol)
	}

	issue := findNode(t, nodes, "subsegment issue", named("issue"))
	if issue.parentID != root.str("id") {
		t.Errorf("issue's parent = %q, want the root %q", issue.parentID, root.str("id"))
	}
	if issue.node["fault"] != true {
		t.Errorf("issue: fault = %v, want true", issue.node["fault"])
	}
	exc, _ := issue.obj("cause")["exceptions"].([]any)
	if len(exc) != 1 {
		t.Fatalf("issue: exceptions = %v, want one", issue.obj("cause"))
	}
	e := node(exc[0].(map[string]any))
	if e.str("message") != errBoom.Error() || e.str("type") != "errors.errorString" || e["stack"] != nil {
		t.Errorf("issue: exception = %v, want type and message only", e)
	}

	child := findNode(t, nodes, "subsegment nested-child", named("nested-child"))
	if child.parentID != issue.str("id") {
		t.Errorf("nested-child's parent = %q, want issue %q", child.parentID, issue.str("id"))
	}

	host := strings.TrimPrefix(srv.URL, "http://")
	remote := findNode(t, nodes, "HTTP subsegment "+host, named(host))
	if remote.parentID != child.str("id") || remote.str("namespace") != "remote" {
		t.Errorf("HTTP subsegment: parent %q namespace %q, want parent %q and remote", remote.parentID, remote.str("namespace"), child.str("id"))
	}
	if u := remote.obj("http").obj("request").str("url"); u != srv.URL+"/v1/lease" {
		t.Errorf("HTTP subsegment url = %q, want it without the query", u)
	}
	if st := remote.obj("http").obj("response")["status"]; st != float64(200) {
		t.Errorf("HTTP subsegment status = %v", st)
	}
	if traceIDOf(sentHeader) != traceID || headerField(sentHeader, "Parent") != remote.str("id") || headerField(sentHeader, "Sampled") != "1" {
		t.Errorf("server received %s: %q, want Root=%s;Parent=%s;Sampled=1", HeaderName, sentHeader, traceID, remote.str("id"))
	}

	dbName := cfg.Database + "@" + cfg.Host
	query := findNode(t, nodes, "SQL subsegment", withQuery("SELECT $1::int + 1 WHERE [redacted]"))
	if query.str("name") != dbName || query.str("namespace") != "remote" || query.parentID != child.str("id") {
		t.Errorf("SQL subsegment: name %q namespace %q parent %q; want %q, remote, %q", query.str("name"), query.str("namespace"), query.parentID, dbName, child.str("id"))
	}
	sql := query.obj("sql")
	if sql.str("database_type") != "PostgreSQL" || sql.str("user") != cfg.User || sql.str("url") != fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database) {
		t.Errorf("SQL subsegment sql = %v", sql)
	}
	findNode(t, nodes, "connect subsegment", func(n flatNode) bool {
		return n.str("name") == dbName && n.obj("sql").str("sanitized_query") == "" && n.parentID == child.str("id")
	})

	raw, _ := testDaemon.all()
	for _, p := range raw {
		if strings.Contains(string(p), "query-secret-value") {
			t.Errorf("a datagram contains the request's query string: %s", p)
		}
	}
}

func TestSecretsNeverSent(t *testing.T) {
	secret := "arg-secret-" + randomHex(t, 8)
	literal := "literal-secret-" + randomHex(t, 8)
	salt, stored, server := randomHex(t, 16), randomHex(t, 32), randomHex(t, 32)
	verifier := "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + server
	role := "trace_test_" + randomHex(t, 4)

	ctx, endRoot := BeginSegment(context.Background(), "secrets")
	traceID := traceIDOf(TraceHeader(ctx))
	conn, _ := connect(ctx, t)

	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sanitizeSQL(sql), err)
		}
	}
	mustExec("CREATE ROLE " + role + " LOGIN PASSWORD '" + verifier + "'")
	mustExec("alter role " + role + " with password $v$" + verifier + "$v$")
	var eq bool
	if err := conn.QueryRow(ctx, "SELECT $1::text = 'x'", secret).Scan(&eq); err != nil {
		t.Fatal(err)
	}
	mustExec("SELECT '" + literal + "'::text")
	_, err := conn.Exec(ctx, "SELECT $1::int", secret)
	if err == nil || !strings.Contains(err.Error(), secret) {
		t.Fatalf("SELECT $1::int with a text argument: err = %v, want PostgreSQL to quote the argument", err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT $1::text", secret)
	b.Queue("SELECT length($1)", secret)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	mustExec("DROP ROLE " + role)
	endRoot(nil)

	testDaemon.waitFor(t, "the root segment", byTraceAndName(traceID, "secrets"))
	raw, _ := testDaemon.all()
	for _, p := range raw {
		for _, s := range []string{secret, literal, verifier, salt, stored, server, "SCRAM-SHA-256"} {
			if strings.Contains(string(p), s) {
				t.Errorf("a datagram contains %q: %s", s, p)
			}
		}
	}

	nodes := traceNodes(traceID)
	for _, q := range []string{
		"CREATE ROLE [redacted]",
		"alter role [redacted]",
		"SELECT $1::text = [redacted]",
		"SELECT [redacted]",
		"SELECT $1::int",
		"BATCH OF 2 STATEMENTS",
		"SELECT $1::text",
		"SELECT length($1)",
		"DROP ROLE " + role,
	} {
		findNode(t, nodes, "SQL subsegment "+q, withQuery(q))
	}
	failed := findNode(t, nodes, "failed statement", withQuery("SELECT $1::int"))
	exc, _ := failed.obj("cause")["exceptions"].([]any)
	if len(exc) != 1 || node(exc[0].(map[string]any)).str("message") != "ERROR: SQLSTATE 22P02" {
		t.Errorf("failed statement: cause = %v, want the SQLSTATE only", failed.obj("cause"))
	}
	batch := findNode(t, nodes, "batch", withQuery("BATCH OF 2 STATEMENTS"))
	stmt := findNode(t, nodes, "batch statement", withQuery("SELECT length($1)"))
	if stmt.parentID != batch.str("id") {
		t.Errorf("batch statement's parent = %q, want the batch %q", stmt.parentID, batch.str("id"))
	}

}

// lambdaTraceKey is the context key under which aws-lambda-go stores the
// invocation's trace header.
const lambdaTraceKey = "x-amzn-trace-id"

func lambdaContext(h string) context.Context {
	return context.WithValue(context.Background(), lambdaTraceKey, h) //nolint:staticcheck // the key aws-lambda-go uses
}

func TestLambdaFacadeSegment(t *testing.T) {
	reconfigureAfter(t)
	t.Setenv(envLambdaTaskRoot, "/var/task")
	if err := configureForTests(); err != nil {
		t.Fatal(err)
	}

	traceID, parent := newTraceID(t), randomHex(t, 8)
	h := "Root=" + traceID + ";Parent=" + parent + ";Sampled=1"
	ctx := lambdaContext(h)
	if got := TraceHeader(ctx); got != h {
		t.Errorf("TraceHeader of the handler's context = %q, want the function's header %q", got, h)
	}

	// Not sampled by the Lambda service: nothing is sent.
	unsampledID := newTraceID(t)
	uctx, uend := Start(lambdaContext("Root="+unsampledID+";Parent="+parent+";Sampled=0"), "unsampled-step")
	Annotate(uctx, "k", "v")
	uend(nil)

	ctx1, end1 := Start(ctx, "lambda-step")
	if ctx1 == ctx {
		t.Fatal("Start in Lambda returned the handler's context unchanged")
	}
	h1 := TraceHeader(ctx1)
	ctx2, end2 := Start(ctx1, "lambda-inner")
	Annotate(ctx2, "database", "orders")
	end2(nil)
	end1(nil)

	doc := node(testDaemon.waitFor(t, "the Lambda subsegment", byTraceAndName(traceID, "lambda-step")))
	if doc.str("type") != "subsegment" || doc.str("parent_id") != parent {
		t.Errorf("Lambda subsegment: type %q parent_id %q, want subsegment under the function's segment %q", doc.str("type"), doc.str("parent_id"), parent)
	}
	if traceIDOf(h1) != traceID || headerField(h1, "Parent") != doc.str("id") {
		t.Errorf("TraceHeader inside the subsegment = %q, want Root=%s;Parent=%s", h1, traceID, doc.str("id"))
	}
	inner := doc.child("lambda-inner")
	if inner == nil || inner.obj("annotations")["database"] != "orders" {
		t.Errorf("Lambda subsegment's children = %v, want lambda-inner annotated", doc.names())
	}
	_, docs := testDaemon.all()
	for _, d := range docs {
		if d["name"] == "facade" || d["trace_id"] == unsampledID {
			t.Errorf("daemon received %v: a facade or an unsampled subsegment", d)
		}
	}
}

func TestLambdaHeaderIgnoredOutsideLambda(t *testing.T) {
	ctx := lambdaContext("Root=" + newTraceID(t) + ";Parent=" + randomHex(t, 8) + ";Sampled=1")
	if c, _ := Start(ctx, "step"); c != ctx {
		t.Error("Start outside Lambda (LAMBDA_TASK_ROOT unset) began a subsegment")
	}
	if h := TraceHeader(ctx); h != "" {
		t.Errorf("TraceHeader outside Lambda = %q, want \"\"", h)
	}
}

func TestWithHeader(t *testing.T) {
	traceID, parent := newTraceID(t), randomHex(t, 8)
	srv, gotHeader := headerServer(t)

	ctx, end := Start(WithHeader(context.Background(), "Root="+traceID+";Parent="+parent+";Sampled=1"), "extension-invoke")
	get(ctx, t, HTTPClient(nil), srv.URL+"/v1/credentials")
	end(nil)

	doc := node(testDaemon.waitFor(t, "the extension's subsegment", byTraceAndName(traceID, "extension-invoke")))
	if doc.str("parent_id") != parent {
		t.Errorf("parent_id = %q, want %q", doc.str("parent_id"), parent)
	}
	remote := doc.child(strings.TrimPrefix(srv.URL, "http://"))
	if remote == nil {
		t.Fatalf("children = %v, want the broker call", doc.names())
	}
	if h := <-gotHeader; traceIDOf(h) != traceID || headerField(h, "Parent") != remote.str("id") {
		t.Errorf("broker received %s: %q", HeaderName, h)
	}

	for _, h := range []string{"", "garbage", "Root=" + traceID} {
		c := WithHeader(context.Background(), h)
		if c2, _ := Start(c, "step"); c2 != c {
			t.Errorf("WithHeader(%q): Start began a subsegment", h)
		}
	}
}

func TestNoSegmentInProcess(t *testing.T) {
	srv, gotHeader := headerServer(t)
	ctx := context.Background()

	c, end := Start(ctx, "step")
	if c != ctx {
		t.Error("Start without a segment changed ctx")
	}
	Annotate(c, "k", "v")
	AddMetadata(c, "k", map[string]int{"a": 1})
	end(errBoom)
	end(nil)
	if h := TraceHeader(c); h != "" {
		t.Errorf("TraceHeader = %q", h)
	}
	get(ctx, t, HTTPClient(srv.Client()), srv.URL)
	if h := <-gotHeader; h != "" {
		t.Errorf("server received %s %q without a segment", HeaderName, h)
	}
}

func TestDisabled(t *testing.T) {
	reconfigureAfter(t)
	t.Setenv(EnvTracing, "off")
	if err := configureForTests(); err != nil {
		t.Fatal(err)
	}
	if Enabled() {
		t.Fatal("Enabled() with EPHEMERA_TRACING=off")
	}
	srv, gotHeader := headerServer(t)
	ctx := context.Background()
	rctx, endRoot := BeginSegment(ctx, "disabled-root")
	sctx, end := Start(rctx, "disabled-step")
	if rctx != ctx || sctx != ctx {
		t.Error("BeginSegment or Start changed ctx while tracing is off")
	}
	lctx := WithHeader(ctx, "Root="+newTraceID(t)+";Parent="+randomHex(t, 8)+";Sampled=1")
	if c, _ := Start(lctx, "step"); c != lctx || TraceHeader(lctx) != "" {
		t.Error("Start or TraceHeader used an incoming header while tracing is off")
	}
	get(lctx, t, HTTPClient(nil), srv.URL)
	if h := <-gotHeader; h != "" {
		t.Errorf("server received %s %q while tracing is off", HeaderName, h)
	}
	end(nil)
	endRoot(nil)

	t.Setenv(EnvTracing, "on")
	if err := configureForTests(); err != nil {
		t.Fatal(err)
	}
	if !Enabled() {
		t.Error("Enabled() = false after EPHEMERA_TRACING=on")
	}
}

func TestConfigureRejectsBadOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"rate above 1":   WithSamplingRate(1.5),
		"negative rate":  WithSamplingRate(-0.1),
		"bad address":    WithDaemonAddress("no-port-here"),
		"bad port":       WithDaemonAddress("127.0.0.1:notaport"),
		"address triple": WithDaemonAddress("tcp:127.0.0.1:2000 udp:127.0.0.1:2000 x"),
	} {
		if err := Configure(opt); err == nil || !strings.HasPrefix(err.Error(), "trace: ") {
			t.Errorf("%s: Configure error = %v, want one prefixed \"trace: \"", name, err)
		}
	}
	if !Enabled() {
		t.Error("a rejected Configure switched tracing off")
	}
}

func TestSamplingRateZero(t *testing.T) {
	reconfigureAfter(t)
	if err := Configure(WithDaemonAddress(testDaemon.addr()), WithSamplingRate(0)); err != nil {
		t.Fatal(err)
	}
	ctx, end := BeginSegment(context.Background(), "never-sampled")
	if h := TraceHeader(ctx); headerField(h, "Sampled") != "0" {
		t.Errorf("TraceHeader with sampling rate 0 = %q, want Sampled=0", h)
	}
	end(nil)
}

func TestAnnotationValuesAndKeys(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want any
		ok   bool
	}{
		{"s", "s", true}, {true, true, true}, {7, 7, true}, {int32(-3), -3, true},
		{int64(1) << 40, 1 << 40, true}, {uint16(9), uint(9), true}, {1.5, 1.5, true},
		{time.Second, nil, false}, {[]string{"x"}, nil, false}, {nil, nil, false},
	} {
		got, ok := annotationValue(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("annotationValue(%#v) = %#v, %v; want %#v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for in, want := range map[string]string{"lease_id": "lease_id", "db role": "db_role", "a.b-c": "a_b_c", "x€": "x___"} {
		if got := annotationKey(in); got != want {
			t.Errorf("annotationKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSafeErrorText(t *testing.T) {
	ue := &url.Error{Op: "Post", URL: "https://user:pw@sts.amazonaws.com/path?X-Amz-Signature=abc", Err: errors.New("EOF")}
	if got := safeErrorText(fmt.Errorf("call: %w", ue)); got != "Post https://sts.amazonaws.com/path: EOF" {
		t.Errorf("safeErrorText(url.Error) = %q", got)
	}
	long := strings.Repeat("é", 600)
	if got := safeErrorText(errors.New(long)); len(got) > maxErrorMessage+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("safeErrorText(long) has %d bytes", len(got))
	}
}

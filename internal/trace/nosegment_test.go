package trace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-xray-sdk-go/v2/xraylog"
	"github.com/jackc/pgx/v5"
)

// TestNoSegmentNoDaemon runs, in a fresh process that never calls Configure
// and has no daemon, every entry point with a context that carries no
// segment, and checks that the process writes nothing at all: no slog
// record, no SDK log message at any level, nothing on stdout or stderr.
func TestNoSegmentNoDaemon(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envDaemonAddress+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envHelper+"=nosegment", envHelperDB+"="+testDBURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	if len(out) != 0 {
		t.Errorf("helper process wrote output:\n%s", out)
	}
}

// runNoSegmentHelper is the child process of TestNoSegmentNoDaemon. It
// reports failures on stderr and returns the exit code.
func runNoSegmentHelper(dbURL string) int {
	var logs bytes.Buffer
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var mu sync.Mutex
	var sdkLogs []string
	tap := func(level xraylog.LogLevel, msg string) {
		mu.Lock()
		sdkLogs = append(sdkLogs, level.String()+" "+msg)
		mu.Unlock()
	}
	sdkLogTap.Store(&tap)

	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }
	ctx := context.Background()

	if !Enabled() {
		fail("Enabled() = false by default")
	}
	c, end := Start(ctx, "step")
	if c != ctx {
		fail("Start changed ctx")
	}
	Annotate(c, "lease_id", "l-1")
	AddMetadata(c, "policies", []string{"p"})
	if h := TraceHeader(c); h != "" {
		fail("TraceHeader = %q", h)
	}
	end(errBoom)

	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(HeaderName)
	}))
	defer srv.Close()
	if resp, err := HTTPClient(nil).Get(srv.URL); err != nil {
		fail("HTTPClient: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if h := <-got; h != "" {
			fail("server received %s %q", HeaderName, h)
		}
	}

	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		fail("parse config: %v", err)
	} else {
		cfg.Tracer = PgxTracer()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			fail("connect: %v", err)
		} else {
			var n int
			if err := conn.QueryRow(ctx, "SELECT $1::int", 5).Scan(&n); err != nil || n != 5 {
				fail("query: %d, %v", n, err)
			}
			if _, err := conn.Exec(ctx, "SELECT $1::int", "x"); err == nil {
				fail("a failing statement succeeded")
			}
			b := &pgx.Batch{}
			b.Queue("SELECT 1")
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				fail("batch: %v", err)
			}
			conn.Close(ctx)
		}
	}

	mu.Lock()
	if len(sdkLogs) > 0 {
		fail("the SDK logged: %q", sdkLogs)
	}
	mu.Unlock()
	if logs.Len() > 0 {
		fail("slog received: %s", logs.String())
	}
	if len(failures) > 0 {
		fmt.Fprintln(os.Stderr, strings.Join(failures, "\n"))
		return 1
	}
	return 0
}

package storm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

// brokerProc is one "ephemera broker serve" process: one Lambda instance of
// the broker.
type brokerProc struct {
	idx    int
	cmd    *exec.Cmd
	url    string          // http://127.0.0.1:PORT, from its "broker listening" line
	stdout *observe.Buffer // audit lines and metrics
	stderr *observe.Buffer // JSON logs, one "request" line per answer
	exited chan struct{}   // closed when the process has exited
	err    error           // its exit, once exited is closed
}

// brokerEnv is the private environment of every broker process: only what
// "ephemera broker serve" reads, nothing of the test's own environment
// (no AWS credentials, no EPHEMERA_* of the caller).
func brokerEnv(dir, stsURL, adminDSN string, poolSize int, dbTimeout time.Duration) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TMPDIR=" + os.TempDir(),
		"EPHEMERA_CONFIG=" + filepath.Join(dir, "ephemera.yaml"),
		"EPHEMERA_POLICY_DIR=" + filepath.Join(dir, "policies"),
		"EPHEMERA_AUDIENCE=" + audience,
		"EPHEMERA_STS_ENDPOINT=" + stsURL,
		"EPHEMERA_STAGE=storm",
		"AWS_REGION=" + region,
		"EPHEMERA_DB_POOL_SIZE=" + strconv.Itoa(poolSize),
		"EPHEMERA_DB_TIMEOUT=" + dbTimeout.String(),
		adminDSNEnv + "=" + adminDSN,
	}
}

// startBrokers starts n broker processes at once and waits until each
// listens (each logs "broker listening" with its URL once its migrations
// and policy load are done). A process that exits first fails the test with
// its log. t.Cleanup kills whatever still runs at the end.
func startBrokers(t *testing.T, bin string, n int, env []string) []*brokerProc {
	t.Helper()
	procs := make([]*brokerProc, n)
	for i := range procs {
		p := &brokerProc{idx: i, stdout: &observe.Buffer{}, stderr: &observe.Buffer{}, exited: make(chan struct{})}
		p.cmd = exec.Command(bin, "broker", "serve", "--listen", "127.0.0.1:0")
		p.cmd.Env = env
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		p.cmd.Dir = t.TempDir()
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("storm: starting broker %d: %v", i, err)
		}
		go func() {
			p.err = p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(func() {
			select {
			case <-p.exited:
			default:
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		})
		procs[i] = p
	}
	// Generous: twenty processes migrate under one advisory lock on a
	// machine other tests share.
	deadline := time.Now().Add(90 * time.Second)
	for _, p := range procs {
		ok := observe.Until(time.Until(deadline), func() bool {
			select {
			case <-p.exited:
				return true
			default:
			}
			p.url = listeningURL(p.stderr.Lines())
			return p.url != ""
		})
		select {
		case <-p.exited:
			t.Fatalf("storm: broker %d exited before listening (%v):\n%s", p.idx, p.err, p.stderr)
		default:
		}
		if !ok {
			t.Fatalf("storm: broker %d did not listen in time:\n%s", p.idx, p.stderr)
		}
	}
	return procs
}

// listeningURL is the url of the "broker listening" line among lines, or "".
func listeningURL(lines []string) string {
	for _, l := range lines {
		var rec struct {
			Msg string `json:"msg"`
			URL string `json:"url"`
		}
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Msg == "broker listening" {
			return rec.URL
		}
	}
	return ""
}

// stopBrokers sends every process SIGTERM (it stops accepting and lets the
// requests in flight finish) and waits for all of them, killing one that
// outlives the bound. It returns the processes that did not exit cleanly.
func stopBrokers(procs []*brokerProc) error {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var errs []error
	for _, p := range procs {
		t := time.NewTimer(30 * time.Second)
		select {
		case <-p.exited:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("broker %d: %w", p.idx, p.err))
			}
		case <-t.C:
			_ = p.cmd.Process.Kill()
			<-p.exited
			errs = append(errs, fmt.Errorf("broker %d did not stop within 30s of SIGTERM", p.idx))
		}
		t.Stop()
	}
	return errors.Join(errs...)
}

// brokerLine is what the test reads of a broker's JSON output lines: the
// audit records on stdout, the "request" logs on stderr.
type brokerLine struct {
	Level     string `json:"level"`
	Msg       string `json:"msg"`
	RequestID string `json:"request_id"`
	Event     string `json:"event"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	Database  string `json:"database"`
	LeaseID   string `json:"lease_id"`
	Username  string `json:"username"`
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Cause     string `json:"cause"`
	Path      string `json:"path"`
	Err       string `json:"err"`
}

// lines parses the JSON lines of buf with msg == want (all if want is "").
func lines(buf *observe.Buffer, want string) []brokerLine {
	var out []brokerLine
	for _, l := range buf.Lines() {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var bl brokerLine
		if json.Unmarshal([]byte(l), &bl) == nil && (want == "" || bl.Msg == want) {
			out = append(out, bl)
		}
	}
	return out
}

// brokerContext is a bounded context for setup steps.
func brokerContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

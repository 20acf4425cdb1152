package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// One stack and one set of binaries for the whole package.
var (
	st             *stack.Stack
	admin          *pgxpool.Pool // superuser pool on the stack's database
	extDir         string        // holds the extension "ephemera"
	demoBootstrap  string        // functions/demo
	probeBootstrap string        // testdata/probe: survives an INIT without credentials
	rec            = &brokerRecorder{}
	brokerOut      = &observe.Buffer{} // the broker's logs and audit lines
	sandboxOuts    = &outputs{}        // what every sandbox printed
)

// Rotating role: the broker's YAML refuses TTLs under 30 s on purpose; the
// freeze/thaw test wants many rotations in a minute, so the stack adds this
// role after validation.
const (
	rotatingTTL    = 6 * time.Second
	rotatingMaxTTL = 12 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	defer gobuild.Clean()
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "FAIL: e2e setup: "+format+"\n", args...)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Build while the stack starts.
	t0 := time.Now()
	built := make(chan error, 1)
	go func() {
		var errs [3]error
		var wg sync.WaitGroup
		wg.Go(func() { extDir, errs[0] = stack.Extension(ctx) })
		wg.Go(func() { demoBootstrap, errs[1] = stack.DemoFunction(ctx) })
		wg.Go(func() {
			probeBootstrap, errs[2] = gobuild.Binary(ctx, "./testdata/probe", gobuild.Options{Tags: []string{gobuild.NoRPC}, Name: "bootstrap"})
		})
		wg.Wait()
		built <- errors.Join(errs[:]...)
	}()
	var err error
	st, err = stack.Start(ctx, stack.Options{
		LogStatements: true,
		Output:        brokerOut,
		Middleware:    rec.wrap,
		Configure:     stack.ShortRole("rotating", rotatingTTL, rotatingMaxTTL),
	})
	if err != nil {
		<-built
		return fail("stack: %v", err)
	}
	defer st.Close()
	if err := <-built; err != nil {
		return fail("building the binaries: %v", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: stack and binaries ready in %v\n", time.Since(t0).Round(time.Millisecond))
	if admin, err = pgxpool.New(ctx, st.PG.URL()); err != nil {
		return fail("admin pool: %v", err)
	}
	defer admin.Close()
	code := m.Run()
	if leaks := scanForCredentials(); len(leaks) > 0 {
		for _, l := range leaks {
			fmt.Fprintln(os.Stderr, "FAIL: e2e:", l)
		}
		code = 1
	}
	return code
}

// outputs keeps the output of every sandbox of the package, failed INITs
// included, for the final scan for secrets.
type outputs struct {
	mu   sync.Mutex
	bufs map[string]*observe.Buffer
}

func (o *outputs) add(name string) *observe.Buffer {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bufs == nil {
		o.bufs = map[string]*observe.Buffer{}
	}
	b := &observe.Buffer{}
	o.bufs[fmt.Sprintf("%s#%d", name, len(o.bufs)+1)] = b
	return b
}

func (o *outputs) all() map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]string, len(o.bufs))
	for k, b := range o.bufs {
		m[k] = b.String()
	}
	return m
}

// brokerRecorder wraps the broker's handler: it keeps every password the
// broker issued (to look for it in logs later), times every request, and
// can hold back the next issue.
type brokerRecorder struct {
	delayNext atomic.Int64 // nanoseconds to wait before the next POST /v1/credentials

	passwords stack.Passwords

	mu    sync.Mutex
	calls []brokerCall
}

type brokerCall struct {
	Method, Path string
	Status       int
	Start, End   time.Time // End: the answer was written
	Delay        time.Duration
}

func (b *brokerRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := brokerCall{Method: r.Method, Path: r.URL.Path, Start: time.Now()}
		issue := r.Method == http.MethodPost && r.URL.Path == "/v1/credentials"
		if issue {
			if d := time.Duration(b.delayNext.Swap(0)); d > 0 {
				c.Delay = d
				select {
				case <-time.After(d):
				case <-r.Context().Done():
				}
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		b.passwords.Wrap(h).ServeHTTP(sw, r)
		c.Status, c.End = sw.status, time.Now()
		b.mu.Lock()
		defer b.mu.Unlock()
		b.calls = append(b.calls, c)
	})
}

// issueTime sums the time the broker spent on issue requests that started
// within [from, to].
func (b *brokerRecorder) issueTime(from, to time.Time) (total time.Duration, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.calls {
		if c.Path == "/v1/credentials" && !c.Start.Before(from) && !c.Start.After(to) {
			total += c.End.Sub(c.Start)
			n++
		}
	}
	return total, n
}

func (b *brokerRecorder) callsSince(t time.Time) []brokerCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []brokerCall
	for _, c := range b.calls {
		if !c.Start.Before(t) {
			out = append(out, c)
		}
	}
	return out
}

func (b *brokerRecorder) allPasswords() []string { return b.passwords.All() }

// statusWriter notes the status of the answer it writes.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// sandbox is one emulated Lambda execution environment of a test.
type sandbox struct {
	emu *lambdaemu.Emulator
	cfg lambdaemu.Config
	id  stsserver.Identity
	out *observe.Buffer
}

// port is the extension's local API port.
func (s *sandbox) port() int { return stack.LocalPort(s.cfg) }

// startSandbox starts the demo function (or another bootstrap, via tweak)
// with the extension as workload id. INIT errors are returned, not fatal.
func startSandbox(t *testing.T, id stsserver.Identity, env map[string]string, tweak func(*lambdaemu.Config)) (*sandbox, error) {
	t.Helper()
	var sb *sandbox
	err := stack.RetryPort(env, func() error {
		cfg, err := st.LambdaConfig(id, extDir, demoBootstrap, env)
		if err != nil {
			t.Fatal(err)
		}
		sb = &sandbox{cfg: cfg, id: id, out: sandboxOuts.add(t.Name())}
		sb.cfg.Output = sb.out
		if tweak != nil {
			tweak(&sb.cfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sb.emu, err = lambdaemu.Start(ctx, sb.cfg)
		if stack.PortTaken(err) {
			t.Logf("port %d was taken", sb.port())
		}
		return err
	})
	if err != nil {
		return sb, err
	}
	t.Cleanup(func() { _ = sb.emu.Close() })
	return sb, nil
}

func mustStartSandbox(t *testing.T, id stsserver.Identity, env map[string]string, tweak func(*lambdaemu.Config)) *sandbox {
	t.Helper()
	sb, err := startSandbox(t, id, env, tweak)
	if err != nil {
		t.Fatalf("INIT failed: %v\n%s", err, sb.out.String())
	}
	return sb
}

// demoAnswer is the demo function's answer to GET /orders.
type demoAnswer struct {
	Status         int
	CurrentUser    string `json:"current_user"`
	Orders         []struct{ ID, Qty int }
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	Error          string    `json:"error"`
	ErrorType      string    // the emulator's Result.ErrorType
}

// ok reports whether the invocation read the orders.
func (a demoAnswer) ok() bool {
	return a.ErrorType == "" && a.Status == http.StatusOK && len(a.Orders) > 0 && strings.HasPrefix(a.CurrentUser, "eph_")
}

const getOrders = `{"version":"2.0","routeKey":"GET /orders","rawPath":"/orders","requestContext":{"http":{"method":"GET","path":"/orders"}}}`

// invokeDemo invokes the demo function once.
func (s *sandbox) invokeDemo(t *testing.T) demoAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := s.emu.Invoke(ctx, []byte(getOrders))
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	a := demoAnswer{ErrorType: res.ErrorType}
	if res.ErrorType != "" {
		a.Error = string(res.Payload)
		return a
	}
	var resp struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(res.Payload, &resp); err != nil {
		t.Fatalf("the demo's answer is not an API Gateway response: %v: %s", err, res.Payload)
	}
	a.Status = resp.StatusCode
	if err := json.Unmarshal([]byte(resp.Body), &a); err != nil {
		t.Fatalf("the demo's body is not JSON: %v: %s", err, resp.Body)
	}
	return a
}

// localGet sends GET path to the extension's local API at addr
// ("127.0.0.1:PORT") with the given token ("" for none) and Host ("" for
// addr).
func localGet(t *testing.T, hc *http.Client, addr, path, token, host string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Ephemera-Token", token)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body
}

// localCredential is the local API's answer.
type localCredential struct {
	Username  string    `json:"username"`
	Password  string    `json:"password"`
	DSN       string    `json:"dsn"`
	LeaseID   string    `json:"lease_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// brokerProxy stands between an extension and the broker: it forwards,
// drops connections (accepts and closes them), or hangs (accepts and never
// answers), as the test switches it.
type brokerProxy struct {
	URL  string
	mode atomic.Int32
	srv  *http.Server
	stop chan struct{}
}

const (
	proxyForward int32 = iota
	proxyDrop
	proxyHang
)

func startProxy(t *testing.T, mode int32) *brokerProxy {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(st.BrokerURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &brokerProxy{URL: "http://" + ln.Addr().String(), stop: make(chan struct{})}
	p.mode.Store(mode)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p.mode.Load() {
		case proxyDrop:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
				}
			}
		case proxyHang:
			select {
			case <-r.Context().Done():
			case <-p.stop:
			}
		default:
			rp.ServeHTTP(w, r)
		}
	})}
	go func() { _ = p.srv.Serve(&dropListener{Listener: ln, p: p}) }()
	t.Cleanup(func() {
		close(p.stop)
		_ = p.srv.Close()
	})
	return p
}

// dropListener closes connections at once while the proxy drops.
type dropListener struct {
	net.Listener
	p *brokerProxy
}

func (l *dropListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.p.mode.Load() != proxyDrop {
			return c, err
		}
		c.Close()
	}
}

// closedURL is a loopback URL on which nothing listens: connections are
// refused.
func closedURL(t *testing.T) string {
	t.Helper()
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "http://127.0.0.1:" + strconv.Itoa(port)
}

// vmRSS reads VmRSS of pid from /proc, in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS line")
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return percentile(s, 0.5)
}

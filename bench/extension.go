package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/layer"
	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

// buildExtension builds the extension as the layer does (layer.BuildBinary:
// static, stripped, -trimpath) for the host's architecture into
// dir/extensions/ephemera, and zips it as the layer does (layer.WriteZip).
func buildExtension(ctx context.Context, root, dir string) (bin string, binSize, zipSize int64, arch string, err error) {
	if runtime.GOOS != "linux" {
		return "", 0, 0, "", fmt.Errorf("the extension runs on linux only (host is %s)", runtime.GOOS)
	}
	var a layer.Arch
	for _, x := range layer.Arches {
		if x.GOARCH == runtime.GOARCH {
			a = x
		}
	}
	if a.Name == "" {
		return "", 0, 0, "", fmt.Errorf("no Lambda architecture for GOARCH %s", runtime.GOARCH)
	}
	bin = filepath.Join(dir, "extensions", "ephemera")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", 0, 0, "", err
	}
	if err := layer.BuildBinary(ctx, layer.BuildOptions{Dir: root}, a, bin); err != nil {
		return "", 0, 0, "", err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", 0, 0, "", err
	}
	if err := layer.CheckBinary(data, a); err != nil {
		return "", 0, 0, "", err
	}
	var zbuf bytes.Buffer
	if err := layer.WriteZip(&zbuf, data, time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		return "", 0, 0, "", err
	}
	return bin, int64(len(data)), int64(zbuf.Len()), a.Name, nil
}

// moduleRoot is the module's root, where the layer's go build runs.
var moduleRoot = gobuild.ModuleRoot

// fakeLambda is the smallest Extensions API: register, then one event/next
// that is held until SHUTDOWN.
type fakeLambda struct {
	srv      *http.Server
	addr     string
	ready    chan time.Time // first event/next: INIT done
	failed   chan string    // init/error or exit/error
	shutdown chan struct{}
	once     sync.Once
}

func startFakeLambda() (*fakeLambda, error) {
	f := &fakeLambda{ready: make(chan time.Time, 1), failed: make(chan string, 4), shutdown: make(chan struct{})}
	mux := http.NewServeMux()
	const base = "/2020-01-01/extension"
	mux.HandleFunc("POST "+base+"/register", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Lambda-Extension-Identifier", "6f1c3b52-1f7e-4c55-9d59-0c4b8d1e2a33")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"functionName":"orders-fn","functionVersion":"$LATEST","handler":"bootstrap"}`)
	})
	mux.HandleFunc("GET "+base+"/event/next", func(w http.ResponseWriter, r *http.Request) {
		f.once.Do(func() { f.ready <- time.Now() })
		select {
		case <-f.shutdown:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":%d}`, time.Now().Add(2*time.Second).UnixMilli())
	})
	report := func(w http.ResponseWriter, r *http.Request) {
		select {
		case f.failed <- r.Header.Get("Lambda-Extension-Function-Error-Type"):
		default:
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"status":"OK"}`)
	}
	mux.HandleFunc("POST "+base+"/init/error", report)
	mux.HandleFunc("POST "+base+"/exit/error", report)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.addr = ln.Addr().String()
	f.srv = &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// startInstantBroker answers issue and revoke at once with canned JSON.
func startInstantBroker() (*http.Server, string, error) {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, status int, body string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "00000000-0000-4000-8000-000000000000")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	mux.HandleFunc("POST /v1/credentials", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		now := time.Now().UTC().Truncate(time.Second)
		answer(w, http.StatusCreated, fmt.Sprintf(`{"lease_id":"3f8e4a7c-5b1d-4e2f-9a6b-7c8d9e0f1a2b","database":"orders","role":"readonly",`+
			`"username":"eph_readonly_abcdefghijkl","password":"%s","host":"127.0.0.1","port":5432,"dbname":"orders",`+
			`"sslmode":"disable","issued_at":%q,"expires_at":%q,"max_expires_at":%q,"renewable":true}`,
			strings.Repeat("x", 43), now.Format(time.RFC3339), now.Add(15*time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)))
	})
	mux.HandleFunc("POST /v1/leases/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		answer(w, http.StatusOK, fmt.Sprintf(`{"lease_id":%q,"revoked_at":%q}`, r.PathValue("id"), time.Now().UTC().Format(time.RFC3339)))
	})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// extRun is one started extension process.
type extRun struct {
	cmd   *exec.Cmd
	lam   *fakeLambda
	init  time.Duration // exec → first event/next
	port  int
	token string
	done  chan error
	out   *bytes.Buffer
}

// startExtension runs the extension binary against brokerURL, as Lambda
// would, and returns once it called event/next (INIT done).
func startExtension(bin, brokerURL string, creds aws.Credentials, extraEnv ...string) (*extRun, error) {
	lam, err := startFakeLambda()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		lam.srv.Close()
		return nil, err
	}
	r := &extRun{lam: lam, port: port, token: creds.SessionToken, done: make(chan error, 1), out: &bytes.Buffer{}}
	r.cmd = exec.Command(bin)
	r.cmd.Env = []string{
		"PATH=/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + lam.addr,
		"AWS_LAMBDA_FUNCTION_NAME=" + workFunction,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_REGION=" + region,
		"AWS_ACCESS_KEY_ID=" + creds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + creds.SecretAccessKey,
		"AWS_SESSION_TOKEN=" + creds.SessionToken,
		"EPHEMERA_BROKER_URL=" + brokerURL,
		"EPHEMERA_AUDIENCE=" + audience,
		"EPHEMERA_CREDENTIALS=orders=" + dbDefault + "/" + dbRole + ":15m",
		"EPHEMERA_PORT=" + strconv.Itoa(port),
	}
	r.cmd.Env = append(r.cmd.Env, extraEnv...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	t0 := time.Now()
	if err := r.cmd.Start(); err != nil {
		lam.srv.Close()
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait() }()
	select {
	case t := <-lam.ready:
		r.init = t.Sub(t0)
		return r, nil
	case typ := <-lam.failed:
		r.stop()
		return nil, fmt.Errorf("extension INIT failed: %s\n%s", typ, tail(r.out.String()))
	case err := <-r.done:
		r.done <- err
		r.stop()
		return nil, fmt.Errorf("extension exited during INIT: %v\n%s", err, tail(r.out.String()))
	case <-time.After(15 * time.Second):
		r.stop()
		return nil, errors.New("extension INIT did not finish in 15 s")
	}
}

// rssKiB is the process's resident set size.
func (r *extRun) rssKiB() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// stop sends SHUTDOWN (the extension revokes its lease and exits) and waits.
func (r *extRun) stop() {
	select {
	case <-r.lam.shutdown:
	default:
		close(r.lam.shutdown)
	}
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	_ = r.lam.srv.Close()
}

// reader reads the local credential as function code does.
func (r *extRun) reader() func(context.Context) error {
	return localReader(fmt.Sprintf("http://127.0.0.1:%d/v1/credentials/orders", r.port), r.token)
}

// localReader GETs url with the token header and decodes the JSON answer,
// as function code reading the extension does.
func localReader(url, token string) func(context.Context) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-Ephemera-Token", token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Username string `json:"username"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || body.Username == "" {
			return fmt.Errorf("local read: %d", resp.StatusCode)
		}
		return nil
	}
}

// floorToken is the token of the loopback floor's server.
const floorToken = "floor-token-0123456789abcdef0123456789abcdef"

// floorHandler answers as the extension's local read does at its least: it
// compares the token in constant time and writes a fixed answer of the same
// shape and size.
func floorHandler() http.Handler {
	body := []byte(`{"lease_id":"3f8e4a7c-5b1d-4e2f-9a6b-7c8d9e0f1a2b","database":"orders","role":"readonly",` +
		`"username":"eph_readonly_abcdefghijkl","password":"0123456789abcdef0123456789abcdef0123456789ab","host":"127.0.0.1",` +
		`"port":5432,"dbname":"orders","sslmode":"verify-full","expires_at":"2026-12-05T10:00:00Z","generation":1}` + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if subtle.ConstantTimeCompare([]byte(req.Header.Get("X-Ephemera-Token")), []byte(floorToken)) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// loopbackFloor serves floorHandler on 127.0.0.1 in the bench's own process
// and returns its URL and a stop function.
func loopbackFloor() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: floorHandler()}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/v1/credentials/orders", func() { _ = srv.Close() }, nil
}

// floorServerEnv makes the bench binary serve floorHandler instead of
// benchmarking (serveFloor): the loopback floor in a process of its own, as
// the extension is.
const floorServerEnv = "EPHEMERA_BENCH_FLOOR_SERVER"

// serveFloor serves floorHandler, prints its URL on stdout and exits when
// stdin closes.
func serveFloor() {
	url, stop, err := loopbackFloor()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer stop()
	fmt.Println(url)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// loopbackFloorProcess starts this binary as serveFloor and returns the
// floor's URL and a stop function.
func loopbackFloorProcess() (url string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floorServerEnv+"=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { _ = in.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		stop()
		return "", nil, fmt.Errorf("floor server: %w", err)
	}
	return strings.TrimSpace(line), stop, nil
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

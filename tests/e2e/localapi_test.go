package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLocalAPI drives the extension's local API from the test process while
// the sandbox is thawed: the token is the workload's session token, the
// Host must be the loopback address, unknown names are 404, and nothing
// answers on any address but 127.0.0.1. It also measures 200 reads.
func TestLocalAPI(t *testing.T) {
	id := st.Workload("orders-api-local", "orders-local-fn")
	sb := mustStartSandbox(t, id, nil, nil)
	port := sb.port()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	hc := &http.Client{Timeout: 10 * time.Second}

	if err := sb.emu.Thaw(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sb.emu.Freeze(); err != nil {
			t.Error(err)
		}
	}()

	const path = "/v1/credentials/orders"
	for _, tc := range []struct {
		name       string
		path       string
		token      string
		host       string
		wantStatus int
		wantCode   string
	}{
		{"no token", path, "", "", http.StatusUnauthorized, "unauthorized"},
		{"wrong token", path, id.SessionToken + "x", "", http.StatusUnauthorized, "unauthorized"},
		{"another workload's token", path, st.Workload("orders-api-other", "other-fn").SessionToken, "", http.StatusUnauthorized, "unauthorized"},
		{"foreign Host", path, id.SessionToken, "evil.example", http.StatusMisdirectedRequest, "misdirected_request"},
		{"foreign Host with the right port", path, id.SessionToken, "evil.example:" + strconv.Itoa(port), http.StatusMisdirectedRequest, "misdirected_request"},
		{"unknown name", "/v1/credentials/payroll", id.SessionToken, "", http.StatusNotFound, "not_found"},
		{"localhost", path, id.SessionToken, "localhost:" + strconv.Itoa(port), http.StatusOK, ""},
		{"the token", path, id.SessionToken, "", http.StatusOK, ""},
	} {
		status, body := localGet(t, hc, addr, tc.path, tc.token, tc.host)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if status != tc.wantStatus || e.Error.Code != tc.wantCode {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, e.Error.Code, tc.wantStatus, tc.wantCode)
		}
		if status != http.StatusOK && strings.Contains(string(body), `"password"`) {
			t.Errorf("%s: a refused request got a password", tc.name)
		}
	}

	// Not reachable on any other address of this machine.
	p := strconv.Itoa(port)
	targets := []string{net.JoinHostPort("::1", p), net.JoinHostPort("127.0.0.2", p)}
	// (0.0.0.0 is no such address: Linux connects it to 127.0.0.1.)
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() {
				continue
			}
			host := ipn.IP.String()
			if ipn.IP.IsLinkLocalUnicast() && ipn.IP.To4() == nil {
				host += "%" + ifc.Name
			}
			targets = append(targets, net.JoinHostPort(host, p))
		}
	}
	for _, target := range targets {
		conn, err := net.DialTimeout("tcp", target, time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("the local API accepts connections on %s", target)
		}
	}
	t.Logf("not reachable on %v", targets)

	// 200 sequential reads, as a function would make them.
	const reads = 200
	durations := make([]time.Duration, 0, reads)
	for range reads {
		start := time.Now()
		status, _ := localGet(t, hc, addr, path, id.SessionToken, "")
		durations = append(durations, time.Since(start))
		if status != http.StatusOK {
			t.Fatalf("read: %d", status)
		}
	}
	slices.Sort(durations)
	t.Logf("%d local credential reads: p50 %v, p99 %v, max %v", reads,
		percentile(durations, 0.50).Round(time.Microsecond), percentile(durations, 0.99).Round(time.Microsecond),
		durations[len(durations)-1].Round(time.Microsecond))
}

package broker_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestRequestValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	big := `{"database":"orders","role":"readonly","identity":null,"pad":"` + strings.Repeat("a", 64<<10) + `"}`
	cases := []struct {
		name, path, ctype, body string
		status                  int
		code                    string
	}{
		{"body over 64 KiB", "/v1/credentials", "application/json", big, 413, "payload_too_large"},
		{"unknown field", "/v1/credentials", "application/json", `{"database":"orders","role":"readonly","admin":true}`, 400, "invalid_request"},
		{"unknown field in proof", "/v1/credentials", "application/json", `{"identity":{"method":"POST","extra":1}}`, 400, "invalid_request"},
		{"not JSON", "/v1/credentials", "application/json", `database=orders`, 400, "invalid_request"},
		{"empty", "/v1/credentials", "application/json", ``, 400, "invalid_request"},
		{"trailing data", "/v1/credentials", "application/json", `{} {}`, 400, "invalid_request"},
		{"wrong type", "/v1/credentials", "application/json", `{"ttl_seconds":"900"}`, 400, "invalid_request"},
		{"wrong content type", "/v1/credentials", "text/plain", `{}`, 400, "invalid_request"},
		{"bad base64 body", "/v1/credentials", "application/json", `{"identity":{"body":"%%%"}}`, 400, "invalid_request"},
		{"no identity", "/v1/credentials", "application/json", `{"database":"orders","role":"readonly"}`, 401, "invalid_proof"},
		{"renew: lease id not a UUID", "/v1/leases/1;DROP/renew", "application/json", `{}`, 400, "invalid_request"},
		{"unknown path", "/v1/secrets", "application/json", `{}`, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			roles := ephemeralRoles(t)
			a := e.postRaw(c.path, c.ctype, []byte(c.body))
			if a.Status != c.status || a.code() != c.code {
				t.Fatalf("got %d %s, want %d %s", a.Status, a.Raw, c.status, c.code)
			}
			if ephemeralRoles(t) != roles {
				t.Fatal("a role was created")
			}
		})
	}
	_ = w
}

func TestHealthAndMethods(t *testing.T) {
	e := newEnv(t, envOptions{})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/health", nil)
	a := e.do(req)
	if a.Status != 200 || a.str("status") != "ok" || a.str("version") == "" {
		t.Fatalf("health: %d %s", a.Status, a.Raw)
	}
	req, _ = http.NewRequest(http.MethodGet, e.srv.URL+"/v1/credentials", nil)
	if a := e.do(req); a.Status != 400 || a.code() != "invalid_request" {
		t.Fatalf("GET /v1/credentials: %d %s", a.Status, a.Raw)
	}
}

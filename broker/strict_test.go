package broker_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestStrictJSON: a body that two JSON readers could read differently is
// refused before anything else happens — duplicate keys (encoding/json
// keeps the last), keys that differ from a field only in case (it matches
// them anyway), NUL characters (which made the audit insert fail) and
// invalid UTF-8 — in the request and in the proof inside it. No role, no
// call to STS, and the decision is still audited (as a line: the request
// names no database anyone can trust).
func TestStrictJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-strict", "fn")
	valid := func() map[string]any {
		p, err := json.Marshal(e.proof(w))
		must(t, err)
		var proof map[string]any
		must(t, json.Unmarshal(p, &proof))
		return map[string]any{"identity": proof, "database": "orders", "role": "readonly", "ttl_seconds": 60}
	}
	encode := func(v any) string {
		b, err := json.Marshal(v)
		must(t, err)
		return string(b)
	}
	cases := []struct {
		name string
		body func() string
	}{
		{"duplicate key", func() string {
			s := encode(valid())
			return strings.Replace(s, `"role":"readonly"`, `"role":"readonly","role":"admin"`, 1)
		}},
		{"case variant of a field", func() string {
			s := encode(valid())
			return strings.Replace(s, `"role":"readonly"`, `"Role":"readonly"`, 1)
		}},
		{"NUL in a value", func() string {
			s := encode(valid())
			return strings.Replace(s, `"role":"readonly"`, `"role":"readonly\u0000"`, 1)
		}},
		{"invalid UTF-8", func() string {
			s := encode(valid())
			return strings.Replace(s, `"role":"readonly"`, "\"role\":\"read\xffonly\"", 1)
		}},
		{"header under two spellings in the proof", func() string {
			v := valid()
			h := v["identity"].(map[string]any)["headers"].(map[string]any)
			h["authorization"] = h["Authorization"]
			return encode(v)
		}},
		{"duplicate key in the proof", func() string {
			s := encode(valid())
			return strings.Replace(s, `"method":"POST"`, `"method":"POST","method":"GET"`, 1)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.sts.Reset()
			roles := ephemeralRoles(t)
			before := strings.Count(e.audits.String(), `"msg":"audit"`)
			a := e.postRaw("/v1/credentials", "application/json", []byte(c.body()))
			if a.Status != http.StatusBadRequest || a.code() != "invalid_request" {
				t.Fatalf("got %d %s, want 400 invalid_request", a.Status, a.Raw)
			}
			if n := e.sts.RequestCount(); n != 0 {
				t.Fatalf("STS saw %d requests", n)
			}
			if ephemeralRoles(t) != roles {
				t.Fatal("a role was created")
			}
			if after := strings.Count(e.audits.String(), `"msg":"audit"`); after != before+1 {
				t.Fatalf("audit lines %d → %d, want one more", before, after)
			}
			if bytes.Contains([]byte(e.audits.String()), []byte("\x00")) {
				t.Fatal("a NUL reached the audit line")
			}
		})
	}
}

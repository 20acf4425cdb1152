package api_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/api"
)

func TestUnmarshalStrict(t *testing.T) {
	proof := `{"method":"POST","url":"https://sts.us-east-1.amazonaws.com/","headers":{"Host":["h"]},"body":"QQ=="}`
	cases := []struct {
		name, body string
		want       string // substring of the error; "" = accepted
	}{
		{"valid", `{"identity":` + proof + `,"database":"orders","role":"readonly","ttl_seconds":60}`, ""},
		{"duplicate key", `{"database":"orders","database":"billing"}`, `duplicate key "database"`},
		{"case variant of a field", `{"Database":"orders"}`, `must be spelled "database"`},
		{"case variant pair", `{"database":"a","DATABASE":"b"}`, "differ only in case"},
		{"NUL in a value", `{"role":"readonly\u0000"}`, "NUL character"},
		{"NUL in a key", `{"ro\u0000le":"x"}`, "NUL character"},
		{"unknown field", `{"database":"orders","admin":true}`, `unknown field "admin"`},
		{"trailing data", `{"database":"orders"} {}`, "data after"},
		{"invalid UTF-8", "{\"role\":\"\xff\"}", "invalid UTF-8"},
		{"nested duplicate header", `{"identity":{"headers":{"Host":["a"],"host":["b"]}}}`, "differ only in case"},
		{"nested NUL", `{"identity":{"headers":{"Host":["a\u0000"]}}}`, "NUL character"},
		{"nested unknown", `{"identity":{"method":"POST","extra":1}}`, `unknown field "extra"`},
		{"wrong type", `{"ttl_seconds":"60"}`, `field "ttl_seconds"`},
		{"empty", ``, "empty body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var req api.IssueRequest
			err := api.Unmarshal([]byte(c.body), &req)
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected a valid body: %v", err)
				}
				if req.Database != "orders" || req.Identity == nil || string(req.Identity.Body) != "A" || *req.TTLSeconds != 60 {
					t.Fatalf("decoded %+v", req)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestUnmarshalAnswerAllowsUnknownFieldsOnly(t *testing.T) {
	var c api.Credential
	if err := api.UnmarshalAnswer([]byte(`{"username":"u","new_field":1}`), &c); err != nil || c.Username != "u" {
		t.Fatalf("unknown field in an answer: %v %+v", err, c)
	}
	for _, body := range []string{`{"username":"u","username":"v"}`, `{"Username":"u"}`, `{"username":"u\u0000"}`} {
		if err := api.UnmarshalAnswer([]byte(body), &c); !errors.Is(err, api.ErrStrictJSON) {
			t.Errorf("%s: error = %v, want ErrStrictJSON", body, err)
		}
	}
}

func TestErrorClassification(t *testing.T) {
	err := error(&api.Error{Code: api.CodeLeaseRevoked, Message: "the lease was revoked", Cause: errors.New("x")})
	wrapped := errors.Join(errors.New("context"), err)
	if !errors.Is(wrapped, api.ErrLeaseRevoked) || errors.Is(wrapped, api.ErrLeaseExpired) {
		t.Fatal("errors.Is does not classify by code")
	}
	if api.CodeOf(wrapped) != api.CodeLeaseRevoked {
		t.Fatalf("CodeOf = %q", api.CodeOf(wrapped))
	}
	e503 := &api.Error{Code: api.CodeDatabaseUnavailable}
	if e503.Status() != 503 || e503.RetryAfterHeader() != "1" {
		t.Fatalf("503: status %d retry-after %q", e503.Status(), e503.RetryAfterHeader())
	}
	if (&api.Error{Code: api.CodeAccessDenied}).RetryAfterHeader() != "" {
		t.Fatal("a 403 carries Retry-After")
	}
	for _, c := range api.Codes() {
		if c.Status() < 400 {
			t.Errorf("%s has status %d", c, c.Status())
		}
	}
}

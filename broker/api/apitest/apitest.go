// Package apitest is the contract suite of the broker's HTTP API: one set of cases that
// every implementation must pass — the real broker's handler, and every double that
// other packages' tests use in its place — so that a double can never drift from the
// contract the broker is held to.
//
// A test builds a [Target] for its implementation and calls [Run]:
//
//	func TestContract(t *testing.T) {
//		apitest.Run(t, func(t *testing.T) apitest.Target {
//			sts := stsserver.StartTB(t)
//			url := startBroker(t, sts.URL()) // the implementation under test
//			return apitest.Target{
//				URL:         url,
//				Prove:       apitest.STSProver(sts, "123456789012", "us-east-1", "test-audience"),
//				Database:    "orders", Role: "readonly",
//				AllowedRole: "orders-api-role", DeniedRole: "compromised",
//			}
//		})
//	}
//
// Every case asserts the HTTP status, the error code, and the shape of the JSON answer,
// decoded with api.Unmarshal (so an answer with a field the contract does not name, a
// duplicate key or a case variant fails); every answer must carry X-Request-Id, and every
// failure must be an api.ErrorDocument whose request_id is that header and whose code's
// status is the answer's status.
//
// The package does not import package broker, so that the broker's own tests can use it.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Target is one implementation of the broker API under test, with what the suite needs
// to know of its configuration.
type Target struct {
	// URL is the implementation's base URL, e.g. an httptest.Server's.
	URL string
	// Prove returns a fresh, single-use identity proof signed by a session of the IAM
	// role named role, for the target's audience. STSProver builds one from the STS
	// emulator the target verifies proofs with.
	Prove func(t testing.TB, role string) *api.Proof
	// Database and Role name a database role the target knows.
	Database, Role string
	// AllowedRole is an IAM role name the target's policy permits to issue, renew and
	// revoke Database/Role; DeniedRole one it denies.
	AllowedRole, DeniedRole string
	// UnknownDatabase names a database the target does not know. Default
	// "apitest-no-such-database".
	UnknownDatabase string
	// FailNext makes the target answer its next request with a 503 (its
	// database or STS unavailable). Required: the 503 case fails without it.
	FailNext func(t testing.TB)
	// Client sends the suite's requests. Default: a client with a 10 s timeout that
	// follows no redirect.
	Client *http.Client
}

// STSProver returns a Target.Prove that signs with attest.Sign as a session of the named
// role in account: the first proof for a role registers a new identity for it in sts
// (stsserver.NewIdentity), later ones reuse it.
func STSProver(sts *stsserver.Server, account, region, audience string) func(t testing.TB, role string) *api.Proof {
	var mu sync.Mutex
	ids := map[string]stsserver.Identity{}
	return func(t testing.TB, role string) *api.Proof {
		t.Helper()
		mu.Lock()
		id, ok := ids[role]
		if !ok {
			id = stsserver.NewIdentity(account, role, "apitest")
			sts.Add(id)
			ids[role] = id
		}
		mu.Unlock()
		creds := aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken}
		p, err := attest.Sign(context.Background(), creds, region, audience, time.Now())
		if err != nil {
			t.Fatalf("apitest: signing a proof: %v", err)
		}
		return p
	}
}

// Run runs every case against a fresh target from newTarget (called once per case, in
// the case's own subtest).
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := newTarget(t)
			if tg.URL == "" || tg.Prove == nil || tg.Database == "" || tg.Role == "" || tg.AllowedRole == "" || tg.DeniedRole == "" {
				t.Fatal("apitest: the Target lacks URL, Prove, Database, Role, AllowedRole or DeniedRole")
			}
			if tg.UnknownDatabase == "" {
				tg.UnknownDatabase = "apitest-no-such-database"
			}
			if tg.Client == nil {
				tg.Client = &http.Client{Timeout: 10 * time.Second,
					CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			}
			c.run(t, &tg)
		})
	}
}

// answer is one response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// send sends method path with body (JSON-encoded unless already []byte) and contentType,
// and checks what every answer must have: X-Request-Id, and a JSON Content-Type.
func (tg *Target) send(t *testing.T, method, path, contentType string, body any) answer {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, strings.TrimRight(tg.URL, "/")+path, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := tg.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: answer %d has no X-Request-Id", method, path, a.status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("%s %s: answer %d has Content-Type %q, want application/json", method, path, a.status, resp.Header.Get("Content-Type"))
	}
	return a
}

func (tg *Target) post(t *testing.T, path string, body any) answer {
	t.Helper()
	return tg.send(t, http.MethodPost, path, "application/json", body)
}

// success decodes a successful answer of status want into dst, strictly.
func success(t *testing.T, a answer, want int, dst any) {
	t.Helper()
	if a.status != want {
		t.Fatalf("status %d, want %d: %s", a.status, want, clip(a.body))
	}
	if err := api.Unmarshal(a.body, dst); err != nil {
		t.Fatalf("the %d answer is not the contract's %T: %v: %s", want, dst, err, clip(a.body))
	}
}

// failure checks that a is an error document with status and code, whose request_id is
// the X-Request-Id header, and returns it.
func failure(t *testing.T, a answer, status int, code api.Code) api.ErrorDocument {
	t.Helper()
	var doc api.ErrorDocument
	if err := api.Unmarshal(a.body, &doc); err != nil {
		t.Fatalf("status %d: the answer is not an api.ErrorDocument: %v: %s", a.status, err, clip(a.body))
	}
	if a.status != status || doc.Error.Code != code {
		t.Fatalf("status %d code %q (%s), want %d %q", a.status, doc.Error.Code, doc.Error.Message, status, code)
	}
	if code.Status() != a.status {
		t.Errorf("code %q answered with status %d, the contract says %d", code, a.status, code.Status())
	}
	if doc.Error.Message == "" {
		t.Errorf("error %q has no message", code)
	}
	if got, want := doc.Error.RequestID, a.header.Get("X-Request-Id"); got != want {
		t.Errorf("request_id %q differs from X-Request-Id %q", got, want)
	}
	if (a.status == http.StatusServiceUnavailable || a.status == http.StatusTooManyRequests) && a.header.Get("Retry-After") == "" {
		t.Errorf("a %d without Retry-After", a.status)
	}
	return doc
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// issue issues a credential for role (an IAM role name) and returns it.
func (tg *Target) issue(t *testing.T, role string) api.Credential {
	t.Helper()
	var c api.Credential
	success(t, tg.post(t, api.PathCredentials, api.IssueRequest{Identity: tg.Prove(t, role), Database: tg.Database, Role: tg.Role}),
		http.StatusCreated, &c)
	return c
}

func (tg *Target) issueRequest(t *testing.T) api.IssueRequest {
	return api.IssueRequest{Identity: tg.Prove(t, tg.AllowedRole), Database: tg.Database, Role: tg.Role}
}

func (tg *Target) renew(t *testing.T, leaseID string) answer {
	t.Helper()
	return tg.post(t, api.RenewPath(leaseID), api.RenewRequest{Identity: tg.Prove(t, tg.AllowedRole)})
}

func (tg *Target) revoke(t *testing.T, leaseID string) answer {
	t.Helper()
	return tg.post(t, api.RevokePath(leaseID), api.RevokeRequest{Identity: tg.Prove(t, tg.AllowedRole)})
}

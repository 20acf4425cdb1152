package broker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// signOpts shapes a proof before and after signing, to break one check.
type signOpts struct {
	host      string // default sts.us-east-1.amazonaws.com
	audience  string // default the broker's
	when      time.Time
	service   string // default sts
	skipAud   bool   // sign without X-Ephemera-Audience, add it afterwards
	skipToken bool   // sign without the session token header, add it afterwards
	body      string
	secret    string // sign with another secret
	preSign   func(*http.Request)
	postSign  func(*attest.Proof)
}

func (e *env) signWith(w workload, o signOpts) *attest.Proof {
	e.t.Helper()
	if o.host == "" {
		o.host = attest.STSHost(region)
	}
	if o.audience == "" {
		o.audience = audience
	}
	if o.when.IsZero() {
		o.when = time.Now()
	}
	if o.service == "" {
		o.service = "sts"
	}
	if o.body == "" {
		o.body = attest.RequestBody
	}
	creds := w.creds
	if o.secret != "" {
		creds.SecretAccessKey = o.secret
	}
	token := creds.SessionToken
	if o.skipToken {
		creds.SessionToken = ""
	}
	nonce, err := attest.NewNonce()
	must(e.t, err)
	req, err := http.NewRequest(http.MethodPost, "https://"+o.host+"/", bytes.NewReader([]byte(o.body)))
	must(e.t, err)
	req.Header.Set("Content-Type", attest.ContentType)
	if !o.skipAud {
		req.Header.Set(attest.HeaderAudience, o.audience)
	}
	req.Header.Set(attest.HeaderNonce, nonce)
	if o.preSign != nil {
		o.preSign(req)
	}
	sum := sha256.Sum256([]byte(o.body))
	must(e.t, v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), o.service, region, o.when.UTC()))
	p := &attest.Proof{Method: http.MethodPost, URL: "https://" + o.host + "/", Body: []byte(o.body), Headers: map[string][]string{}}
	for k, v := range req.Header {
		p.Headers[k] = v
	}
	p.Headers["Host"] = []string{o.host}
	p.Headers["Content-Length"] = []string{strconv.Itoa(len(o.body))}
	if o.skipAud {
		p.Headers[attest.HeaderAudience] = []string{o.audience}
	}
	if o.skipToken {
		p.Headers["X-Amz-Security-Token"] = []string{token}
	}
	if o.postSign != nil {
		o.postSign(p)
	}
	return p
}

// TestProofChecks breaks each of the ten proof checks and expects the documented
// code, no role, an audit row with decision=deny and the reason, and — for
// checks 1 to 8 — no request to STS at all.
func TestProofChecks(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "orders-fn")
	mismatch := e.workload("orders-api-role", "fn")
	mismatch.id.Account = "999999999999"
	e.sts.Add(mismatch.id)
	user := stsserver.NewIdentity(account, "x", "y")
	user.ARN = "arn:aws:iam::123456789012:user/alice"
	e.sts.Add(user)
	userW := workload{id: user, creds: w.creds}
	userW.creds.AccessKeyID, userW.creds.SecretAccessKey, userW.creds.SessionToken = user.AccessKeyID, user.SecretAccessKey, user.SessionToken

	cases := []struct {
		name   string
		check  int
		code   string
		status int
		mode   stsserver.Mode
		proof  func() *attest.Proof
	}{
		{"GET", 1, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) { p.Method = "GET" }})
		}},
		{"query string", 1, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) { p.URL += "?Action=GetCallerIdentity" }})
		}},
		{"user info", 1, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) { p.URL = "https://u:p@sts.us-east-1.amazonaws.com/" }})
		}},
		{"path", 1, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) { p.URL += "x" }})
		}},
		{"foreign STS host", 2, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{host: "sts.attacker.example"})
		}},
		{"other region's STS host", 2, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{host: "sts.eu-west-1.amazonaws.com"})
		}},
		{"extra body parameter", 3, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{body: attest.RequestBody + "&DurationSeconds=900"})
		}},
		{"extra header Accept", 4, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{preSign: func(r *http.Request) { r.Header.Set("Accept", "application/json") }})
		}},
		{"two Authorization headers", 4, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) {
				p.Headers["Authorization"] = append(p.Headers["Authorization"], p.Headers["Authorization"][0])
			}})
		}},
		{"Content-Length mismatch", 4, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{postSign: func(p *attest.Proof) { p.Headers["Content-Length"] = []string{"44"} }})
		}},
		{"wrong audience", 5, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{audience: "prod-billing"})
		}},
		{"malformed nonce", 5, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{preSign: func(r *http.Request) { r.Header.Set(attest.HeaderNonce, "NOT-HEX") }})
		}},
		{"audience present but not signed", 6, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{skipAud: true})
		}},
		{"session token present but not signed", 6, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{skipToken: true})
		}},
		{"scope service is not sts", 6, "invalid_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{service: "s3"})
		}},
		{"stale X-Amz-Date", 7, "stale_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{when: time.Now().Add(-6 * time.Minute)})
		}},
		{"X-Amz-Date in the future", 7, "stale_proof", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{when: time.Now().Add(2 * time.Minute)})
		}},
		{"wrong secret: STS says no", 9, "identity_rejected", 401, 0, func() *attest.Proof {
			return e.signWith(w, signOpts{secret: strings.Repeat("x", 40)})
		}},
		{"STS returns JSON", 9, "identity_rejected", 401, stsserver.ModeJSON, func() *attest.Proof { return e.proof(w) }},
		{"STS redirects", 9, "identity_rejected", 401, stsserver.ModeRedirect, func() *attest.Proof { return e.proof(w) }},
		{"STS returns two results", 9, "identity_rejected", 401, stsserver.ModeDoubleResult, func() *attest.Proof { return e.proof(w) }},
		{"STS unavailable", 9, "sts_unavailable", 503, stsserver.ModeUnavailable, func() *attest.Proof { return e.proof(w) }},
		{"ARN account differs from Account", 10, "identity_rejected", 401, 0, func() *attest.Proof { return e.proof(mismatch) }},
		{"IAM user is not a role", 10, "identity_rejected", 401, 0, func() *attest.Proof { return e.proof(userW) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			e.sts.SetMode(c.mode)
			defer e.sts.SetMode(stsserver.ModeNormal)
			p := c.proof()
			e.sts.Reset()
			roles := ephemeralRoles(t)
			a := e.post("/v1/credentials", map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 60})
			if a.Status != c.status || a.code() != c.code {
				t.Fatalf("got %d %s, want %d %s", a.Status, a.Raw, c.status, c.code)
			}
			sawSTS := e.sts.RequestCount()
			if c.check <= 8 && sawSTS != 0 {
				t.Fatalf("check %d: STS saw %d requests, want none", c.check, sawSTS)
			}
			if c.check > 8 && sawSTS != 1 {
				t.Fatalf("check %d: STS saw %d requests, want 1 (no redirect followed, no retry)", c.check, sawSTS)
			}
			if ephemeralRoles(t) != roles {
				t.Fatal("a role was created")
			}
			row := auditOne(t, a.RequestID)
			wantDecision := "deny"
			if c.status >= 500 {
				wantDecision = "error"
			}
			if row.Decision != wantDecision || row.Reason != c.code || row.Event != "issue" {
				t.Fatalf("audit %+v", row)
			}
		})
	}
}

func TestReplayedProof(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	p := e.proof(w)
	body := map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 60}
	if a := e.post("/v1/credentials", body); a.Status != http.StatusCreated {
		t.Fatalf("first use: %d %s", a.Status, a.Raw)
	}
	e.sts.Reset()
	roles := ephemeralRoles(t)
	a := e.post("/v1/credentials", body)
	if a.Status != http.StatusUnauthorized || a.code() != "replayed_proof" {
		t.Fatalf("replay: %d %s", a.Status, a.Raw)
	}
	if e.sts.RequestCount() != 0 || ephemeralRoles(t) != roles {
		t.Fatal("a replay reached STS or created a role")
	}
	if row := auditOne(t, a.RequestID); row.Decision != "deny" || row.Reason != "replayed_proof" {
		t.Fatalf("audit %+v", row)
	}
	// Replaying the proof on another endpoint fails the same way.
	a = e.post("/v1/admin/revoke", map[string]any{"identity": p, "principal_arn": "arn:aws:iam::123456789012:role/x"})
	if a.code() != "replayed_proof" {
		t.Fatalf("replay on admin/revoke: %d %s", a.Status, a.Raw)
	}
}

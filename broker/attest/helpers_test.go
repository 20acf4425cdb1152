package attest_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	testRegion   = "us-east-1"
	testAudience = "prod-orders"
	testAccount  = "123456789012"
	testRole     = "orders-api-role"
	testSession  = "orders-fn"
)

var testHost = attest.STSHost(testRegion)

// memNonces is an in-memory attest.NonceStore; the broker's real one is
// PostgreSQL.
type memNonces struct {
	mu      sync.Mutex
	seen    map[string]time.Time
	calls   int // UseNonce
	reads   int // NonceSeen
	expires []time.Time
	err     error // returned by every call when set
}

var _ attest.NonceReader = (*memNonces)(nil)

func newMemNonces() *memNonces { return &memNonces{seen: map[string]time.Time{}} }

func (m *memNonces) UseNonce(_ context.Context, nonce string, expires time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.err != nil {
		return false, m.err
	}
	m.expires = append(m.expires, expires)
	if _, ok := m.seen[nonce]; ok {
		return false, nil
	}
	m.seen[nonce] = expires
	return true, nil
}

// NonceSeen reads without recording (counted apart from UseNonce).
func (m *memNonces) NonceSeen(_ context.Context, nonce string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.err != nil {
		return false, m.err
	}
	_, ok := m.seen[nonce]
	return ok, nil
}

func (m *memNonces) readCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads
}

func (m *memNonces) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

func credsOf(id stsserver.Identity) aws.Credentials {
	return aws.Credentials{
		AccessKeyID:     id.AccessKeyID,
		SecretAccessKey: id.SecretAccessKey,
		SessionToken:    id.SessionToken,
	}
}

// env is a local STS that knows one identity, and a verifier whose endpoint
// is that STS.
type env struct {
	sts    *stsserver.Server
	id     stsserver.Identity
	nonces *memNonces
	v      *attest.Verifier
}

func newEnv(t *testing.T, tweak ...func(*attest.Config)) *env {
	t.Helper()
	id := stsserver.NewIdentity(testAccount, testRole, testSession)
	sts := stsserver.StartTB(t, id)
	nonces := newMemNonces()
	cfg := attest.Config{Audience: testAudience, Region: testRegion, Endpoint: sts.URL(), Nonces: nonces}
	for _, f := range tweak {
		f(&cfg)
	}
	v, err := attest.NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return &env{sts: sts, id: id, nonces: nonces, v: v}
}

func (e *env) creds() aws.Credentials { return credsOf(e.id) }

// spec describes a proof to sign. It mirrors attest.Sign, with every input
// overridable and hooks before and after signing, so that a test can break
// one check while the signature stays valid over what it changed.
type spec struct {
	creds    aws.Credentials
	method   string // default POST
	url      string // default https://<testHost>/
	body     string // default attest.RequestBody
	region   string // signing region, default testRegion
	service  string // signing service, default "sts"
	audience string // default testAudience
	nonce    string // default a fresh attest.NewNonce
	now      time.Time
	// before runs on the request just before it is signed.
	before func(*http.Request)
	// after runs on the finished proof.
	after func(*attest.Proof)
}

// signSpec signs s the way attest.Sign does.
func signSpec(t *testing.T, s spec) *attest.Proof {
	t.Helper()
	s.method = cmp.Or(s.method, http.MethodPost)
	s.url = cmp.Or(s.url, "https://"+testHost+"/")
	s.body = cmp.Or(s.body, attest.RequestBody)
	s.region = cmp.Or(s.region, testRegion)
	s.service = cmp.Or(s.service, "sts")
	s.audience = cmp.Or(s.audience, testAudience)
	if s.nonce == "" {
		n, err := attest.NewNonce()
		if err != nil {
			t.Fatal(err)
		}
		s.nonce = n
	}
	if s.now.IsZero() {
		s.now = time.Now()
	}
	body := []byte(s.body)
	req, err := http.NewRequestWithContext(context.Background(), s.method, s.url, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	req.Header.Set("Content-Type", attest.ContentType)
	req.Header.Set(attest.HeaderAudience, s.audience)
	req.Header.Set(attest.HeaderNonce, s.nonce)
	if s.before != nil {
		s.before(req)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), s.creds, req, hex.EncodeToString(sum[:]), s.service, s.region, s.now.UTC()); err != nil {
		t.Fatalf("signing: %v", err)
	}
	headers := make(map[string][]string, len(req.Header)+2)
	for k, v := range req.Header {
		headers[k] = append([]string(nil), v...)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	headers["Host"] = []string{host}
	headers["Content-Length"] = []string{strconv.Itoa(len(body))}
	p := &attest.Proof{Method: s.method, URL: s.url, Headers: headers, Body: body}
	if s.after != nil {
		s.after(p)
	}
	return p
}

// header returns the first value of the proof header named name, whatever
// the case of its key.
func header(p *attest.Proof, name string) string {
	for k, v := range p.Headers {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// signatureOf returns the Signature component of p's Authorization header.
func signatureOf(p *attest.Proof) string {
	for _, auth := range p.Headers["Authorization"] {
		if _, sig, ok := strings.Cut(auth, "Signature="); ok {
			return sig
		}
	}
	return ""
}

// signedHeadersOf returns the SignedHeaders component of an Authorization value.
func signedHeadersOf(auth string) []string {
	for _, part := range strings.Split(auth, ",") {
		if _, v, ok := strings.Cut(strings.TrimSpace(part), "SignedHeaders="); ok {
			return strings.Split(v, ";")
		}
	}
	return nil
}

// wantErr asserts that err is an *attest.Error with code and check, and that
// neither its text nor its message holds any of the secrets.
func wantErr(t *testing.T, err error, code string, check int, secrets ...string) *attest.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded; want %s (check %d)", code, check)
	}
	var e *attest.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *attest.Error", err, err)
	}
	if e.Code != code || e.Check != check {
		t.Fatalf("error %q: got code %q check %d, want %q check %d", err, e.Code, e.Check, code, check)
	}
	if got := attest.CodeOf(err); got != code {
		t.Errorf("CodeOf = %q, want %q", got, code)
	}
	if e.Message == "" {
		t.Errorf("error %q has an empty Message", err)
	}
	assertNoSecrets(t, err, secrets...)
	return e
}

// assertNoSecrets fails if err's text or message contains any non-empty
// secret.
func assertNoSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	var e *attest.Error
	msg := ""
	if errors.As(err, &e) {
		msg = e.Message
	}
	for _, s := range secrets {
		if len(s) < 8 { // too short to be a secret we planted; avoid false alarms
			continue
		}
		if strings.Contains(err.Error(), s) {
			t.Errorf("error text %q contains a secret (%.6s…)", err.Error(), s)
		}
		if strings.Contains(msg, s) {
			t.Errorf("error message %q contains a secret (%.6s…)", msg, s)
		}
	}
}

// secretsOf lists what must never appear in an error about p signed with creds.
func secretsOf(creds aws.Credentials, p *attest.Proof) []string {
	out := []string{creds.SecretAccessKey, creds.SessionToken}
	if p != nil {
		out = append(out, signatureOf(p), header(p, attest.HeaderNonce), header(p, "X-Amz-Security-Token"))
	}
	return out
}

// Package brokertest is an in-memory double of the broker's HTTP API (DESIGN §4) for the
// extension's tests.
//
// It speaks the broker's JSON and error shapes on a real loopback listener, verifies
// every identity proof with the real [attest.Verifier] against a small built-in STS that
// checks the proof's SigV4 signature — so a stale, replayed, unsigned or missing proof is
// refused exactly as the broker refuses it — and verifies the SigV4 "execute-api"
// signature of every HTTP request as API Gateway's AWS_IAM authorization would. It also
// hands out AWS sessions (POST /v1/aws-credentials) with random keys. Leases live in memory on an injectable
// clock. Switches make it fail, hang, drop connections or hold answers, and every
// request is recorded.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/attest"
)

// Fixed names of the double.
const (
	Audience  = "test-audience"
	Region    = "us-east-1"
	Account   = "123456789012"
	RoleName  = "orders-api-role"
	Session   = "orders-fn"
	Host      = "db.example.internal"
	Port      = 5432
	SSLMode   = "require"
	rolePrefx = "eph_"
)

// Call is one request the double received.
type Call struct {
	Op         string // issue, renew, revoke, assume, or the path for anything else
	LeaseID    string
	Database   string
	Role       string
	Profile    string // the AWS profile of an assume
	TTLSeconds int64
	Status     int    // the status answered
	Code       string // the error code answered, if any
	Nonce      string // the proof's nonce ("" without a proof)
	ProofDate  time.Time
	// Authorization is the HTTP request's Authorization header; SigV4Err is why its
	// execute-api signature did not verify, or nil.
	Authorization string
	SigV4Err      error
	Arrived       time.Time // real time
}

// Lease is the double's record of a lease.
type Lease struct {
	ID, Database, Role, Username, Password string
	IssuedAt, ExpiresAt, MaxExpiresAt      time.Time
	Revoked                                bool
}

// AWSSession is the double's record of an AWS session it handed out (POST
// /v1/aws-credentials). Its keys are random: nothing verifies them.
type AWSSession struct {
	LeaseID, Profile                           string
	AccessKeyID, SecretAccessKey, SessionToken string
	IssuedAt, Expiration                       time.Time
}

// AWS profile limits of the double, as the broker's defaults (and STS's minimum).
const (
	AWSDefaultTTL = 15 * time.Minute
	AWSMaxTTL     = time.Hour
	awsMinTTL     = 15 * time.Minute
)

// Broker is the double. Configure it before or while it serves; all methods are safe
// for concurrent use.
type Broker struct {
	srv      *httptest.Server
	sts      *httptest.Server
	creds    aws.Credentials
	verifier *attest.Verifier

	mu         sync.Mutex
	now        func() time.Time
	defaultTTL time.Duration
	maxTTL     time.Duration
	calls      []Call
	leases     map[string]*Lease
	sessions   []AWSSession
	profiles   map[string]bool
	nonces     map[string]bool
	seq        int
	failures   []failure
	drops      int
	down       bool
	hang       chan struct{} // non-nil: requests wait until it is closed or they end
	hold       chan struct{}
	inflight   int
	done       chan struct{} // closed at cleanup: every wait ends
}

type failure struct {
	status int
	code   string
}

// Start serves a double on 127.0.0.1 until tb's cleanup. Roles have a default TTL of
// 15 minutes and a max TTL of 1 hour unless SetTTLs says otherwise.
func Start(tb testing.TB) *Broker {
	tb.Helper()
	b := &Broker{
		creds: aws.Credentials{
			AccessKeyID: "ASIA" + strings.ToUpper(randomHex(8)), SecretAccessKey: randomHex(20),
			SessionToken: "IQoJb3JpZ2luX2Vj" + randomHex(64), Source: "brokertest",
		},
		now:        time.Now,
		defaultTTL: 15 * time.Minute,
		maxTTL:     time.Hour,
		leases:     map[string]*Lease{},
		profiles:   map[string]bool{"reports-read": true, "billing-read": true},
		nonces:     map[string]bool{},
		done:       make(chan struct{}),
	}
	b.sts = httptest.NewServer(http.HandlerFunc(b.serveSTS))
	v, err := attest.NewVerifier(attest.Config{Audience: Audience, Region: Region, Endpoint: b.sts.URL, Nonces: nonceStore{b}})
	if err != nil {
		tb.Fatal(err)
	}
	b.verifier = v
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	tb.Cleanup(func() {
		close(b.done)
		b.Unhang()
		b.srv.CloseClientConnections()
		b.srv.Close()
		b.sts.Close()
	})
	return b
}

// URL is the double's base URL.
func (b *Broker) URL() string { return b.srv.URL }

// Credentials are the execution-role credentials the double's STS knows.
func (b *Broker) Credentials() aws.Credentials { return b.creds }

// CredentialsProvider returns Credentials as an aws.CredentialsProvider.
func (b *Broker) CredentialsProvider() aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return b.Credentials(), nil })
}

// SetClock sets the clock of lease times (not of proof freshness, which is real time).
func (b *Broker) SetClock(now func() time.Time) { b.mu.Lock(); b.now = now; b.mu.Unlock() }

// SetTTLs sets every role's default_ttl and max_ttl.
func (b *Broker) SetTTLs(defaultTTL, maxTTL time.Duration) {
	b.mu.Lock()
	b.defaultTTL, b.maxTTL = defaultTTL, maxTTL
	b.mu.Unlock()
}

// FailNext answers the next n requests with status and code (a broker error document).
func (b *Broker) FailNext(n, status int, code string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range n {
		b.failures = append(b.failures, failure{status, code})
	}
}

// SetDown makes every request fail with 503 database_unavailable while down is true.
func (b *Broker) SetDown(down bool) { b.mu.Lock(); b.down = down; b.mu.Unlock() }

// DropNext closes the connection of the next n requests without answering.
func (b *Broker) DropNext(n int) { b.mu.Lock(); b.drops += n; b.mu.Unlock() }

// Hang makes requests wait, unanswered, until Unhang or until they end.
func (b *Broker) Hang() {
	b.mu.Lock()
	if b.hang == nil {
		b.hang = make(chan struct{})
	}
	b.mu.Unlock()
}

// Unhang releases hanging requests, which then fail with 503 sts_unavailable.
func (b *Broker) Unhang() {
	b.mu.Lock()
	if b.hang != nil {
		close(b.hang)
		b.hang = nil
	}
	b.mu.Unlock()
}

// Hold makes requests wait, after they are recorded as in flight, until release is
// called; then they are answered normally.
func (b *Broker) Hold() (release func()) {
	ch := make(chan struct{})
	b.mu.Lock()
	b.hold = ch
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			if b.hold == ch {
				b.hold = nil
			}
			b.mu.Unlock()
			close(ch)
		})
	}
}

// InFlight is the number of requests being served.
func (b *Broker) InFlight() int { b.mu.Lock(); defer b.mu.Unlock(); return b.inflight }

// Calls returns the recorded requests in arrival order.
func (b *Broker) Calls() []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Call(nil), b.calls...)
}

// Count is the number of recorded requests of op ("issue", "renew", "revoke").
func (b *Broker) Count(op string) int {
	n := 0
	for _, c := range b.Calls() {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Reset forgets recorded requests.
func (b *Broker) Reset() { b.mu.Lock(); b.calls = nil; b.mu.Unlock() }

// AWSSessions returns the AWS sessions handed out, in order.
func (b *Broker) AWSSessions() []AWSSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]AWSSession(nil), b.sessions...)
}

// SetAWSProfiles replaces the AWS profiles the double knows (default reports-read and
// billing-read); assuming another one is 404 not_found.
func (b *Broker) SetAWSProfiles(names ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.profiles = map[string]bool{}
	for _, n := range names {
		b.profiles[n] = true
	}
}

// Lease returns a copy of the lease with id, if any.
func (b *Broker) Lease(id string) (Lease, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.leases[id]
	if !ok {
		return Lease{}, false
	}
	return *l, true
}

// Leases returns copies of all leases.
func (b *Broker) Leases() []Lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Lease, 0, len(b.leases))
	for _, l := range b.leases {
		out = append(out, *l)
	}
	return out
}

type nonceStore struct{ b *Broker }

func (n nonceStore) UseNonce(_ context.Context, nonce string, _ time.Time) (bool, error) {
	n.b.mu.Lock()
	defer n.b.mu.Unlock()
	if n.b.nonces[nonce] {
		return false, nil
	}
	n.b.nonces[nonce] = true
	return true, nil
}

type apiErr struct {
	status        int
	code, message string
}

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	call := Call{Op: r.URL.Path, Authorization: r.Header.Get("Authorization"), Arrived: time.Now()}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	call.SigV4Err = b.verifySigV4(r, body, "execute-api")

	b.mu.Lock()
	b.inflight++
	hang, hold := b.hang, b.hold
	drop := b.drops > 0
	if drop {
		b.drops--
	}
	var fail *failure
	if b.down {
		fail = &failure{503, "database_unavailable"}
	} else if !drop && len(b.failures) > 0 {
		fail = &b.failures[0]
		b.failures = b.failures[1:]
	}
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.inflight--; b.mu.Unlock() }()

	status, answer, aerr := 0, any(nil), (*apiErr)(nil)
	defer func() {
		b.mu.Lock()
		call.Status = status
		if aerr != nil {
			call.Code = aerr.code
		}
		b.calls = append(b.calls, call)
		b.mu.Unlock()
	}()
	parseCall(&call, r.URL.Path, body)

	if drop {
		status = -1
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
			}
		}
		return
	}
	if hang != nil {
		select {
		case <-hang:
		case <-b.done:
		case <-r.Context().Done():
			status = -1
			return
		}
		aerr = &apiErr{503, "sts_unavailable", "the broker hung"}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-b.done:
		case <-r.Context().Done():
			status = -1
			return
		}
	}
	switch {
	case aerr != nil:
	case fail != nil:
		aerr = &apiErr{fail.status, fail.code, "scripted failure"}
	case call.SigV4Err != nil:
		status = http.StatusForbidden
		writeJSON(w, status, map[string]string{"message": "Forbidden"})
		return
	default:
		status, answer, aerr = b.handle(r, &call, body)
	}
	if aerr != nil {
		status = aerr.status
		writeJSON(w, status, map[string]any{"error": map[string]string{"code": aerr.code, "message": aerr.message, "request_id": "req-test"}})
		return
	}
	writeJSON(w, status, answer)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", "req-test")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type request struct {
	Identity   *attest.Proof `json:"identity"`
	Database   string        `json:"database"`
	Role       string        `json:"role"`
	Profile    string        `json:"profile"`
	TTLSeconds *int64        `json:"ttl_seconds"`
}

func parseCall(c *Call, path string, body []byte) {
	var req request
	_ = json.Unmarshal(body, &req)
	c.Database, c.Role, c.Profile = req.Database, req.Role, req.Profile
	if req.TTLSeconds != nil {
		c.TTLSeconds = *req.TTLSeconds
	}
	if req.Identity != nil {
		for k, v := range req.Identity.Headers {
			if strings.EqualFold(k, attest.HeaderNonce) && len(v) == 1 {
				c.Nonce = v[0]
			}
			if strings.EqualFold(k, "X-Amz-Date") && len(v) == 1 {
				c.ProofDate, _ = time.Parse(attest.AmzDateFormat, v[0])
			}
		}
	}
	switch {
	case path == "/v1/credentials":
		c.Op = "issue"
	case path == "/v1/aws-credentials":
		c.Op = "assume"
	case strings.HasPrefix(path, "/v1/leases/"):
		rest := strings.TrimPrefix(path, "/v1/leases/")
		if id, op, ok := strings.Cut(rest, "/"); ok {
			c.LeaseID, c.Op = id, op
		}
	}
}

func (b *Broker) handle(r *http.Request, c *Call, body []byte) (int, any, *apiErr) {
	if r.Method != http.MethodPost {
		return 0, nil, &apiErr{400, "invalid_request", "method not allowed"}
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return 0, nil, &apiErr{400, "invalid_request", "the body is not the expected JSON"}
	}
	if _, err := b.verifier.Verify(r.Context(), req.Identity); err != nil {
		code := attest.CodeOf(err)
		status := 401
		if code == attest.CodeSTSUnavailable {
			status = 503
		}
		return 0, nil, &apiErr{status, code, err.Error()}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if c.Op == "assume" {
		return b.assume(now, c, req)
	}
	ttl := b.defaultTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		if ttl > b.maxTTL {
			return 0, nil, &apiErr{400, "ttl_exceeds_max", "ttl_seconds exceeds the role's max_ttl"}
		}
	}
	switch c.Op {
	case "issue":
		if req.Database == "" || req.Role == "" {
			return 0, nil, &apiErr{404, "not_found", "database or role is not configured"}
		}
		b.seq++
		l := &Lease{
			ID: newUUID(), Database: req.Database, Role: req.Role,
			Username: fmt.Sprintf("%s%s_%04d", rolePrefx, req.Role, b.seq), Password: "pw-" + newUUID(),
			IssuedAt: now, ExpiresAt: now.Add(ttl), MaxExpiresAt: now.Add(b.maxTTL),
		}
		b.leases[l.ID] = l
		c.LeaseID = l.ID
		return http.StatusCreated, map[string]any{
			"lease_id": l.ID, "database": l.Database, "role": l.Role, "username": l.Username, "password": l.Password,
			"host": Host, "port": Port, "dbname": l.Database, "sslmode": SSLMode, "issued_at": l.IssuedAt,
			"expires_at": l.ExpiresAt, "max_expires_at": l.MaxExpiresAt, "renewable": l.ExpiresAt.Before(l.MaxExpiresAt),
		}, nil
	case "renew", "revoke":
		l, ok := b.leases[c.LeaseID]
		if !ok {
			return 0, nil, &apiErr{404, "not_found", "no such lease"}
		}
		if c.Op == "revoke" {
			l.Revoked = true
			return http.StatusOK, map[string]any{"lease_id": l.ID, "revoked_at": now}, nil
		}
		switch {
		case l.Revoked:
			return 0, nil, &apiErr{409, "lease_revoked", "the lease was revoked"}
		case !now.Before(l.ExpiresAt):
			return 0, nil, &apiErr{409, "lease_expired", "the lease has expired"}
		}
		l.ExpiresAt = now.Add(ttl)
		if l.ExpiresAt.After(l.MaxExpiresAt) {
			l.ExpiresAt = l.MaxExpiresAt
		}
		return http.StatusOK, map[string]any{"lease_id": l.ID, "expires_at": l.ExpiresAt, "max_expires_at": l.MaxExpiresAt}, nil
	}
	return 0, nil, &apiErr{404, "not_found", "no such endpoint"}
}

// assume hands out an AWS session like the broker's POST /v1/aws-credentials. b.mu is held.
func (b *Broker) assume(now time.Time, c *Call, req request) (int, any, *apiErr) {
	if !b.profiles[req.Profile] {
		return 0, nil, &apiErr{404, "not_found", "AWS profile is not configured"}
	}
	ttl := AWSDefaultTTL
	if req.TTLSeconds != nil {
		ttl = time.Duration(*req.TTLSeconds) * time.Second
		switch {
		case ttl > AWSMaxTTL:
			return 0, nil, &apiErr{400, "ttl_exceeds_max", "ttl_seconds exceeds the profile's max_ttl"}
		case ttl < awsMinTTL:
			return 0, nil, &apiErr{400, "invalid_request", "ttl_seconds must be at least 900 (the STS minimum)"}
		}
	}
	s := AWSSession{
		LeaseID: newUUID(), Profile: req.Profile, AccessKeyID: "ASIA" + strings.ToUpper(randomHex(8)),
		SecretAccessKey: randomHex(20), SessionToken: "FwoGZXIvYXdzE" + randomHex(48),
		IssuedAt: now, Expiration: now.Add(ttl).UTC().Truncate(time.Second),
	}
	b.sessions = append(b.sessions, s)
	c.LeaseID = s.LeaseID
	return http.StatusCreated, map[string]any{
		"lease_id": s.LeaseID, "access_key_id": s.AccessKeyID, "secret_access_key": s.SecretAccessKey,
		"session_token": s.SessionToken, "expiration": s.Expiration,
	}, nil
}

// serveSTS answers the verifier's forwarded proofs like STS: GetCallerIdentity for a
// request signed (service sts) with the double's key, an XML error otherwise.
func (b *Broker) serveSTS(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	w.Header().Set("Content-Type", "text/xml")
	if err := b.verifySigV4(r, body, "sts"); err != nil || string(body) != attest.RequestBody {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error></ErrorResponse>`)
		return
	}
	_, _ = fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<GetCallerIdentityResult><Arn>arn:aws:sts::%s:assumed-role/%s/%s</Arn><UserId>AROAEXAMPLE:%s</UserId><Account>%s</Account></GetCallerIdentityResult>
<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></GetCallerIdentityResponse>`, Account, RoleName, Session, Session, Account, newUUID())
}

// verifySigV4 checks the request's signature for service the way AWS would: recompute
// it over the headers named in SignedHeaders and compare.
func (b *Broker) verifySigV4(r *http.Request, body []byte, service string) error {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return errors.New("no AWS4-HMAC-SHA256 Authorization header")
	}
	var scope, signed string
	for _, part := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			scope = v
		case "SignedHeaders":
			signed = v
		}
	}
	fields := strings.Split(scope, "/")
	if len(fields) != 5 || fields[0] != b.creds.AccessKeyID || fields[3] != service || fields[4] != "aws4_request" {
		return fmt.Errorf("credential scope %q is not this key's %s scope", strings.Join(fields[min(1, len(fields)):], "/"), service)
	}
	at, err := time.Parse(attest.AmzDateFormat, r.Header.Get("X-Amz-Date"))
	if err != nil {
		return errors.New("bad X-Amz-Date")
	}
	clone, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	for _, h := range strings.Split(signed, ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		clone.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
	}
	clone.Header.Del("X-Amz-Date")
	sum := sha256.Sum256(body)
	creds := b.Credentials()
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, clone, hex.EncodeToString(sum[:]), service, fields[2], at); err != nil {
		return err
	}
	if clone.Header.Get("Authorization") != auth {
		return errors.New("signature does not match")
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

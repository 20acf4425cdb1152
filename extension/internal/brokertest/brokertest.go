// Package brokertest is an in-memory double of the broker's HTTP API for the extension's
// tests.
//
// It speaks the broker's wire contract — its requests, answers and error documents are
// the types of package broker/api, decoded strictly with api.Unmarshal — on a real
// loopback listener. Every identity proof is verified with the real [attest.Verifier]
// against the SigV4-verifying STS emulator (sam/local/stsserver), so a stale, replayed,
// unsigned or missing proof is refused exactly as the broker refuses it. Like API
// Gateway's AWS_IAM authorization, it also verifies the SigV4 "execute-api" signature of
// every HTTP request (SetGatewayAuth turns that off).
//
// Its "configuration": the databases of SetDatabases (default "orders"), any role name
// in them, the AWS profiles of SetAWSProfiles (default reports-read and billing-read),
// and a policy that permits every IAM role except those of DenyRoles. Leases live in
// memory on an injectable clock. Switches make it fail, hang, drop connections or hold
// answers, and every request is recorded.
//
// The broker API's contract suite (broker/api/apitest) runs against it, so the double
// cannot drift from the contract the real broker is held to.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Fixed names of the double.
const (
	Audience = "test-audience"
	Region   = "us-east-1"
	Account  = "123456789012"
	// RoleName and Session name the execution role whose credentials Credentials returns.
	RoleName = "orders-api-role"
	Session  = "orders-fn"
	Host     = "db.example.internal"
	Port     = 5432
	SSLMode  = "require"
	// RequestID is the X-Request-Id (and request_id) of every answer.
	RequestID = "req-test"
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
	Status     int    // the status answered (-1: none, the connection was dropped or ended)
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
	RevokedAt                              time.Time
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
	sts      *stsserver.Server
	creds    aws.Credentials
	verifier *attest.Verifier

	mu          sync.Mutex
	now         func() time.Time
	defaultTTL  time.Duration
	maxTTL      time.Duration
	gatewayAuth bool
	calls       []Call
	leases      map[string]*Lease
	sessions    []AWSSession
	databases   map[string]bool
	profiles    map[string]bool
	denied      map[string]bool
	nonces      map[string]bool
	seq         int
	failures    []failure
	drops       int
	down        bool
	hang        chan struct{} // non-nil: requests wait until it is closed or they end
	hold        chan struct{}
	inflight    int
	done        chan struct{} // closed at cleanup: every wait ends
}

type failure struct {
	status int
	code   string
}

// Start serves a double on 127.0.0.1 until tb's cleanup, with its own STS emulator that
// knows the execution role RoleName (session Session) whose credentials Credentials
// returns. Roles have a default TTL of 15 minutes and a max TTL of 1 hour unless SetTTLs
// says otherwise.
func Start(tb testing.TB) *Broker {
	tb.Helper()
	id := stsserver.NewIdentity(Account, RoleName, Session)
	b := &Broker{
		sts:         stsserver.StartTB(tb, id),
		creds:       aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken, Source: "brokertest"},
		now:         time.Now,
		defaultTTL:  15 * time.Minute,
		maxTTL:      time.Hour,
		gatewayAuth: true,
		leases:      map[string]*Lease{},
		databases:   map[string]bool{"orders": true},
		profiles:    map[string]bool{"reports-read": true, "billing-read": true},
		denied:      map[string]bool{},
		nonces:      map[string]bool{},
		done:        make(chan struct{}),
	}
	v, err := attest.NewVerifier(attest.Config{Audience: Audience, Region: Region, Endpoint: b.sts.URL(), Nonces: nonceStore{b}})
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
	})
	return b
}

// URL is the double's base URL.
func (b *Broker) URL() string { return b.srv.URL }

// STS is the double's STS emulator; add identities to it to sign proofs as other roles.
func (b *Broker) STS() *stsserver.Server { return b.sts }

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

// SetGatewayAuth turns the check of the execute-api SigV4 signature on (the default) or
// off (for callers that sign only their proofs, as the contract suite does).
func (b *Broker) SetGatewayAuth(on bool) { b.mu.Lock(); b.gatewayAuth = on; b.mu.Unlock() }

// SetDatabases replaces the databases the double knows (default "orders"); every role
// name in them is known. Another database is 404 not_found.
func (b *Broker) SetDatabases(names ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.databases = map[string]bool{}
	for _, n := range names {
		b.databases[n] = true
	}
}

// DenyRoles makes the policy deny every request of the named IAM roles (403
// access_denied). Every other role is permitted.
func (b *Broker) DenyRoles(roles ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range roles {
		b.denied[r] = true
	}
}

// FailNext answers the next n requests with status and code (a broker error document;
// a 503 or 429 carries Retry-After).
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

// Count is the number of recorded requests of op ("issue", "renew", "revoke", "assume").
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

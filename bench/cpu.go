package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/broker/policy/policytest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

type benchOut struct {
	NsPerOp     float64
	AllocsPerOp int64
	BytesPerOp  int64
	N           int
}

func fromResult(r testing.BenchmarkResult) benchOut {
	return benchOut{NsPerOp: float64(r.T.Nanoseconds()) / float64(max(r.N, 1)), AllocsPerOp: r.AllocsPerOp(), BytesPerOp: r.AllocedBytesPerOp(), N: r.N}
}

// benchDecide is BenchmarkDecide for n policies.
func benchDecide(n int, scoped bool) (benchOut, error) {
	s, err := policy.Parse(policytest.Fleet(n, scoped))
	if err != nil {
		return benchOut{}, err
	}
	arn := "arn:aws:iam::123456789012:role/svc-0-api"
	req := policy.Request{
		Principal:  policy.Principal{ARN: arn, Account: "123456789012", Role: "svc-0-api", Session: "fn-svc-0-api", UserID: "AROAEXAMPLE:fn"},
		Action:     policy.ActionIssue,
		Database:   "db0",
		DBRole:     "readonly",
		TTLSeconds: 900,
		Now:        time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC),
		SourceIP:   netip.MustParseAddr("10.1.2.3"),
		Stage:      "prod",
	}
	if d := s.Decide(req); !d.Allowed {
		return benchOut{}, fmt.Errorf("benchmark request denied: %+v", d)
	}
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			s.Decide(req)
		}
	})
	return fromResult(r), nil
}

// benchSCRAM is the broker's per-issue verifier computation.
func benchSCRAM(iterations int) benchOut {
	return fromResult(testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := pgrole.SCRAMVerifier("0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", iterations); err != nil {
				b.Fatal(err)
			}
		}
	}))
}

// memNonces is an in-memory NonceStore.
type memNonces struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (s *memNonces) UseNonce(_ context.Context, nonce string, expires time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[nonce]; ok {
		return false, nil
	}
	s.m[nonce] = expires
	return true, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

const cannedCallerIdentity = `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn</Arn>
    <UserId>AROAEXAMPLEEXAMPLE01:orders-fn</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>
`

// cannedSTS answers every request in process, without a network.
var cannedSTS = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/xml"}},
		Body: io.NopCloser(strings.NewReader(cannedCallerIdentity)), ContentLength: int64(len(cannedCallerIdentity)), Request: r}, nil
})}

type verifyOut struct {
	VerifyNs, VerifyAllocs, SignNs, LocalSTSNs float64
	N, NLocal                                  int
}

// benchVerify times Verify on fresh proofs (each nonce is used once, so
// proofs are signed beforehand, outside the timing), against an in-process
// STS answer and an in-memory nonce store; then against the local STS
// emulator over loopback (which checks the SigV4 signature itself).
func benchVerify(ctx context.Context, sts *stsserver.Server, creds aws.Credentials, budget time.Duration) (verifyOut, error) {
	var out verifyOut
	v, err := attest.NewVerifier(attest.Config{Audience: audience, Region: region, Nonces: &memNonces{m: map[string]time.Time{}}, HTTPClient: cannedSTS})
	if err != nil {
		return out, err
	}
	sign := func(n int) ([]*attest.Proof, time.Duration, error) {
		ps := make([]*attest.Proof, n)
		t0 := time.Now()
		for i := range ps {
			p, err := attest.Sign(ctx, creds, region, audience, time.Now())
			if err != nil {
				return nil, 0, err
			}
			ps[i] = p
		}
		return ps, time.Since(t0), nil
	}
	run := func(v *attest.Verifier, ps []*attest.Proof) (time.Duration, uint64, error) {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		t0 := time.Now()
		for _, p := range ps {
			if _, err := v.Verify(ctx, p); err != nil {
				return 0, 0, err
			}
		}
		d := time.Since(t0)
		runtime.ReadMemStats(&m1)
		return d, m1.Mallocs - m0.Mallocs, nil
	}
	// Warm up, then size the run to the budget.
	ps, _, err := sign(200)
	if err != nil {
		return out, err
	}
	d, _, err := run(v, ps)
	if err != nil {
		return out, err
	}
	n := int(min(max(budget.Seconds()/(d.Seconds()/200), 500), 20000))
	ps, signTime, err := sign(n)
	if err != nil {
		return out, err
	}
	d, allocs, err := run(v, ps)
	if err != nil {
		return out, err
	}
	out.N, out.VerifyNs, out.VerifyAllocs = n, float64(d.Nanoseconds())/float64(n), float64(allocs)/float64(n)
	out.SignNs = float64(signTime.Nanoseconds()) / float64(n)

	// With the local STS emulator over loopback.
	lv, err := attest.NewVerifier(attest.Config{Audience: audience, Region: region, Endpoint: sts.URL(),
		Nonces: &memNonces{m: map[string]time.Time{}}})
	if err != nil {
		return out, err
	}
	if ps, _, err = sign(50); err != nil {
		return out, err
	}
	if _, _, err = run(lv, ps); err != nil {
		return out, err
	}
	out.NLocal = 500
	if ps, _, err = sign(out.NLocal); err != nil {
		return out, err
	}
	if d, _, err = run(lv, ps); err != nil {
		return out, err
	}
	out.LocalSTSNs = float64(d.Nanoseconds()) / float64(out.NLocal)
	return out, nil
}

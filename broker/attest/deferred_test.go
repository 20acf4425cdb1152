package attest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/attest"
)

// TestVerifyDeferred: the principal is vouched for by STS, the nonce store
// is only read, and the pending nonce carries the proof's nonce and how long
// it must be kept.
func TestVerifyDeferred(t *testing.T) {
	e := newEnv(t)
	p := signSpec(t, spec{creds: e.creds()})
	pr, pn, err := e.v.VerifyDeferred(context.Background(), p)
	if err != nil {
		t.Fatalf("VerifyDeferred: %v", err)
	}
	if pr.RoleARN != "arn:aws:iam::"+testAccount+":role/"+testRole {
		t.Errorf("principal %+v", pr)
	}
	if e.nonces.callCount() != 0 || e.nonces.readCount() != 1 {
		t.Fatalf("nonce store: %d records, %d reads; want 0 and 1", e.nonces.callCount(), e.nonces.readCount())
	}
	nonce, expires := pn.Value()
	if nonce != header(p, attest.HeaderNonce) {
		t.Errorf("pending nonce %q is not the proof's", nonce)
	}
	if d := time.Until(expires); d < attest.DefaultMaxAge-time.Minute || d > attest.DefaultMaxAge+time.Minute {
		t.Errorf("nonce kept for %s, want about %s", d, attest.DefaultMaxAge)
	}
	if pn.Spent() {
		t.Fatal("a pending nonce reports spent before anyone recorded it")
	}
	// The same proof is still acceptable until the nonce is recorded...
	if _, _, err := e.v.VerifyDeferred(context.Background(), p); err != nil {
		t.Fatalf("second VerifyDeferred before the nonce was recorded: %v", err)
	}
	// ...and not after.
	if err := e.v.Spend(context.Background(), pn); err != nil {
		t.Fatalf("Spend: %v", err)
	}
	if !pn.Spent() || e.nonces.callCount() != 1 {
		t.Fatalf("after Spend: spent %v, %d records", pn.Spent(), e.nonces.callCount())
	}
	if err := e.v.Spend(context.Background(), pn); err != nil || e.nonces.callCount() != 1 {
		t.Fatalf("a second Spend of the same pending nonce: %v, %d records; want nil and 1", err, e.nonces.callCount())
	}
	sts := e.sts.RequestCount()
	_, _, err = e.v.VerifyDeferred(context.Background(), p)
	wantErr(t, err, attest.CodeReplayedProof, 8, secretsOf(e.creds(), p)...)
	if e.sts.RequestCount() != sts {
		t.Error("a replay refused at check 8 reached STS")
	}
	if _, err := e.v.Verify(context.Background(), p); attest.CodeOf(err) != attest.CodeReplayedProof {
		t.Errorf("Verify of a proof spent through VerifyDeferred: %v", err)
	}
}

// TestVerifyDeferredSpendRace: the same proof verified by many callers at
// once; each spends its pending nonce; exactly one wins.
func TestVerifyDeferredSpendRace(t *testing.T) {
	e := newEnv(t)
	p := signSpec(t, spec{creds: e.creds()})
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, pn, err := e.v.VerifyDeferred(context.Background(), p)
			if err == nil {
				err = e.v.Spend(context.Background(), pn)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case attest.CodeOf(err) != attest.CodeReplayedProof:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d presentations spent the nonce, want exactly 1", ok, n)
	}
}

// TestVerifyDeferredStoreFailure: a nonce store that cannot answer ends
// verification before STS, wrapping the store's error.
func TestVerifyDeferredStoreFailure(t *testing.T) {
	e := newEnv(t)
	storeErr := errors.New("nonce table unreachable")
	e.nonces.err = storeErr
	p := signSpec(t, spec{creds: e.creds()})
	_, _, err := e.v.VerifyDeferred(context.Background(), p)
	wantErr(t, err, attest.CodeInternal, 8, secretsOf(e.creds(), p)...)
	if !errors.Is(err, storeErr) || e.sts.RequestCount() != 0 {
		t.Fatalf("error %v (wraps the store's: %v), STS requests %d", err, errors.Is(err, storeErr), e.sts.RequestCount())
	}
}

// writeOnly records nonces but cannot read them.
type writeOnly struct{ m *memNonces }

func (w writeOnly) UseNonce(ctx context.Context, n string, exp time.Time) (bool, error) {
	return w.m.UseNonce(ctx, n, exp)
}

// TestVerifyDeferredNeedsANonceReader: with a store that can only record,
// VerifyDeferred refuses rather than skipping check 8.
func TestVerifyDeferredNeedsANonceReader(t *testing.T) {
	e := newEnv(t, func(c *attest.Config) { c.Nonces = writeOnly{newMemNonces()} })
	_, _, err := e.v.VerifyDeferred(context.Background(), signSpec(t, spec{creds: e.creds()}))
	if attest.CodeOf(err) != attest.CodeInternal || e.sts.RequestCount() != 0 {
		t.Fatalf("VerifyDeferred with a write-only store: %v, STS requests %d", err, e.sts.RequestCount())
	}
}

// TestPendingNonceHidesTheNonce: however a pending nonce is formatted, the
// nonce does not appear.
func TestPendingNonceHidesTheNonce(t *testing.T) {
	e := newEnv(t)
	p := signSpec(t, spec{creds: e.creds()})
	_, pn, err := e.v.VerifyDeferred(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := pn.Value()
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, v := range []any{pn, *pn, []any{pn}, struct{ P *attest.PendingNonce }{pn}} {
			if out := fmt.Sprintf(f, v); strings.Contains(out, nonce) || strings.Contains(out, fmt.Sprintf("%x", nonce)) {
				t.Errorf("%s of %T prints the nonce: %s", f, v, out)
			}
		}
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("pending", "nonce", pn, "value", *pn)
	if strings.Contains(logged.String(), nonce) {
		t.Errorf("slog prints the nonce: %s", logged.String())
	}
}

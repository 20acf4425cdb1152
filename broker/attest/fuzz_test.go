package attest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// fuzzTime is the verifier's clock in the fuzz targets; seeds are signed at
// this time so that well-formed ones pass checks 1 to 8.
var fuzzTime = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// countingSTS stands in for STS without a network: it counts calls and
// answers 403, so no fuzzed proof is ever accepted.
type countingSTS struct{ calls atomic.Int64 }

func (c *countingSTS) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	body := `<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>`
	return &http.Response{
		StatusCode: http.StatusForbidden,
		Header:     http.Header{"Content-Type": {"text/xml"}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    r,
	}, nil
}

// freshNonces accepts every nonce; it keeps no state between fuzz inputs.
type freshNonces struct{}

func (freshNonces) UseNonce(context.Context, string, time.Time) (bool, error) { return true, nil }

func fuzzVerifier(tb testing.TB) (*Verifier, *countingSTS) {
	tb.Helper()
	sts := &countingSTS{}
	v, err := NewVerifier(Config{
		Audience:   "prod-orders",
		Region:     "us-east-1",
		Endpoint:   "http://sts.fuzz.invalid",
		Nonces:     freshNonces{},
		HTTPClient: &http.Client{Transport: sts},
		Now:        func() time.Time { return fuzzTime },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return v, sts
}

func fuzzSeedProof(tb testing.TB) *Proof {
	tb.Helper()
	creds := aws.Credentials{
		AccessKeyID:     "ASIAFUZZEXAMPLE00000",
		SecretAccessKey: "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz",
		SessionToken:    "IQoJb3JpZ2luX2VjFUZZTOKEN",
	}
	p, err := Sign(context.Background(), creds, "us-east-1", "prod-orders", fuzzTime)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func FuzzProofJSON(f *testing.F) {
	p := fuzzSeedProof(f)
	valid, err := json.Marshal(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"method":"POST","url":"https://sts.us-east-1.amazonaws.com/","headers":{"Host":null},"body":""}`))
	f.Add([]byte(`{"method":"POST","url":"https://sts.us-east-1.amazonaws.com/#","headers":{},"body":"QWN0aW9uPUdldENhbGxlcklkZW50aXR5JlZlcnNpb249MjAxMS0wNi0xNQ=="}`))
	for _, mutate := range []func(*Proof){
		func(p *Proof) { p.URL = "https://sts.amazonaws.com:443/" },
		func(p *Proof) { p.Headers["host"] = p.Headers["Host"] },
		func(p *Proof) { p.Headers["Authorization"] = append(p.Headers["Authorization"], "x") },
		func(p *Proof) { p.Headers["X-Amz-Date"] = []string{"20261122T075000Z"} },
		func(p *Proof) { p.Headers["Content-Length"] = []string{"-1"} },
		func(p *Proof) { p.Headers["X-Ephemera-Nonce"] = []string{strings.Repeat("A", 32)} },
		func(p *Proof) {
			p.Headers["Authorization"] = []string{strings.Replace(p.Headers["Authorization"][0], "/sts/", "/s3/", 1)}
		},
	} {
		q := fuzzSeedProof(f)
		mutate(q)
		b, err := json.Marshal(q)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	f.Add([]byte(`{"method":"POST","method":"GET"}`))
	f.Add([]byte(`{"method":"POST","headers":{"Host":["a"],"host":["b"]}}`))
	f.Add([]byte("{\"method\":\"P\xffOST\"}"))

	v, sts := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		pp, perr := ParseProof(data)
		if perr != nil {
			var e *Error
			if pp != nil || !errors.As(perr, &e) || e.Code != CodeInvalidProof || e.Check != 0 || e.Message == "" {
				t.Fatalf("ParseProof = %v, %v; want an invalid_proof *Error", pp, perr)
			}
			return
		}
		// What the strict reader accepts, the lenient one reads the same.
		var lenient Proof
		if err := json.Unmarshal(data, &lenient); err != nil || !reflect.DeepEqual(&lenient, pp) {
			t.Fatalf("ParseProof read %+v, encoding/json %+v (%v)", *pp, lenient, err)
		}
		p := *pp
		_, shapeErr := v.checkShape(&p)
		before := sts.calls.Load()
		principal, err := v.Verify(context.Background(), &p)
		called := sts.calls.Load() - before
		if err == nil {
			t.Fatalf("Verify accepted a proof the stand-in STS refuses: %+v", principal)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v (%T) is not an *Error", err, err)
		}
		switch e.Code {
		case CodeInvalidProof, CodeStaleProof, CodeReplayedProof, CodeIdentityRejected, CodeSTSUnavailable, CodeInternal:
		default:
			t.Fatalf("unknown code %q", e.Code)
		}
		if e.Check < 1 || e.Check > 10 || e.Message == "" {
			t.Fatalf("error %q: check %d, message %q", err, e.Check, e.Message)
		}
		if shapeErr != nil {
			if called != 0 {
				t.Fatalf("checkShape failed (%v) but STS was called", shapeErr)
			}
			var se *Error
			if !errors.As(shapeErr, &se) || se.Code != e.Code || se.Check != e.Check {
				t.Fatalf("Verify reported %v, checkShape %v", err, shapeErr)
			}
			if e.Code != CodeInvalidProof || e.Check > 6 {
				t.Fatalf("shape error %v outside checks 1 to 6", err)
			}
		}
		if called > 0 && e.Check < 9 {
			t.Fatalf("STS was called but the error is from check %d: %v", e.Check, err)
		}
		if called == 0 && e.Check >= 9 {
			t.Fatalf("check %d failed without calling STS: %v", e.Check, err)
		}
		// Secrets the input carried must not be echoed, except where the
		// caller put them in a field the message quotes (header names, host).
		var echoed strings.Builder
		echoed.WriteString(p.URL)
		for k := range p.Headers {
			echoed.WriteString(k)
		}
		for _, s := range []string{headerValue(p.Headers, "X-Ephemera-Nonce"), headerValue(p.Headers, "X-Amz-Security-Token"), sigOf(headerValue(p.Headers, "Authorization"))} {
			if len(s) >= 16 && !strings.Contains(echoed.String(), s) && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q echoes a secret of the proof", err)
			}
		}
	})
}

func headerValue(h map[string][]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func sigOf(auth string) string {
	_, s, _ := strings.Cut(auth, "Signature=")
	return s
}

func FuzzAuthorization(f *testing.F) {
	valid := headerValue(fuzzSeedProof(f).Headers, "Authorization")
	f.Add(valid, true)
	f.Add(valid, false)
	f.Add("", false)
	f.Add("AWS4-HMAC-SHA256 ", false)
	f.Add("AWS4-HMAC-SHA256 Credential=,SignedHeaders=,Signature=", true)
	f.Add("AWS4-HMAC-SHA256 Credential=A/B/C/sts/aws4_request, SignedHeaders=host;x-amz-date;x-ephemera-audience;x-ephemera-nonce, Signature="+strings.Repeat("a", 64), false)
	f.Add("AWS4-HMAC-SHA256 SignedHeaders=, SignedHeaders=host, Credential=A/B/C/sts/aws4_request, Signature="+strings.Repeat("0", 64), false)
	f.Add("AWS4-HMAC-SHA256 Credential=A/B/C/sts/aws4_request/extra,Signature=x", false)
	f.Fuzz(func(t *testing.T, auth string, hasToken bool) {
		err := checkAuthorization(auth, hasToken)
		if err == nil {
			if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
				t.Fatalf("accepted %q without the algorithm", auth)
			}
			for _, need := range []string{"Credential=", "SignedHeaders=", "Signature=", "/sts/aws4_request", "host", "x-amz-date", "x-ephemera-audience", "x-ephemera-nonce"} {
				if !strings.Contains(auth, need) {
					t.Fatalf("accepted %q without %q", auth, need)
				}
			}
			if hasToken && !strings.Contains(auth, "x-amz-security-token") {
				t.Fatalf("accepted %q with a token that is not signed", auth)
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidProof || e.Check != 6 {
			t.Fatalf("checkAuthorization(%q) = %v; want invalid_proof check 6", auth, err)
		}
		if sig := sigOf(auth); len(sig) >= 16 && strings.Contains(err.Error(), sig) {
			t.Fatalf("error %q echoes the signature", err)
		}
	})
}

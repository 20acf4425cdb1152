package attest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

func TestVerifyEndToEnd(t *testing.T) {
	e := newEnv(t)
	p, err := attest.Sign(context.Background(), e.creds(), testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	got, err := e.v.Verify(context.Background(), p)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := attest.Principal{
		ARN:     "arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn",
		Account: testAccount,
		Role:    testRole,
		RoleARN: "arn:aws:iam::123456789012:role/orders-api-role",
		Session: testSession,
		UserID:  e.id.UserID,
	}
	if *got != want {
		t.Errorf("principal:\n got %+v\nwant %+v", *got, want)
	}
	if !strings.HasSuffix(got.UserID, ":"+testSession) {
		t.Errorf("UserID %q does not end in the session", got.UserID)
	}

	// The request went to the configured endpoint with the signed Host
	// header, unchanged.
	reqs := e.sts.Requests()
	if len(reqs) != 1 {
		t.Fatalf("STS saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != "POST" || r.Host != testHost || r.Path != "/" || r.RawQuery != "" || string(r.Body) != attest.RequestBody {
		t.Errorf("forwarded request: %s host=%q path=%q query=%q body=%q", r.Method, r.Host, r.Path, r.RawQuery, r.Body)
	}
	for _, name := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "Content-Type", attest.HeaderAudience, attest.HeaderNonce} {
		if got, want := r.Header.Get(name), header(p, name); got != want {
			t.Errorf("forwarded %s = %q, want %q", name, got, want)
		}
	}

	// The nonce is recorded until the freshness window has closed.
	amz, err := time.Parse(attest.AmzDateFormat, header(p, "X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.nonces.expires) != 1 || e.nonces.expires[0].Before(amz.Add(e.v.MaxAge())) {
		t.Errorf("nonce recorded until %v, want at least %v", e.nonces.expires, amz.Add(e.v.MaxAge()))
	}
	if e.v.MaxAge() != attest.DefaultMaxAge {
		t.Errorf("MaxAge = %v, want the default %v", e.v.MaxAge(), attest.DefaultMaxAge)
	}
}

func TestVerifyGlobalHostAndPartition(t *testing.T) {
	e := newEnv(t)
	// sts.amazonaws.com is allowlisted by default.
	p := signSpec(t, spec{creds: e.creds(), url: "https://sts.amazonaws.com/"})
	if _, err := e.v.Verify(context.Background(), p); err != nil {
		t.Fatalf("Verify with the global host: %v", err)
	}
	if got := e.sts.Requests()[0].Host; got != "sts.amazonaws.com" {
		t.Errorf("forwarded Host = %q, want sts.amazonaws.com", got)
	}

	// Another partition keeps its name in the canonical role ARN.
	cn := stsserver.NewIdentity("210987654321", "r", "fn")
	cn.ARN = "arn:aws-cn:sts::210987654321:assumed-role/r/fn"
	e.sts.Add(cn)
	got, err := e.v.Verify(context.Background(), signSpec(t, spec{creds: credsOf(cn)}))
	if err != nil {
		t.Fatalf("Verify aws-cn: %v", err)
	}
	if got.RoleARN != "arn:aws-cn:iam::210987654321:role/r" || got.Role != "r" || got.Session != "fn" || got.Account != "210987654321" {
		t.Errorf("aws-cn principal = %+v", *got)
	}
}

func TestVerifyCustomAllowedHosts(t *testing.T) {
	e := newEnv(t, func(c *attest.Config) {
		c.Region = ""
		c.AllowedHosts = []string{" STS.EU-WEST-1.amazonaws.com "}
	})
	ok := signSpec(t, spec{creds: e.creds(), url: "https://sts.eu-west-1.amazonaws.com/", region: "eu-west-1"})
	if _, err := e.v.Verify(context.Background(), ok); err != nil {
		t.Fatalf("Verify on a configured host: %v", err)
	}
	p := signSpec(t, spec{creds: e.creds()}) // sts.us-east-1: not configured any more
	_, err := e.v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeInvalidProof, 2, secretsOf(e.creds(), p)...)
	p = signSpec(t, spec{creds: e.creds(), url: "https://sts.amazonaws.com/"})
	_, err = e.v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeInvalidProof, 2, secretsOf(e.creds(), p)...)
}

// TestVerifyChecks breaks one check (as numbered in the package
// documentation) at a time. Checks 1 to 8 must
// fail without any call to STS.
func TestVerifyChecks(t *testing.T) {
	set := func(name string, vals ...string) func(*attest.Proof) {
		return func(p *attest.Proof) { p.Headers[name] = vals }
	}
	del := func(name string) func(*attest.Proof) {
		return func(p *attest.Proof) { delete(p.Headers, name) }
	}
	for _, tc := range []struct {
		name  string
		spec  spec
		code  string
		check int
	}{
		// 1. method and URL
		{"GET", spec{method: http.MethodGet}, attest.CodeInvalidProof, 1},
		{"lowercase post", spec{after: func(p *attest.Proof) { p.Method = "post" }}, attest.CodeInvalidProof, 1},
		{"query string", spec{url: "https://" + testHost + "/?Action=GetCallerIdentity"}, attest.CodeInvalidProof, 1},
		{"empty query", spec{url: "https://" + testHost + "/?"}, attest.CodeInvalidProof, 1},
		{"fragment", spec{url: "https://" + testHost + "/#frag"}, attest.CodeInvalidProof, 1},
		{"user info", spec{url: "https://user:pw@" + testHost + "/"}, attest.CodeInvalidProof, 1},
		{"path other than /", spec{url: "https://" + testHost + "/other"}, attest.CodeInvalidProof, 1},
		{"empty path", spec{url: "https://" + testHost}, attest.CodeInvalidProof, 1},
		{"escaped path", spec{after: func(p *attest.Proof) { p.URL = "https://" + testHost + "/%2F" }}, attest.CodeInvalidProof, 1},
		{"http scheme", spec{url: "http://" + testHost + "/"}, attest.CodeInvalidProof, 1},
		{"unparsable url", spec{after: func(p *attest.Proof) { p.URL = "https://\x7f/" }}, attest.CodeInvalidProof, 1},
		{"opaque url", spec{after: func(p *attest.Proof) { p.URL = "https:" + testHost }}, attest.CodeInvalidProof, 1},
		// 2. host allowlist
		{"foreign host", spec{url: "https://sts.evil.example/"}, attest.CodeInvalidProof, 2},
		{"other region", spec{url: "https://sts.eu-west-1.amazonaws.com/", region: "eu-west-1"}, attest.CodeInvalidProof, 2},
		{"host with port", spec{url: "https://" + testHost + ":443/"}, attest.CodeInvalidProof, 2},
		{"host with other port", spec{url: "https://" + testHost + ":8443/"}, attest.CodeInvalidProof, 2},
		{"host with trailing dot", spec{url: "https://" + testHost + "./"}, attest.CodeInvalidProof, 2},
		{"loopback host", spec{url: "https://127.0.0.1/"}, attest.CodeInvalidProof, 2},
		// 3. body
		{"extra body parameter", spec{body: attest.RequestBody + "&Foo=bar"}, attest.CodeInvalidProof, 3},
		{"other action", spec{body: "Action=AssumeRole&Version=2011-06-15"}, attest.CodeInvalidProof, 3},
		{"reordered body", spec{body: "Version=2011-06-15&Action=GetCallerIdentity"}, attest.CodeInvalidProof, 3},
		{"empty body", spec{after: func(p *attest.Proof) { p.Body = nil; p.Headers["Content-Length"] = []string{"0"} }}, attest.CodeInvalidProof, 3},
		// 4. headers
		{"extra header Accept", spec{before: func(r *http.Request) { r.Header.Set("Accept", "*/*") }}, attest.CodeInvalidProof, 4},
		{"extra header X-Amz-Target", spec{after: set("X-Amz-Target", "x")}, attest.CodeInvalidProof, 4},
		{"two values of one header", spec{after: set(attest.HeaderAudience, testAudience, testAudience)}, attest.CodeInvalidProof, 4},
		{"no value", spec{after: set("Content-Type")}, attest.CodeInvalidProof, 4},
		{"host and Host", spec{after: set("host", testHost)}, attest.CodeInvalidProof, 4},
		{"x-amz-date twice by case", spec{after: func(p *attest.Proof) { p.Headers["x-amz-date"] = p.Headers["X-Amz-Date"] }}, attest.CodeInvalidProof, 4},
		{"two Authorization values", spec{after: func(p *attest.Proof) {
			a := p.Headers["Authorization"][0]
			p.Headers["Authorization"] = []string{a, a}
		}}, attest.CodeInvalidProof, 4},
		{"Content-Length mismatch", spec{after: set("Content-Length", "44")}, attest.CodeInvalidProof, 4},
		{"Content-Length not a number", spec{after: set("Content-Length", "forty-three")}, attest.CodeInvalidProof, 4},
		{"Content-Length empty", spec{after: set("Content-Length", "")}, attest.CodeInvalidProof, 4},
		{"missing Authorization", spec{after: del("Authorization")}, attest.CodeInvalidProof, 4},
		{"missing Host", spec{after: del("Host")}, attest.CodeInvalidProof, 4},
		{"missing X-Amz-Date", spec{after: del("X-Amz-Date")}, attest.CodeInvalidProof, 4},
		{"missing Content-Type", spec{after: del("Content-Type")}, attest.CodeInvalidProof, 4},
		{"missing audience", spec{after: del(attest.HeaderAudience)}, attest.CodeInvalidProof, 4},
		{"missing nonce", spec{after: del(attest.HeaderNonce)}, attest.CodeInvalidProof, 4},
		{"Host header differs from url", spec{after: set("Host", "sts.amazonaws.com")}, attest.CodeInvalidProof, 4},
		{"Content-Type json", spec{before: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }}, attest.CodeInvalidProof, 4},
		{"header with newline", spec{after: set(attest.HeaderAudience, testAudience+"\r\nX-Evil: 1")}, attest.CodeInvalidProof, 4},
		// 5. audience and nonce
		{"wrong audience", spec{audience: "staging-orders"}, attest.CodeInvalidProof, 5},
		{"audience differs by case", spec{audience: "Prod-Orders"}, attest.CodeInvalidProof, 5},
		{"empty audience", spec{after: set(attest.HeaderAudience, "")}, attest.CodeInvalidProof, 5},
		{"malformed nonce: upper case", spec{nonce: strings.Repeat("AB", 16)}, attest.CodeInvalidProof, 5},
		{"malformed nonce: short", spec{nonce: "0123456789abcdef"}, attest.CodeInvalidProof, 5},
		{"malformed nonce: not hex", spec{nonce: strings.Repeat("zz", 16)}, attest.CodeInvalidProof, 5},
		// 6. Authorization
		{"audience not signed", spec{
			before: func(r *http.Request) { r.Header.Del(attest.HeaderAudience) },
			after:  set(attest.HeaderAudience, testAudience),
		}, attest.CodeInvalidProof, 6},
		{"nonce not signed", spec{
			nonce:  "0123456789abcdef0123456789abcdef",
			before: func(r *http.Request) { r.Header.Del(attest.HeaderNonce) },
			after:  set(attest.HeaderNonce, "0123456789abcdef0123456789abcdef"),
		}, attest.CodeInvalidProof, 6},
		{"security token not signed", spec{
			creds: aws.Credentials{AccessKeyID: "ASIAUNSIGNEDTOKEN000", SecretAccessKey: strings.Repeat("k", 40)},
			after: set("X-Amz-Security-Token", "IQoJb3JpZ2luX2VjEXAMPLETOKENVALUE"),
		}, attest.CodeInvalidProof, 6},
		{"scope service s3", spec{service: "s3"}, attest.CodeInvalidProof, 6},
		{"other algorithm", spec{after: func(p *attest.Proof) {
			p.Headers["Authorization"][0] = strings.Replace(p.Headers["Authorization"][0], "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1)
		}}, attest.CodeInvalidProof, 6},
		{"empty Authorization", spec{after: set("Authorization", "")}, attest.CodeInvalidProof, 6},
		{"malformed X-Amz-Date", spec{after: set("X-Amz-Date", "2026-11-22T08:00:00Z")}, attest.CodeInvalidProof, 6},
		// 7. freshness
		{"stale 6 min", spec{now: time.Now().Add(-6 * time.Minute)}, attest.CodeStaleProof, 7},
		{"future 2 min", spec{now: time.Now().Add(2 * time.Minute)}, attest.CodeStaleProof, 7},
		{"a day old", spec{now: time.Now().Add(-24 * time.Hour)}, attest.CodeStaleProof, 7},
		// 9. STS says no
		{"unknown access key", spec{creds: aws.Credentials{AccessKeyID: "ASIAUNKNOWNKEY000000", SecretAccessKey: strings.Repeat("x", 40), SessionToken: "IQoJb3JpZ2luX2VjUNKNOWN"}}, attest.CodeIdentityRejected, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			s := tc.spec
			if s.creds.AccessKeyID == "" {
				s.creds = e.creds()
			}
			p := signSpec(t, s)
			_, err := e.v.Verify(context.Background(), p)
			secrets := append(secretsOf(s.creds, p), secretsOf(e.creds(), nil)...)
			wantErr(t, err, tc.code, tc.check, secrets...)
			n := e.sts.RequestCount()
			switch {
			case tc.check <= 8 && n != 0:
				t.Errorf("check %d failed but STS saw %d requests", tc.check, n)
			case tc.check >= 9 && n != 1:
				t.Errorf("STS saw %d requests, want 1", n)
			}
			if tc.check < 8 && e.nonces.callCount() != 0 {
				t.Errorf("check %d failed but the nonce store was called", tc.check)
			}
		})
	}
}

func TestVerifyFreshnessBoundaries(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *attest.Config) {
		c.Now = func() time.Time { return now }
		c.MaxAge = 2 * time.Minute
		c.MaxAhead = 30 * time.Second
	})
	e.sts.SetClock(func() time.Time { return now })
	for _, tc := range []struct {
		age  time.Duration
		code string
	}{
		{2 * time.Minute, ""},
		{2*time.Minute + time.Second, attest.CodeStaleProof},
		{-30 * time.Second, ""},
		{-31 * time.Second, attest.CodeStaleProof},
	} {
		p := signSpec(t, spec{creds: e.creds(), now: now.Add(-tc.age)})
		_, err := e.v.Verify(context.Background(), p)
		if tc.code == "" {
			if err != nil {
				t.Errorf("age %v: %v", tc.age, err)
			}
			continue
		}
		wantErr(t, err, tc.code, 7, secretsOf(e.creds(), p)...)
	}
}

func TestVerifyReplay(t *testing.T) {
	e := newEnv(t)
	p, err := attest.Sign(context.Background(), e.creds(), testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if _, err := e.v.Verify(context.Background(), p); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	_, err = e.v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeReplayedProof, 8, secretsOf(e.creds(), p)...)
	if n := e.sts.RequestCount(); n != 1 {
		t.Errorf("STS saw %d requests, want 1", n)
	}
}

func TestVerifyConcurrentReplay(t *testing.T) {
	e := newEnv(t)
	p, err := attest.Sign(context.Background(), e.creds(), testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = e.v.Verify(context.Background(), p) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if attest.CodeOf(err) != attest.CodeReplayedProof {
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || e.sts.RequestCount() != 1 {
		t.Errorf("%d of %d verifications succeeded and STS saw %d requests; want 1 and 1", ok, n, e.sts.RequestCount())
	}
}

func TestVerifyNonceStoreError(t *testing.T) {
	e := newEnv(t)
	storeErr := errors.New("nonce table unreachable")
	e.nonces.err = storeErr
	p := signSpec(t, spec{creds: e.creds()})
	_, err := e.v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeInternal, 8, secretsOf(e.creds(), p)...)
	if !errors.Is(err, storeErr) {
		t.Errorf("error %v does not wrap the store's error", err)
	}
	if n := e.sts.RequestCount(); n != 0 {
		t.Errorf("STS saw %d requests, want 0", n)
	}
}

func TestVerifyWrongSecret(t *testing.T) {
	e := newEnv(t)
	creds := e.creds()
	creds.SecretAccessKey = strings.Repeat("W", 40)
	p := signSpec(t, spec{creds: creds})
	_, err := e.v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeIdentityRejected, 9, append(secretsOf(creds, p), e.id.SecretAccessKey)...)
	if n := e.sts.RequestCount(); n != 1 {
		t.Errorf("STS saw %d requests, want 1", n)
	}
}

func TestVerifySTSModes(t *testing.T) {
	for _, tc := range []struct {
		mode stsserver.Mode
		code string
	}{
		{stsserver.ModeJSON, attest.CodeIdentityRejected},
		{stsserver.ModeRedirect, attest.CodeIdentityRejected},
		{stsserver.ModeDoubleResult, attest.CodeIdentityRejected},
		{stsserver.ModeUnavailable, attest.CodeSTSUnavailable},
		{stsserver.ModeSlow, attest.CodeSTSUnavailable},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.sts.SetMode(tc.mode)
			p := signSpec(t, spec{creds: e.creds()})
			start := time.Now()
			_, err := e.v.Verify(context.Background(), p)
			t.Logf("%v answered in %v: %v", tc.mode, time.Since(start).Round(time.Millisecond), err)
			wantErr(t, err, tc.code, 9, secretsOf(e.creds(), p)...)
			if n := e.sts.RequestCount(); n != 1 {
				t.Errorf("STS saw %d requests, want 1", n)
			}
			if tc.mode == stsserver.ModeRedirect {
				// Following the redirect would have failed to connect
				// (sts_unavailable); the verifier must report the 307 itself.
				var ae *attest.Error
				if errors.As(err, &ae) && !strings.Contains(ae.Message, "307") {
					t.Errorf("message %q does not name the redirect status", ae.Message)
				}
			}
		})
	}
}

// TestVerifyRedirectNotFollowed points the verifier at a server that
// redirects to a working STS: following it would succeed.
func TestVerifyRedirectNotFollowed(t *testing.T) {
	e := newEnv(t)
	var hits int
	var mu sync.Mutex
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		http.Redirect(w, r, e.sts.URL()+"/", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	v, err := attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Endpoint: redirector.URL, Nonces: newMemNonces()})
	if err != nil {
		t.Fatal(err)
	}
	p := signSpec(t, spec{creds: e.creds()})
	_, err = v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeIdentityRejected, 9, secretsOf(e.creds(), p)...)
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 || e.sts.RequestCount() != 0 {
		t.Errorf("redirector saw %d requests and STS %d; want 1 and 0", hits, e.sts.RequestCount())
	}
}

func TestVerifySTSUnreachable(t *testing.T) {
	id := stsserver.NewIdentity(testAccount, testRole, testSession)
	sts := stsserver.StartTB(t, id)
	endpoint := sts.URL()
	if err := sts.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Endpoint: endpoint, Nonces: newMemNonces()})
	if err != nil {
		t.Fatal(err)
	}
	p := signSpec(t, spec{creds: credsOf(id)})
	_, err = v.Verify(context.Background(), p)
	wantErr(t, err, attest.CodeSTSUnavailable, 9, secretsOf(credsOf(id), p)...)
}

func TestVerifyBadSTSAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		code              string
	}{
		{"not xml", "text/xml", "{", 200, attest.CodeIdentityRejected},
		{"no result", "text/xml", `<GetCallerIdentityResponse></GetCallerIdentityResponse>`, 200, attest.CodeIdentityRejected},
		{"other document", "text/xml", `<Other><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><Account>123456789012</Account></GetCallerIdentityResult></Other>`, 200, attest.CodeIdentityRejected},
		{"html", "text/html", `<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>`, 200, attest.CodeIdentityRejected},
		{"too large", "text/xml", `<GetCallerIdentityResponse>` + strings.Repeat(" ", 70<<10) + `</GetCallerIdentityResponse>`, 200, attest.CodeIdentityRejected},
		{"500", "text/xml", "", 500, attest.CodeSTSUnavailable},
		{"403 with a hostile code", "text/xml", `<ErrorResponse><Error><Code>Bad Code "quoted" ` + strings.Repeat("x", 100) + `</Code></Error></ErrorResponse>`, 403, attest.CodeIdentityRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			v, err := attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Endpoint: srv.URL, Nonces: newMemNonces()})
			if err != nil {
				t.Fatal(err)
			}
			creds := credsOf(stsserver.NewIdentity(testAccount, testRole, testSession))
			p := signSpec(t, spec{creds: creds})
			_, err = v.Verify(context.Background(), p)
			ae := wantErr(t, err, tc.code, 9, secretsOf(creds, p)...)
			if strings.Contains(ae.Message, `"quoted"`) {
				t.Errorf("message %q quotes an unsafe STS error code", ae.Message)
			}
		})
	}
}

func TestVerifyIdentityCheck(t *testing.T) {
	iamUser := func(arn, account string) stsserver.Identity {
		return stsserver.Identity{
			AccessKeyID:     "AKIAIAMUSEREXAMPLE01",
			SecretAccessKey: strings.Repeat("u", 40),
			ARN:             arn,
			Account:         account,
			UserID:          "AIDAEXAMPLEUSERID001",
		}
	}
	role := func(edit func(*stsserver.Identity)) stsserver.Identity {
		id := stsserver.NewIdentity(testAccount, testRole, testSession)
		edit(&id)
		return id
	}
	// Each identity is refused as identity_rejected (step 10), its secrets never shown.
	for _, tc := range []struct {
		name       string
		allowUsers bool
		id         stsserver.Identity
	}{
		{"account mismatch", false, role(func(id *stsserver.Identity) { id.Account = "210987654321" })},
		{"federated user", false, role(func(id *stsserver.Identity) { id.ARN = "arn:aws:sts::123456789012:federated-user/bob" })},
		{"root", true, role(func(id *stsserver.Identity) { id.ARN = "arn:aws:iam::123456789012:root" })},
		{"IAM user rejected by default", false, iamUser("arn:aws:iam::123456789012:user/alice", testAccount)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *attest.Config) { c.AllowIAMUsers = tc.allowUsers })
			e.sts.Add(tc.id)
			p := signSpec(t, spec{creds: credsOf(tc.id)})
			_, err := e.v.Verify(context.Background(), p)
			wantErr(t, err, attest.CodeIdentityRejected, 10, secretsOf(credsOf(tc.id), p)...)
		})
	}
	t.Run("IAM user accepted with AllowIAMUsers", func(t *testing.T) {
		e := newEnv(t, func(c *attest.Config) { c.AllowIAMUsers = true })
		id := iamUser("arn:aws:iam::123456789012:user/ops/alice", testAccount)
		e.sts.Add(id)
		got, err := e.v.Verify(context.Background(), signSpec(t, spec{creds: credsOf(id)}))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		want := attest.Principal{ARN: id.ARN, Account: testAccount, Kind: attest.KindUser, User: "alice",
			Role: "alice", Session: "alice", RoleARN: "arn:aws:iam::123456789012:user/alice", UserID: id.UserID}
		if *got != want || !got.IsUser() {
			t.Errorf("principal:\n got %+v\nwant %+v", *got, want)
		}
	})
	t.Run("IAM user account mismatch", func(t *testing.T) {
		e := newEnv(t, func(c *attest.Config) { c.AllowIAMUsers = true })
		id := iamUser("arn:aws:iam::123456789012:user/alice", "210987654321")
		e.sts.Add(id)
		p := signSpec(t, spec{creds: credsOf(id)})
		_, err := e.v.Verify(context.Background(), p)
		wantErr(t, err, attest.CodeIdentityRejected, 10, secretsOf(credsOf(id), p)...)
	})
}

func TestVerifyNilProof(t *testing.T) {
	e := newEnv(t)
	_, err := e.v.Verify(context.Background(), nil)
	wantErr(t, err, attest.CodeInvalidProof, 1)
}

func TestErrorFormat(t *testing.T) {
	cause := errors.New("cause")
	e := &attest.Error{Code: attest.CodeInternal, Check: 8, Message: "nonce store unavailable", Err: cause}
	if got, want := e.Error(), "attest: internal (check 8): nonce store unavailable: cause"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, cause) {
		t.Errorf("Unwrap does not reach the cause")
	}
	e = &attest.Error{Code: attest.CodeInvalidProof, Check: 1, Message: "method must be POST"}
	if got, want := e.Error(), "attest: invalid_proof (check 1): method must be POST"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if attest.CodeOf(errors.New("plain")) != "" || attest.CodeOf(nil) != "" {
		t.Errorf("CodeOf of a non-attest error is not empty")
	}
}

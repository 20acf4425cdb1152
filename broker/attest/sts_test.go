package attest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	stsNS     = `https://sts.amazonaws.com/doc/2011-06-15/`
	stsARN    = "arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn"
	xmlDecl   = `<?xml version="1.0" encoding="UTF-8"?>`
	oneResult = `<GetCallerIdentityResult><Arn>` + stsARN + `</Arn><UserId>AROAEXAMPLE:orders-fn</UserId>` +
		`<Account>123456789012</Account></GetCallerIdentityResult>`
	okDoc = `<GetCallerIdentityResponse xmlns="` + stsNS + `">` + oneResult +
		`<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></GetCallerIdentityResponse>`
)

// stsAnswer is one scripted STS answer.
type stsAnswer struct {
	status int
	ctype  string
	body   string
	// hang makes the server wait, without answering, until the client
	// gives up.
	hang bool
}

// scriptedSTS serves a for every request and, for redirects, a working
// target the verifier must not reach.
func scriptedSTS(t *testing.T, a stsAnswer) (endpoint string, targetHits func() int) {
	t.Helper()
	hits := make(chan struct{}, 16)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- struct{}{}
		w.Header().Set("Content-Type", "text/xml")
		_, _ = w.Write([]byte(okDoc))
	}))
	t.Cleanup(target.Close)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.hang {
			select {
			case <-r.Context().Done():
			case <-done:
			}
			return
		}
		if a.status >= 300 && a.status < 400 {
			w.Header().Set("Location", target.URL+"/")
		}
		if a.ctype != "" {
			w.Header().Set("Content-Type", a.ctype)
		}
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(a.body))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) }) // runs before srv.Close
	return srv.URL, func() int { return len(hits) }
}

// TestVerifySTSAnswerStrictness is check 9: only a 200 text/xml answer
// that is exactly one GetCallerIdentityResponse document names an
// identity; 5xx, timeouts and network failures are sts_unavailable, every
// other answer identity_rejected.
func TestVerifySTSAnswerStrictness(t *testing.T) {
	const (
		ok          = ""
		rejected    = attest.CodeIdentityRejected
		unavailable = attest.CodeSTSUnavailable
	)
	for _, tc := range []struct {
		name string
		a    stsAnswer
		code string
	}{
		{"plain document", stsAnswer{status: 200, ctype: "text/xml", body: okDoc}, ok},
		{"declaration and whitespace", stsAnswer{status: 200, ctype: "text/xml; charset=utf-8", body: xmlDecl + "\n  " + okDoc + "\r\n\t "}, ok},
		{"whitespace around", stsAnswer{status: 200, ctype: "text/xml", body: "\n\n" + okDoc + "\n"}, ok},

		{"junk before the document", stsAnswer{status: 200, ctype: "text/xml", body: "junk" + okDoc}, rejected},
		{"junk after the declaration", stsAnswer{status: 200, ctype: "text/xml", body: xmlDecl + "x" + okDoc}, rejected},
		{"comment before the root", stsAnswer{status: 200, ctype: "text/xml", body: "<!-- hello -->" + okDoc}, rejected},
		{"processing instruction before the root", stsAnswer{status: 200, ctype: "text/xml", body: `<?xml-stylesheet href="a"?>` + okDoc}, rejected},
		{"DOCTYPE before the root", stsAnswer{status: 200, ctype: "text/xml", body: xmlDecl + `<!DOCTYPE GetCallerIdentityResponse>` + okDoc}, rejected},
		{"declaration after whitespace", stsAnswer{status: 200, ctype: "text/xml", body: " " + xmlDecl + okDoc}, rejected},
		{"two declarations", stsAnswer{status: 200, ctype: "text/xml", body: xmlDecl + xmlDecl + okDoc}, rejected},
		{"two documents", stsAnswer{status: 200, ctype: "text/xml", body: okDoc + okDoc}, rejected},
		{"trailing junk", stsAnswer{status: 200, ctype: "text/xml", body: okDoc + "junk"}, rejected},
		{"trailing comment", stsAnswer{status: 200, ctype: "text/xml", body: okDoc + "<!-- -->"}, rejected},
		{"unclosed root", stsAnswer{status: 200, ctype: "text/xml", body: strings.TrimSuffix(okDoc, "</GetCallerIdentityResponse>")}, rejected},
		{"two results", stsAnswer{status: 200, ctype: "text/xml", body: `<GetCallerIdentityResponse>` + oneResult + oneResult + `</GetCallerIdentityResponse>`}, rejected},
		{"no result", stsAnswer{status: 200, ctype: "text/xml", body: `<GetCallerIdentityResponse></GetCallerIdentityResponse>`}, rejected},
		{"two Arn elements", stsAnswer{status: 200, ctype: "text/xml", body: `<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>` + stsARN +
			`</Arn><Arn>arn:aws:sts::123456789012:assumed-role/admin/x1</Arn><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>`}, rejected},
		{"wrong root", stsAnswer{status: 200, ctype: "text/xml", body: `<AssumeRoleResponse>` + oneResult + `</AssumeRoleResponse>`}, rejected},
		{"result wrapped in another root", stsAnswer{status: 200, ctype: "text/xml", body: `<Wrapper>` + okDoc + `</Wrapper>`}, rejected},
		{"JSON as text/xml", stsAnswer{status: 200, ctype: "text/xml", body: `{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Arn":"` + stsARN + `","Account":"123456789012"}}}`}, rejected},
		{"JSON", stsAnswer{status: 200, ctype: "application/json", body: `{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Arn":"` + stsARN + `","Account":"123456789012"}}}`}, rejected},
		{"empty body", stsAnswer{status: 200, ctype: "text/xml"}, rejected},
		{"wrong Content-Type", stsAnswer{status: 200, ctype: "application/xml", body: okDoc}, rejected},
		{"no Content-Type", stsAnswer{status: 200, ctype: "", body: okDoc}, rejected},
		{"201", stsAnswer{status: 201, ctype: "text/xml", body: okDoc}, rejected},
		{"301", stsAnswer{status: 301, ctype: "text/xml", body: okDoc}, rejected},
		{"302", stsAnswer{status: 302}, rejected},
		{"307", stsAnswer{status: 307}, rejected},
		{"400", stsAnswer{status: 400, ctype: "text/xml", body: `<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>`}, rejected},
		{"403", stsAnswer{status: 403, ctype: "text/xml", body: `<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>`}, rejected},
		{"404 with a document", stsAnswer{status: 404, ctype: "text/xml", body: okDoc}, rejected},
		{"500", stsAnswer{status: 500, ctype: "text/xml", body: okDoc}, unavailable},
		{"503", stsAnswer{status: 503, ctype: "text/xml", body: `<ErrorResponse><Error><Code>ServiceUnavailable</Code></Error></ErrorResponse>`}, unavailable},
		{"timeout", stsAnswer{hang: true}, unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			endpoint, targetHits := scriptedSTS(t, tc.a)
			// A client that would follow redirects and gives up quickly:
			// the verifier must not follow them whatever client it is given.
			client := &http.Client{Timeout: 200 * time.Millisecond}
			v, err := attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Endpoint: endpoint,
				Nonces: newMemNonces(), HTTPClient: client})
			if err != nil {
				t.Fatal(err)
			}
			creds := credsOf(stsserver.NewIdentity(testAccount, testRole, testSession))
			p := signSpec(t, spec{creds: creds})
			got, err := v.Verify(context.Background(), p)
			if n := targetHits(); n != 0 {
				t.Errorf("the verifier followed a redirect (%d requests)", n)
			}
			if tc.code == ok {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got.ARN != stsARN || got.RoleARN != "arn:aws:iam::123456789012:role/orders-api-role" || got.IsUser() {
					t.Errorf("principal %+v", *got)
				}
				return
			}
			e := wantErr(t, err, tc.code, 9, secretsOf(creds, p)...)
			if st := tc.a.status; st != 0 && st != 200 && !strings.Contains(e.Message, strconv.Itoa(st)) {
				t.Errorf("message %q does not name the status %d", e.Message, st)
			}
		})
	}
}

package stsserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	realSTSHost = "sts.us-east-1.amazonaws.com"
	gciBody     = "Action=GetCallerIdentity&Version=2011-06-15"
)

// t0 is the signing time of most test requests.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

var (
	tempID = Identity{
		AccessKeyID:     "ASIATESTTEMP00000001",
		SecretAccessKey: "tempSecretKey0000000000000000000000000001",
		SessionToken:    "FwoGZXIvYXdzEXAMPLE+token/with=chars",
		ARN:             "arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn",
		Account:         "123456789012",
		UserID:          "AROAEXAMPLE:orders-fn",
	}
	longID = Identity{
		AccessKeyID:     "AKIATESTLONG00000001",
		SecretAccessKey: "longSecretKey0000000000000000000000000001",
		ARN:             "arn:aws:iam::210987654321:user/alice",
		Account:         "210987654321",
		UserID:          "AIDAEXAMPLEALICE",
	}
)

// reqSpec describes a request to sign with the real SigV4 signer.
type reqSpec struct {
	method  string
	target  string // URL the request is signed for; default: real STS
	body    string // default gciBody
	noBody  bool
	service string // default sts
	region  string // default us-east-1
	at      time.Time
	creds   Identity
	// before runs before signing, after runs after signing.
	before, after func(*http.Request)
	signOpt       func(*v4.SignerOptions)
}

// signedRequest builds and signs a request as a workload would: for the real
// STS host. send then redirects it to the local server, keeping Host.
func signedRequest(t *testing.T, sp reqSpec) *http.Request {
	t.Helper()
	if sp.method == "" {
		sp.method = http.MethodPost
	}
	if sp.target == "" {
		sp.target = "https://" + realSTSHost + "/"
	}
	if sp.body == "" && !sp.noBody {
		sp.body = gciBody
	}
	if sp.service == "" {
		sp.service = "sts"
	}
	if sp.region == "" {
		sp.region = "us-east-1"
	}
	if sp.at.IsZero() {
		sp.at = t0
	}
	var body io.Reader
	if !sp.noBody {
		body = strings.NewReader(sp.body)
	}
	req, err := http.NewRequest(sp.method, sp.target, body)
	if err != nil {
		t.Fatal(err)
	}
	if !sp.noBody {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	}
	if sp.before != nil {
		sp.before(req)
	}
	sum := sha256.Sum256([]byte(sp.body))
	creds := aws.Credentials{
		AccessKeyID:     sp.creds.AccessKeyID,
		SecretAccessKey: sp.creds.SecretAccessKey,
		SessionToken:    sp.creds.SessionToken,
	}
	var opts []func(*v4.SignerOptions)
	if sp.signOpt != nil {
		opts = append(opts, sp.signOpt)
	}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]),
		sp.service, sp.region, sp.at, opts...); err != nil {
		t.Fatal(err)
	}
	if sp.after != nil {
		sp.after(req)
	}
	return req
}

// send forwards req to s like the broker does: connect to the local server
// but keep the request's Host.
func send(t *testing.T, s *Server, req *http.Request) *http.Response {
	t.Helper()
	resp, err := sendErr(s, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func sendErr(s *Server, req *http.Request, client *http.Client) (*http.Response, error) {
	if req.Host == "" {
		req.Host = req.URL.Host
	}
	base, err := req.URL.Parse(s.URL())
	if err != nil {
		return nil, err
	}
	u := *req.URL
	u.Scheme, u.Host = base.Scheme, base.Host
	req.URL = &u
	if client == nil {
		client = http.DefaultClient
	}
	return client.Do(req)
}

type xmlResult struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse"`
	Results []struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

type xmlError struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Type    string   `xml:"Error>Type"`
	Code    string   `xml:"Error>Code"`
	Message string   `xml:"Error>Message"`
	ReqID   string   `xml:"RequestId"`
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixedClock sets s's clock to t0+offset.
func fixedClock(s *Server, offset time.Duration) {
	now := t0.Add(offset)
	s.SetClock(func() time.Time { return now })
}

func setAuthz(req *http.Request, edit func(string) string) {
	req.Header.Set("Authorization", edit(req.Header.Get("Authorization")))
}

func TestVerification(t *testing.T) {
	s := StartTB(t, tempID, longID)

	withAudience := func(req *http.Request) { req.Header.Set("X-Ephemera-Audience", "ephemera-broker") }
	setBody := func(body string) func(*http.Request) {
		return func(req *http.Request) {
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = int64(len(body))
			req.GetBody = nil
		}
	}

	tests := []struct {
		name       string
		spec       reqSpec
		clock      time.Duration // server clock = t0 + clock
		wantStatus int
		wantCode   string // "" for success
		wantMsg    string // substring of the error message
		wantID     Identity
	}{
		{name: "valid temporary credentials", spec: reqSpec{creds: tempID}, wantStatus: 200, wantID: tempID},
		{name: "valid long-term key", spec: reqSpec{creds: longID}, wantStatus: 200, wantID: longID},
		{name: "valid with signed X-Ephemera-Audience", spec: reqSpec{creds: tempID, before: withAudience}, wantStatus: 200, wantID: tempID},
		{name: "valid other region", spec: reqSpec{creds: tempID, region: "eu-west-1"}, wantStatus: 200, wantID: tempID},
		{name: "valid with query string", spec: reqSpec{creds: tempID, target: "https://" + realSTSHost + "/?x=1&a=b%20c"}, wantStatus: 200, wantID: tempID},
		{name: "valid without trailing slash", spec: reqSpec{creds: tempID, target: "https://" + realSTSHost}, wantStatus: 200, wantID: tempID},
		{name: "valid signed for https with default port", spec: reqSpec{creds: tempID, target: "https://" + realSTSHost + ":443/"}, wantStatus: 200, wantID: tempID},
		{name: "valid signed for http with port 443", spec: reqSpec{creds: tempID, target: "http://" + realSTSHost + ":443/"}, wantStatus: 200, wantID: tempID},
		{name: "valid signed for non-default port", spec: reqSpec{creds: tempID, target: "https://" + realSTSHost + ":8443/"}, wantStatus: 200, wantID: tempID},
		{name: "valid signed for the local URL", spec: reqSpec{creds: tempID, target: s.URL() + "/"}, wantStatus: 200, wantID: tempID},
		{name: "valid with explicit Content-Length header", spec: reqSpec{creds: tempID, before: func(req *http.Request) {
			req.Header.Set("Content-Length", strconv.Itoa(len(gciBody)))
		}}, wantStatus: 200, wantID: tempID},
		{name: "valid without Content-Length (chunked)", spec: reqSpec{creds: tempID, before: func(req *http.Request) {
			req.ContentLength = -1
		}}, wantStatus: 200, wantID: tempID},
		{name: "valid with unsigned header added after signing", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Header.Set("X-Unsigned", "whatever")
			req.Header.Set("User-Agent", "changed")
		}}, wantStatus: 200, wantID: tempID},
		{name: "valid with compact Authorization", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.ReplaceAll(a, ", ", ",") })
		}}, wantStatus: 200, wantID: tempID},
		{name: "valid with spaced Authorization", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.ReplaceAll(a, ", ", " ,  ") })
		}}, wantStatus: 200, wantID: tempID},
		{name: "14 minutes old", spec: reqSpec{creds: tempID}, clock: 14 * time.Minute, wantStatus: 200, wantID: tempID},
		{name: "14 minutes in the future", spec: reqSpec{creds: tempID}, clock: -14 * time.Minute, wantStatus: 200, wantID: tempID},

		{name: "wrong secret", spec: reqSpec{creds: Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: "wrong" + tempID.SecretAccessKey, SessionToken: tempID.SessionToken}},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "does not match the signature you provided"},
		{name: "tampered body", spec: reqSpec{creds: tempID, after: setBody(strings.Replace(gciBody, "Caller", "Callex", 1))},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "does not match"},
		{name: "tampered signed header", spec: reqSpec{creds: tempID, before: withAudience, after: func(req *http.Request) {
			req.Header.Set("X-Ephemera-Audience", "someone-else")
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "does not match"},
		{name: "signed header removed", spec: reqSpec{creds: tempID, before: withAudience, after: func(req *http.Request) {
			req.Header.Del("X-Ephemera-Audience")
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch"},
		{name: "claimed signed header absent", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.Replace(a, "SignedHeaders=", "SignedHeaders=a-missing;", 1) })
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch"},
		{name: "tampered Host", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Host = "sts.eu-west-1.amazonaws.com"
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch"},
		{name: "tampered X-Amz-Date same day", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Header.Set("X-Amz-Date", t0.Add(time.Second).Format(amzDateFormat))
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "does not match"},
		{name: "tampered path", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.URL.Path = "/other"
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch"},
		{name: "X-Amz-Date other day than scope", clock: 24 * time.Hour, spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Header.Set("X-Amz-Date", t0.Add(24*time.Hour).Format(amzDateFormat))
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "Date in Credential scope does not match"},
		{name: "wrong service", spec: reqSpec{creds: tempID, service: "s3"},
			wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "correct service"},
		{name: "wrong terminator", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.Replace(a, "/aws4_request", "/aws5_request", 1) })
		}}, wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "terminator"},

		{name: "unknown key", spec: reqSpec{creds: Identity{AccessKeyID: "ASIAUNKNOWN000000000", SecretAccessKey: "x", SessionToken: "y"}},
			wantStatus: 403, wantCode: "InvalidClientTokenId", wantMsg: "security token included in the request is invalid"},
		{name: "wrong session token", spec: reqSpec{creds: Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: tempID.SecretAccessKey, SessionToken: tempID.SessionToken + "x"}},
			wantStatus: 403, wantCode: "InvalidClientTokenId"},
		{name: "session token replaced after signing", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Header.Set("X-Amz-Security-Token", "other")
		}}, wantStatus: 403, wantCode: "InvalidClientTokenId"},
		{name: "missing session token", spec: reqSpec{creds: Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: tempID.SecretAccessKey}},
			wantStatus: 403, wantCode: "InvalidClientTokenId"},
		{name: "long-term key with token", spec: reqSpec{creds: Identity{AccessKeyID: longID.AccessKeyID, SecretAccessKey: longID.SecretAccessKey, SessionToken: "tok"}},
			wantStatus: 403, wantCode: "InvalidClientTokenId"},

		{name: "16 minutes old", spec: reqSpec{creds: tempID}, clock: 16 * time.Minute,
			wantStatus: 403, wantCode: "SignatureDoesNotMatch",
			wantMsg: "Signature expired: 20250601T120000Z is now earlier than 20250601T120100Z (20250601T121600Z - 15 min.)"},
		{name: "16 minutes in the future", spec: reqSpec{creds: tempID}, clock: -16 * time.Minute,
			wantStatus: 403, wantCode: "SignatureDoesNotMatch",
			wantMsg: "Signature not yet current: 20250601T120000Z is still later than 20250601T115900Z (20250601T114400Z + 15 min.)"},
		{name: "expired and wrong secret reports expiry", spec: reqSpec{creds: Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: "bad", SessionToken: tempID.SessionToken}},
			clock: time.Hour, wantStatus: 403, wantCode: "SignatureDoesNotMatch", wantMsg: "Signature expired"},

		{name: "missing Authorization", spec: reqSpec{creds: tempID, after: func(req *http.Request) { req.Header.Del("Authorization") }},
			wantStatus: 403, wantCode: "MissingAuthenticationToken", wantMsg: "Request is missing Authentication Token"},
		{name: "malformed Authorization", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			req.Header.Set("Authorization", "AWS4-HMAC-SHA256 garbage")
		}}, wantStatus: 400, wantCode: "IncompleteSignature"},
		{name: "Authorization without Signature", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return a[:strings.Index(a, ", Signature=")] })
		}}, wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "'Signature'"},
		{name: "Authorization short Credential", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.Replace(a, "/sts/aws4_request", "/sts", 1) })
		}}, wantStatus: 400, wantCode: "IncompleteSignature"},
		{name: "unsupported algorithm", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.Replace(a, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1) })
		}}, wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "algorithm"},
		{name: "missing X-Amz-Date", spec: reqSpec{creds: tempID, after: func(req *http.Request) { req.Header.Del("X-Amz-Date") }},
			wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "X-Amz-Date"},
		{name: "malformed X-Amz-Date", spec: reqSpec{creds: tempID, after: func(req *http.Request) { req.Header.Set("X-Amz-Date", "2025-06-01T12:00:00Z") }},
			wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "ISO-8601"},
		{name: "host not signed", spec: reqSpec{creds: tempID, after: func(req *http.Request) {
			setAuthz(req, func(a string) string { return strings.Replace(a, "host;", "", 1) })
		}}, wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "'Host'"},
		{name: "session token not signed", spec: reqSpec{creds: tempID,
			signOpt: func(o *v4.SignerOptions) { o.DisableSessionToken = true },
			after:   func(req *http.Request) { req.Header.Set("X-Amz-Security-Token", tempID.SessionToken) },
		}, wantStatus: 400, wantCode: "IncompleteSignature", wantMsg: "X-Amz-Security-Token"},

		{name: "GET", spec: reqSpec{creds: tempID, method: http.MethodGet, noBody: true,
			target: "https://" + realSTSHost + "/?Action=GetCallerIdentity&Version=2011-06-15"},
			wantStatus: 400, wantCode: "InvalidAction", wantMsg: "POST"},
		{name: "JSON content type", spec: reqSpec{creds: tempID, before: func(req *http.Request) {
			req.Header.Set("Content-Type", "application/json")
		}}, wantStatus: 400, wantCode: "InvalidAction"},
		{name: "malformed form body", spec: reqSpec{creds: tempID, body: "Action=%zz"},
			wantStatus: 400, wantCode: "MalformedQueryString"},
		{name: "other action", spec: reqSpec{creds: tempID, body: "Action=GetSessionToken&Version=2011-06-15"},
			wantStatus: 400, wantCode: "InvalidAction", wantMsg: "Could not find operation GetSessionToken"},
		{name: "AssumeRole without parameters", spec: reqSpec{creds: tempID, body: "Action=AssumeRole&Version=2011-06-15"},
			wantStatus: 400, wantCode: "ValidationError", wantMsg: "2 validation errors detected: Value null at 'roleArn'"},
		{name: "AssumeRole wrong version", spec: reqSpec{creds: tempID, body: "Action=AssumeRole&Version=2010-01-01"},
			wantStatus: 400, wantCode: "InvalidAction", wantMsg: "Could not find operation AssumeRole for version 2010-01-01"},
		{name: "missing action", spec: reqSpec{creds: tempID, body: "Version=2011-06-15"},
			wantStatus: 400, wantCode: "MissingAction"},
		{name: "missing version", spec: reqSpec{creds: tempID, body: "Action=GetCallerIdentity"},
			wantStatus: 400, wantCode: "MissingParameter", wantMsg: "Version"},
		{name: "wrong version", spec: reqSpec{creds: tempID, body: "Action=GetCallerIdentity&Version=2010-01-01"},
			wantStatus: 400, wantCode: "InvalidAction", wantMsg: "2010-01-01"},
		{name: "duplicate action", spec: reqSpec{creds: tempID, body: gciBody + "&Action=GetCallerIdentity"},
			wantStatus: 400, wantCode: "InvalidAction"},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fixedClock(s, tc.clock)
			req := signedRequest(t, tc.spec)
			sentSig := req.Header.Get("Authorization")
			if i := strings.Index(sentSig, "Signature="); i >= 0 {
				sentSig = sentSig[i+len("Signature="):]
			} else {
				sentSig = ""
			}
			resp := send(t, s, req)
			body := readBody(t, resp)

			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body:\n%s", resp.StatusCode, tc.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/xml" {
				t.Errorf("Content-Type = %q, want text/xml", ct)
			}
			if tc.wantCode == "" {
				var res xmlResult
				if err := xml.Unmarshal(body, &res); err != nil {
					t.Fatalf("decoding %s: %v", body, err)
				}
				if len(res.Results) != 1 {
					t.Fatalf("got %d results", len(res.Results))
				}
				got := res.Results[0]
				if got.Arn != tc.wantID.ARN || got.UserID != tc.wantID.UserID || got.Account != tc.wantID.Account {
					t.Errorf("result = %+v, want identity %+v", got, tc.wantID)
				}
				if !uuidV4.MatchString(res.RequestID) {
					t.Errorf("RequestId %q is not a UUID v4", res.RequestID)
				}
				return
			}
			var e xmlError
			if err := xml.Unmarshal(body, &e); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			if e.Code != tc.wantCode {
				t.Errorf("code = %q, want %q (message %q)", e.Code, tc.wantCode, e.Message)
			}
			if e.Type != "Sender" {
				t.Errorf("type = %q, want Sender", e.Type)
			}
			if !strings.Contains(e.Message, tc.wantMsg) {
				t.Errorf("message = %q, want it to contain %q", e.Message, tc.wantMsg)
			}
			if !uuidV4.MatchString(e.ReqID) {
				t.Errorf("RequestId %q is not a UUID v4", e.ReqID)
			}
			for _, secret := range []string{tempID.SecretAccessKey, tempID.SessionToken, longID.SecretAccessKey, sentSig} {
				if secret != "" && bytes.Contains(body, []byte(secret)) {
					t.Errorf("error body leaks a secret: %s", body)
				}
			}
		})
	}
}

// TestSignedHeaderSets pins down the signer behaviour the server relies on
// (content-length is signed from ContentLength, never from the header; extra
// headers are signed) and checks that each variant verifies, also when the
// request is delivered to the local URL with the real STS Host.
func TestSignedHeaderSets(t *testing.T) {
	s := StartTB(t, tempID)
	fixedClock(s, 0)
	tests := []struct {
		name   string
		before func(*http.Request)
		want   string
	}{
		{"ContentLength field", nil,
			"content-length;content-type;host;x-amz-date;x-amz-security-token"},
		{"Content-Length header and extra X-Ephemera headers", func(r *http.Request) {
			r.Header.Set("Content-Length", strconv.Itoa(len(gciBody)))
			r.Header.Set("X-Ephemera-Audience", "aud")
			r.Header.Add("X-Ephemera-Nonce", "n1")
			r.Header.Add("X-Ephemera-Nonce", "n2")
		}, "content-length;content-type;host;x-amz-date;x-amz-security-token;x-ephemera-audience;x-ephemera-nonce"},
		{"no content length (chunked)", func(r *http.Request) { r.ContentLength = -1 },
			"content-type;host;x-amz-date;x-amz-security-token"},
		{"ignored headers are not signed", func(r *http.Request) {
			r.Header.Set("User-Agent", "ua")
			r.Header.Set("X-Amzn-Trace-Id", "Root=1")
			r.Header.Set("Expect", "100-continue")
		}, "content-length;content-type;host;x-amz-date;x-amz-security-token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.Reset()
			req := signedRequest(t, reqSpec{creds: tempID, before: tc.before})
			if authz := req.Header.Get("Authorization"); !strings.Contains(authz, "SignedHeaders="+tc.want+",") {
				t.Fatalf("signed headers: %s, want %s", authz, tc.want)
			}
			resp := send(t, s, req)
			if body := readBody(t, resp); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if got := s.Requests(); len(got) != 1 || got[0].Host != realSTSHost {
				t.Fatalf("recorded %+v", got)
			}
		})
	}
}

func TestResponseShape(t *testing.T) {
	id := tempID
	id.UserID = "AROAEXAMPLE:sess<&>\"'"
	s := New(id)
	fixedClock(s, 0)
	req := signedRequest(t, reqSpec{creds: id})
	// Deliver through httptest with the signed Host, as the broker would.
	rr := httptest.NewRecorder()
	srvReq := httptest.NewRequest(req.Method, "/", req.Body)
	srvReq.Host = req.Host
	if srvReq.Host == "" {
		srvReq.Host = req.URL.Host
	}
	srvReq.Header = req.Header.Clone()
	s.ServeHTTP(rr, srvReq)
	if rr.Code != 200 {
		t.Fatalf("status %d: %s", rr.Code, rr.Body)
	}
	body := rr.Body.String()
	var res xmlResult
	if err := xml.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	want := `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn</Arn>
    <UserId>AROAEXAMPLE:sess&lt;&amp;&gt;&#34;&#39;</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>` + res.RequestID + `</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
`
	if body != want {
		t.Errorf("body:\n%s\nwant:\n%s", body, want)
	}
	if res.Results[0].UserID != id.UserID {
		t.Errorf("UserId round trip = %q", res.Results[0].UserID)
	}
	if got := rr.Header().Get("X-Amzn-Requestid"); got != res.RequestID {
		t.Errorf("x-amzn-RequestId = %q, want %q", got, res.RequestID)
	}

	// Error shape.
	rr = httptest.NewRecorder()
	s.ServeHTTP(rr, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(gciBody)))
	var e xmlError
	if err := xml.Unmarshal(rr.Body.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	wantErr := `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>MissingAuthenticationToken</Code>
    <Message>Request is missing Authentication Token</Message>
  </Error>
  <RequestId>` + e.ReqID + `</RequestId>
</ErrorResponse>
`
	if rr.Code != 403 || rr.Body.String() != wantErr || rr.Header().Get("Content-Type") != "text/xml" {
		t.Errorf("error answer %d %q:\n%s\nwant:\n%s", rr.Code, rr.Header().Get("Content-Type"), rr.Body, wantErr)
	}
}

func TestModes(t *testing.T) {
	s := StartTB(t, tempID)
	fixedClock(s, 0)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	tests := []struct {
		mode       Mode
		wantStatus int
		wantCT     string
		check      func(t *testing.T, resp *http.Response, body []byte)
	}{
		{ModeNormal, 200, "text/xml", nil},
		{ModeJSON, 200, "application/json", func(t *testing.T, _ *http.Response, body []byte) {
			var doc struct {
				R struct {
					Result struct{ Arn, UserId, Account string } `json:"GetCallerIdentityResult"`
					Meta   struct{ RequestId string }            `json:"ResponseMetadata"`
				} `json:"GetCallerIdentityResponse"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatalf("JSON: %v: %s", err, body)
			}
			if doc.R.Result.Arn != tempID.ARN || !uuidV4.MatchString(doc.R.Meta.RequestId) {
				t.Errorf("JSON body %s", body)
			}
		}},
		{ModeRedirect, 307, "", func(t *testing.T, resp *http.Response, _ []byte) {
			if loc := resp.Header.Get("Location"); loc != "http://127.0.0.1:1/" {
				t.Errorf("Location = %q", loc)
			}
		}},
		{ModeUnavailable, 503, "text/xml", func(t *testing.T, _ *http.Response, body []byte) {
			var e xmlError
			if err := xml.Unmarshal(body, &e); err != nil || e.Code != "ServiceUnavailable" {
				t.Errorf("body %s (err %v)", body, err)
			}
		}},
		{ModeDoubleResult, 200, "text/xml", func(t *testing.T, _ *http.Response, body []byte) {
			var res xmlResult
			if err := xml.Unmarshal(body, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 2 || res.Results[0].Arn == res.Results[1].Arn {
				t.Errorf("want two different results, got %+v", res.Results)
			}
			if n := bytes.Count(body, []byte("<GetCallerIdentityResult>")); n != 2 {
				t.Errorf("%d GetCallerIdentityResult elements", n)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			s.SetMode(tc.mode)
			t.Cleanup(func() { s.SetMode(ModeNormal) })
			before := s.RequestCount()
			resp, err := sendErr(s, signedRequest(t, reqSpec{creds: tempID}), noRedirect)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); tc.wantCT != "" && ct != tc.wantCT {
				t.Errorf("Content-Type = %q, want %q", ct, tc.wantCT)
			}
			if tc.check != nil {
				tc.check(t, resp, body)
			}
			if got := s.RequestCount(); got != before+1 {
				t.Errorf("RequestCount = %d, want %d", got, before+1)
			}
		})
	}

	t.Run("modes replace the answer even for unauthenticated requests", func(t *testing.T) {
		s.SetMode(ModeUnavailable)
		defer s.SetMode(ModeNormal)
		req, _ := http.NewRequest(http.MethodPost, s.URL(), strings.NewReader(gciBody))
		resp := send(t, s, req)
		readBody(t, resp)
		if resp.StatusCode != 503 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})

	t.Run("ModeSlow delays then verifies", func(t *testing.T) {
		s.mu.Lock()
		s.slowDelay = 150 * time.Millisecond
		s.mu.Unlock()
		s.SetMode(ModeSlow)
		defer s.SetMode(ModeNormal)
		for _, c := range []struct {
			creds      Identity
			wantStatus int
		}{{tempID, 200}, {Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: "bad", SessionToken: tempID.SessionToken}, 403}} {
			start := time.Now()
			resp := send(t, s, signedRequest(t, reqSpec{creds: c.creds}))
			readBody(t, resp)
			if resp.StatusCode != c.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, c.wantStatus)
			}
			if d := time.Since(start); d < 150*time.Millisecond {
				t.Errorf("answered after %v", d)
			}
		}
	})

	t.Run("ModeSlow default is 5s and respects the request context", func(t *testing.T) {
		s2 := New(tempID)
		if s2.slowDelay != 5*time.Second {
			t.Fatalf("default slow delay %v", s2.slowDelay)
		}
		s2.SetMode(ModeSlow)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(gciBody)).WithContext(ctx)
		rr := httptest.NewRecorder()
		start := time.Now()
		s2.ServeHTTP(rr, req)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("ServeHTTP took %v after cancellation", d)
		}
		if rr.Body.Len() != 0 || s2.RequestCount() != 1 {
			t.Errorf("body %q, %d requests", rr.Body, s2.RequestCount())
		}

		// Over the network: a client timeout ends the wait.
		s.mu.Lock()
		s.slowDelay = 5 * time.Second
		s.mu.Unlock()
		s.SetMode(ModeSlow)
		defer s.SetMode(ModeNormal)
		_, err := sendErr(s, signedRequest(t, reqSpec{creds: tempID}), &http.Client{Timeout: 100 * time.Millisecond})
		if err == nil {
			t.Fatal("want a timeout")
		}
	})
}

func TestRequestsRecorded(t *testing.T) {
	s := StartTB(t, tempID)
	fixedClock(s, time.Minute)
	s.Reset()
	req := signedRequest(t, reqSpec{creds: tempID, target: "https://" + realSTSHost + "/?q=1", before: func(r *http.Request) {
		r.Header.Set("X-Ephemera-Audience", "aud")
	}})
	resp := send(t, s, req)
	readBody(t, resp)
	// An invalid request is recorded too.
	bad, _ := http.NewRequest(http.MethodPut, s.URL()+"/x", strings.NewReader("junk"))
	resp = send(t, s, bad)
	readBody(t, resp)
	if resp.StatusCode != 400 {
		t.Errorf("PUT status %d", resp.StatusCode)
	}

	got := s.Requests()
	if len(got) != 2 || s.RequestCount() != 2 {
		t.Fatalf("recorded %d (count %d), want 2", len(got), s.RequestCount())
	}
	r0 := got[0]
	if r0.Method != "POST" || r0.Host != realSTSHost || r0.Path != "/" || r0.RawQuery != "q=1" ||
		string(r0.Body) != gciBody || !r0.Time.Equal(t0.Add(time.Minute)) ||
		r0.Header.Get("X-Ephemera-Audience") != "aud" || r0.Header.Get("Authorization") == "" {
		t.Errorf("recorded %+v", r0)
	}
	if got[1].Method != "PUT" || got[1].Path != "/x" || string(got[1].Body) != "junk" {
		t.Errorf("recorded %+v", got[1])
	}
	// Copies: mutating them does not change the server's record.
	r0.Header.Set("X-Ephemera-Audience", "changed")
	r0.Body[0] = 'X'
	if again := s.Requests()[0]; again.Header.Get("X-Ephemera-Audience") != "aud" || string(again.Body) != gciBody {
		t.Error("Requests does not return copies")
	}
	s.Reset()
	if s.RequestCount() != 0 || len(s.Requests()) != 0 {
		t.Error("Reset did not forget requests")
	}
}

func TestAddAndClock(t *testing.T) {
	s := StartTB(t)
	id := NewIdentity("111122223333", "role", "sess")
	req := signedRequest(t, reqSpec{creds: id, at: time.Now()})
	resp := send(t, s, req)
	readBody(t, resp)
	if resp.StatusCode != 403 {
		t.Fatalf("before Add: status %d", resp.StatusCode)
	}
	s.Add(id)
	s.SetClock(nil) // default clock: time.Now
	resp = send(t, s, signedRequest(t, reqSpec{creds: id, at: time.Now()}))
	body := readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("after Add: status %d: %s", resp.StatusCode, body)
	}
	// Add replaces an identity with the same key id.
	id2 := id
	id2.ARN, id2.Account = "arn:aws:sts::444455556666:assumed-role/r/s", "999999999999"
	s.Add(id2)
	resp = send(t, s, signedRequest(t, reqSpec{creds: id, at: time.Now()}))
	body = readBody(t, resp)
	var res xmlResult
	if err := xml.Unmarshal(body, &res); err != nil || res.Results[0].Arn != id2.ARN || res.Results[0].Account != "999999999999" {
		t.Fatalf("after replace: %s (%v)", body, err)
	}
}

func TestNewIdentity(t *testing.T) {
	a := NewIdentity("123456789012", "orders-api-role", "orders-fn")
	b := NewIdentity("123456789012", "orders-api-role", "orders-fn")
	if !regexp.MustCompile(`^ASIA[A-Z0-9]{16}$`).MatchString(a.AccessKeyID) {
		t.Errorf("AccessKeyID %q", a.AccessKeyID)
	}
	if len(a.SecretAccessKey) != 40 {
		t.Errorf("secret length %d", len(a.SecretAccessKey))
	}
	if len(a.SessionToken) < 100 {
		t.Errorf("session token %q", a.SessionToken)
	}
	if a.ARN != "arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn" || a.Account != "123456789012" {
		t.Errorf("ARN/Account %q %q", a.ARN, a.Account)
	}
	if !regexp.MustCompile(`^AROA[A-Z0-9]{16}:orders-fn$`).MatchString(a.UserID) {
		t.Errorf("UserID %q", a.UserID)
	}
	if a.AccessKeyID == b.AccessKeyID || a.SecretAccessKey == b.SecretAccessKey || a.SessionToken == b.SessionToken || a.UserID == b.UserID {
		t.Error("identities are not random")
	}
}

type fakeTB struct {
	cleanups []func()
	fatal    string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Fatalf(format string, _ ...any) { f.fatal = format }
func (f *fakeTB) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }

func TestStartTBAndClose(t *testing.T) {
	var tb fakeTB
	s := StartTB(&tb, tempID)
	if tb.fatal != "" || len(tb.cleanups) != 1 {
		t.Fatalf("fatal %q, %d cleanups", tb.fatal, len(tb.cleanups))
	}
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`).MatchString(s.URL()) {
		t.Fatalf("URL %q", s.URL())
	}
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	tb.cleanups[0]()
	if _, err := http.Get(s.URL()); err == nil {
		t.Error("server still answers after cleanup")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := New().Close(); err != nil || New().URL() != "" {
		t.Errorf("unstarted server: Close %v, URL %q", err, New().URL())
	}
}

func TestCloseEndsSlowRequests(t *testing.T) {
	s, err := Start(tempID)
	if err != nil {
		t.Fatal(err)
	}
	fixedClock(s, 0)
	s.SetMode(ModeSlow)
	errc := make(chan error, 1)
	go func() {
		_, err := sendErr(s, signedRequest(t, reqSpec{creds: tempID}), nil)
		errc <- err
	}()
	for s.RequestCount() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Error("slow request succeeded after Close")
		}
	case <-time.After(3 * time.Second):
		t.Error("slow request not ended by Close")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestConcurrency(t *testing.T) {
	s := StartTB(t, tempID)
	fixedClock(s, 0)
	const workers, perWorker = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	stop := make(chan struct{})

	// Mutators and readers racing with the requests.
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.Add(NewIdentity("123456789012", "role", "s"+strconv.Itoa(i)))
			s.SetMode(ModeNormal)
			fixedClock(s, time.Duration(i%5)*time.Second)
			_ = s.Requests()
			_ = s.RequestCount()
			_ = s.URL()
		}
	}()

	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				creds, want := tempID, 200
				if (w+i)%2 == 1 {
					creds = Identity{AccessKeyID: tempID.AccessKeyID, SecretAccessKey: "bad", SessionToken: tempID.SessionToken}
					want = 403
				}
				req := signedRequest(t, reqSpec{creds: creds})
				resp, err := sendErr(s, req, nil)
				if err != nil {
					errs <- err
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					errs <- errors.New("status " + strconv.Itoa(resp.StatusCode) + ", want " + strconv.Itoa(want))
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.RequestCount(); got != workers*perWorker {
		t.Errorf("RequestCount = %d, want %d", got, workers*perWorker)
	}
}

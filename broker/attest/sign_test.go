package attest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestSignShape(t *testing.T) {
	id := stsserver.NewIdentity(testAccount, testRole, testSession)
	// A non-UTC clock: the proof must be dated in UTC.
	now := time.Date(2026, 11, 22, 9, 30, 15, 0, time.FixedZone("CET", 3600))
	p, err := attest.Sign(context.Background(), credsOf(id), "eu-west-1", testAudience, now)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if p.Method != "POST" {
		t.Errorf("Method = %q, want POST", p.Method)
	}
	if want := "https://sts.eu-west-1.amazonaws.com/"; p.URL != want {
		t.Errorf("URL = %q, want %q", p.URL, want)
	}
	if string(p.Body) != attest.RequestBody {
		t.Errorf("Body = %q, want %q", p.Body, attest.RequestBody)
	}

	wantNames := []string{"Authorization", "Content-Length", "Content-Type", "Host", "X-Amz-Date",
		"X-Amz-Security-Token", "X-Ephemera-Audience", "X-Ephemera-Nonce"}
	var names []string
	for k, v := range p.Headers {
		names = append(names, k)
		if len(v) != 1 {
			t.Errorf("header %s has %d values, want 1", k, len(v))
		}
	}
	sort.Strings(names)
	if !slices.Equal(names, wantNames) {
		t.Errorf("header names = %v, want %v", names, wantNames)
	}

	for name, want := range map[string]string{
		"Content-Length":       "43",
		"Content-Type":         attest.ContentType,
		"Host":                 "sts.eu-west-1.amazonaws.com",
		"X-Amz-Date":           "20261122T083015Z",
		"X-Amz-Security-Token": id.SessionToken,
		attest.HeaderAudience:  testAudience,
	} {
		if got := header(p, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if n := header(p, attest.HeaderNonce); !hex32.MatchString(n) {
		t.Errorf("nonce %q is not 32 lowercase hex characters", n)
	}

	auth := header(p, "Authorization")
	wantPrefix := "AWS4-HMAC-SHA256 Credential=" + id.AccessKeyID + "/20261122/eu-west-1/sts/aws4_request, "
	if !strings.HasPrefix(auth, wantPrefix) {
		t.Errorf("Authorization = %q, want prefix %q", auth, wantPrefix)
	}
	signed := signedHeadersOf(auth)
	for _, h := range []string{"host", "x-amz-date", "x-ephemera-audience", "x-ephemera-nonce", "x-amz-security-token"} {
		if !slices.Contains(signed, h) {
			t.Errorf("SignedHeaders %v lack %s", signed, h)
		}
	}
	if sig := signatureOf(p); !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sig) {
		t.Errorf("signature %q is not 64 lowercase hex characters", sig)
	}
}

func TestSignLongTermKeyHasNoToken(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIAEXAMPLEEXAMPLE00", SecretAccessKey: strings.Repeat("s", 40)}
	p, err := attest.Sign(context.Background(), creds, testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	for k := range p.Headers {
		if strings.EqualFold(k, "X-Amz-Security-Token") {
			t.Errorf("proof signed with a long-term key carries %s", k)
		}
	}
	if slices.Contains(signedHeadersOf(header(p, "Authorization")), "x-amz-security-token") {
		t.Errorf("SignedHeaders name x-amz-security-token without a token")
	}
}

func TestSignNonceIsFresh(t *testing.T) {
	creds := credsOf(stsserver.NewIdentity(testAccount, testRole, testSession))
	now := time.Now()
	seen := map[string]bool{}
	for range 20 {
		p, err := attest.Sign(context.Background(), creds, testRegion, testAudience, now)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		n := header(p, attest.HeaderNonce)
		if !hex32.MatchString(n) {
			t.Fatalf("nonce %q is not 32 lowercase hex characters", n)
		}
		if seen[n] {
			t.Fatalf("nonce %q repeated", n)
		}
		seen[n] = true
	}
}

func TestNewNonce(t *testing.T) {
	a, err := attest.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	if !hex32.MatchString(a) || !hex32.MatchString(b) || a == b {
		t.Errorf("NewNonce gave %q and %q", a, b)
	}
}

func TestSignErrors(t *testing.T) {
	good := credsOf(stsserver.NewIdentity(testAccount, testRole, testSession))
	for _, tc := range []struct {
		name             string
		creds            aws.Credentials
		region, audience string
		want             string
	}{
		{"empty region", good, "", testAudience, "region"},
		{"empty audience", good, testRegion, "", "audience"},
		{"empty credentials", aws.Credentials{}, testRegion, testAudience, "credentials"},
		{"no secret", aws.Credentials{AccessKeyID: good.AccessKeyID, SessionToken: good.SessionToken}, testRegion, testAudience, "credentials"},
		{"no access key", aws.Credentials{SecretAccessKey: good.SecretAccessKey}, testRegion, testAudience, "credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := attest.Sign(context.Background(), tc.creds, tc.region, tc.audience, time.Now())
			if err == nil {
				t.Fatalf("Sign succeeded with %s: %+v", tc.name, p)
			}
			if p != nil {
				t.Errorf("Sign returned a proof with an error")
			}
			if !strings.HasPrefix(err.Error(), "attest: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should start with \"attest: \" and mention %q", err, tc.want)
			}
			assertNoSecrets(t, err, tc.creds.SecretAccessKey, tc.creds.SessionToken)
		})
	}
}

func TestProofJSONRoundTrip(t *testing.T) {
	e := newEnv(t)
	p, err := attest.Sign(context.Background(), e.creds(), testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}

	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("Unmarshal into map: %v", err)
	}
	for _, k := range []string{"method", "url", "headers", "body"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON %s lacks %q", data, k)
		}
	}
	b64, ok := raw["body"].(string)
	if !ok {
		t.Fatalf("JSON body is %T, want a base64 string", raw["body"])
	}
	if b64 != base64.StdEncoding.EncodeToString([]byte(attest.RequestBody)) {
		t.Errorf("JSON body = %q, want standard base64 of the request body", b64)
	}
	if dec, err := base64.StdEncoding.DecodeString(b64); err != nil || string(dec) != attest.RequestBody {
		t.Errorf("JSON body decodes to %q, %v", dec, err)
	}

	back, err := attest.ParseProof(data)
	if err != nil {
		t.Fatalf("ParseProof: %v", err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Errorf("round trip changed the proof:\n got %+v\nwant %+v", *back, *p)
	}

	// The decoded proof still verifies.
	if _, err := e.v.Verify(context.Background(), back); err != nil {
		t.Fatalf("Verify after JSON round trip: %v", err)
	}
}

// TestParseProofStrict: the proof JSON is read under the broker's strict
// rules, so that no reader can see another proof than the verifier does.
func TestParseProofStrict(t *testing.T) {
	p, err := attest.Sign(context.Background(), credsOf(stsserver.NewIdentity(testAccount, testRole, testSession)), testRegion, testAudience, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	valid := string(data)
	host := `"Host":["` + testHost + `"]`
	if !strings.Contains(valid, host) {
		t.Fatalf("%s lacks %s", valid, host)
	}
	for name, doc := range map[string]string{
		"duplicate key":             strings.Replace(valid, `"method":"POST"`, `"method":"POST","method":"GET"`, 1),
		"case-variant field":        strings.Replace(valid, `"method":"POST"`, `"Method":"POST"`, 1),
		"case-variant header names": strings.Replace(valid, host, host+`,"host":["evil.example"]`, 1),
		"duplicate header name":     strings.Replace(valid, host, host+`,"Host":["evil.example"]`, 1),
		"unknown field":             strings.Replace(valid, `"method":"POST"`, `"method":"POST","extra":1`, 1),
		"NUL in a value":            strings.Replace(valid, `"method":"POST"`, `"method":"POST\u0000"`, 1),
		"NUL in a header name":      strings.Replace(valid, host, host+`,"X-A\u0000":["v"]`, 1),
		"invalid UTF-8":             strings.Replace(valid, `"method":"POST"`, "\"method\":\"PO\xffST\"", 1),
		"trailing data":             valid + "{}",
		"not an object":             `[]`,
		"empty":                     ``,
	} {
		if doc == valid {
			t.Fatalf("%s: the replacement did not apply", name)
		}
		got, err := attest.ParseProof([]byte(doc))
		var e *attest.Error
		if err == nil || got != nil || !errors.As(err, &e) || e.Code != attest.CodeInvalidProof || e.Check != 0 {
			t.Errorf("%s: ParseProof = %v, %v; want invalid_proof", name, got, err)
			continue
		}
		assertNoSecrets(t, err, signatureOf(p), header(p, attest.HeaderNonce), header(p, "X-Amz-Security-Token"))
	}
}

package localserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/smithy-go"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/localserver"
)

// awsSource serves one fixed AWS session, or a fixed error. The embedded source's
// mutex guards aws and awsErr too, and its refresh flags record GetAWS calls.
type awsSource struct {
	staticSource
	aws    agent.AWSCredential
	awsErr error
}

func (s *awsSource) GetAWS(_ context.Context, name string, refresh bool) (agent.AWSCredential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = append(s.refresh, refresh)
	return fixed(s.aws, s.aws.Name, s.awsErr, name)
}

func testAWS() agent.AWSCredential {
	return agent.AWSCredential{Name: "reports", AWSCredential: api.AWSCredential{
		LeaseID: "0b7e3a52-6c1d-4f0e-8a9b-3c2d1e0f9a8b", AccessKeyID: "ASIAEXAMPLEKEYID0001",
		SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", SessionToken: "FwoGZXIvYXdzEXAMPLEsessionTOKEN/+=",
		Expiration: time.Date(2026, 11, 22, 8, 15, 0, 0, time.FixedZone("CET", 3600)),
	}}
}

// getAWS sends GET path with the given headers (and Host host unless empty) and decodes
// the answer, checking the headers every answer carries.
func getAWS(t *testing.T, s *localserver.Server, path string, header http.Header, host string) answer {
	t.Helper()
	a, err := send(s, path, header, host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func authz(tok string) http.Header { return http.Header{"Authorization": {tok}} }

// awsErrCode is the code of an error in the AWS SDKs' shape, {"code","message"}.
func awsErrCode(a answer) string { c, _ := a.body["code"].(string); return c }

func TestAWS(t *testing.T) {
	src := &awsSource{aws: testAWS()}
	s := start(t, src)
	a := getAWS(t, s, "/v1/aws/reports", authz(token), "")
	if a.status != 200 {
		t.Fatalf("status %d %s", a.status, a.raw)
	}
	want := `{"AccessKeyId":"ASIAEXAMPLEKEYID0001","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",` +
		`"Token":"FwoGZXIvYXdzEXAMPLEsessionTOKEN/+=","Expiration":"2026-11-22T07:15:00Z"}` + "\n"
	if a.raw != want {
		t.Fatalf("got  %s\nwant %s", a.raw, want)
	}
	// X-Ephemera-Token works too, and both together when both are right.
	if b := getAWS(t, s, "/v1/aws/reports", http.Header{"X-Ephemera-Token": {token}}, ""); b.status != 200 || b.raw != want {
		t.Fatalf("X-Ephemera-Token: %d %s", b.status, b.raw)
	}
	both := http.Header{"Authorization": {token}, "X-Ephemera-Token": {token}}
	if b := getAWS(t, s, "/v1/aws/reports?refresh=true", both, ""); b.status != 200 {
		t.Fatalf("both headers, refresh: %d %s", b.status, b.raw)
	}
	if b := getAWS(t, s, "/v1/aws/reports?refresh=maybe", authz(token), ""); b.status != 400 || awsErrCode(b) != "invalid_request" {
		t.Fatalf("refresh=maybe: %d %s", b.status, b.raw)
	}
	if got := fmt.Sprint(src.asked()); got != "[false false true]" {
		t.Errorf("refresh flags %s", got)
	}
}

func TestAWSToken(t *testing.T) {
	src := &awsSource{aws: testAWS()}
	s := start(t, src)
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"missing", nil},
		{"empty", authz("")},
		{"wrong", authz(token + "x")},
		{"prefix", authz(token[:10])},
		{"with a scheme", authz("Bearer " + token)},
		{"two Authorization headers", http.Header{"Authorization": {token, token}}},
		{"right Authorization, wrong X-Ephemera-Token", http.Header{"Authorization": {token}, "X-Ephemera-Token": {"nope"}}},
		{"wrong Authorization, right X-Ephemera-Token", http.Header{"Authorization": {"nope"}, "X-Ephemera-Token": {token}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := getAWS(t, s, "/v1/aws/reports", tc.header, "")
			if a.status != 401 || awsErrCode(a) != "unauthorized" || strings.Contains(a.raw, "ASIA") {
				t.Fatalf("status %d %s", a.status, a.raw)
			}
		})
	}
	if a := getAWS(t, s, "/v1/aws/nope", nil, ""); a.status != 401 {
		t.Fatalf("unknown name without token: %d", a.status)
	}
	// The Authorization header is not accepted for database credentials.
	if a := getAWS(t, s, "/v1/credentials/orders", authz(token), ""); a.status != 401 {
		t.Fatalf("database credential with Authorization: %d", a.status)
	}
	if n := len(src.asked()); n != 0 {
		t.Fatalf("the source was asked %d times without a valid token", n)
	}
}

func TestAWSErrors(t *testing.T) {
	for _, tc := range sourceErrors("reports", "assume") {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, &awsSource{awsErr: tc.err})
			a := getAWS(t, s, "/v1/aws/reports", authz(token), "")
			if a.status != tc.status || awsErrCode(a) != tc.code || a.body["message"] == "" {
				t.Fatalf("status %d %s", a.status, a.raw)
			}
		})
	}
	s := start(t, &awsSource{aws: testAWS()})
	if a := getAWS(t, s, "/v1/aws/orders", authz(token), ""); a.status != 404 || awsErrCode(a) != "not_found" {
		t.Fatalf("unknown name: %d %s", a.status, a.raw)
	}
	_, port, _ := net.SplitHostPort(s.Addr())
	if a := getAWS(t, s, "/v1/aws/reports", authz(token), "evil.example:"+port); a.status != http.StatusMisdirectedRequest ||
		awsErrCode(a) != "misdirected_request" {
		t.Fatalf("foreign Host: %d %s", a.status, a.raw)
	}
	if a := getAWS(t, s, "/v1/aws/reports", authz(token), "localhost:"+port); a.status != 200 {
		t.Fatalf("Host localhost: %d %s", a.status, a.raw)
	}
	// A source without AWS sessions answers 404.
	plain := start(t, struct{ localserver.Source }{&staticSource{cred: testCredential(), ready: true}})
	if a := getAWS(t, plain, "/v1/aws/reports", authz(token), ""); a.status != 404 || awsErrCode(a) != "not_found" {
		t.Fatalf("no AWS source: %d %s", a.status, a.raw)
	}
}

// The server speaks the protocol of aws-sdk-go-v2's container credentials provider,
// unmodified: used directly, and resolved from AWS_CONTAINER_CREDENTIALS_FULL_URI.
func TestAWSWithSDK(t *testing.T) {
	src := &awsSource{aws: testAWS()}
	s := start(t, src)
	want := testAWS()
	check := func(t *testing.T, c aws.Credentials) {
		t.Helper()
		if c.AccessKeyID != want.AccessKeyID || c.SecretAccessKey != want.SecretAccessKey ||
			c.SessionToken != want.SessionToken || !c.CanExpire {
			t.Fatalf("credentials %+v", c)
		}
	}

	p := endpointcreds.New(s.URL()+"/v1/aws/reports", func(o *endpointcreds.Options) { o.AuthorizationToken = token })
	c, err := p.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(t, c)
	if !c.Expires.Equal(want.Expiration) {
		t.Fatalf("Expires %v, want %v", c.Expires, want.Expiration)
	}

	// A wrong token: the SDK reports the server's code.
	bad := endpointcreds.New(s.URL()+"/v1/aws/reports", func(o *endpointcreds.Options) { o.AuthorizationToken = "nope" })
	_, err = bad.Retrieve(context.Background())
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "unauthorized" {
		t.Fatalf("wrong token: %v", err)
	}

	// The SDK's default chain, configured by the environment alone.
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": s.URL() + "/v1/aws/reports",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN":  token,
		"AWS_ACCESS_KEY_ID":                  "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_CONFIG_FILE": filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"), "AWS_REGION": "us-east-1",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
	} {
		t.Setenv(k, v)
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err = cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(t, c)
	if c.Source != endpointcreds.ProviderName {
		t.Fatalf("source %q", c.Source)
	}
}

package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/extension/localserver"
)

// awsExtension runs the extension's real agent and local server, with the AWS profile
// "reports", against the broker double.
func awsExtension(t *testing.T) (*brokertest.Broker, *localserver.Server) {
	t.Helper()
	b := brokertest.Start(t)
	bc, err := brokerclient.New(brokerclient.Config{BaseURL: b.URL(), Audience: brokertest.Audience,
		Region: brokertest.Region, Credentials: b.CredentialsProvider()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(bc, nil, agent.Options{AWSProfiles: []config.AWSProfile{{Name: "reports", Profile: "reports-read"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.RevokeAll(context.Background()) })
	srv, err := localserver.Start(localserver.Config{Token: testToken, Source: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return b, srv
}

func TestAWSConfig(t *testing.T) {
	b, srv := awsExtension(t)
	t.Setenv(EnvRegion, "eu-west-1")
	cfg, err := AWSConfig(context.Background(), "reports", WithBaseURL(srv.URL()), WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "eu-west-1" {
		t.Errorf("Region %q", cfg.Region)
	}
	cache, ok := cfg.Credentials.(*aws.CredentialsCache)
	if !ok || !cache.IsCredentialsProvider((*endpointcreds.Provider)(nil)) {
		t.Fatalf("Credentials %T is not a cache of the container credentials provider", cfg.Credentials)
	}
	c, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := b.AWSSessions()[0]
	if c.AccessKeyID != s.AccessKeyID || c.SecretAccessKey != s.SecretAccessKey || c.SessionToken != s.SessionToken ||
		!c.CanExpire || c.Source != endpointcreds.ProviderName {
		t.Fatalf("credentials %+v, session %+v", c, s)
	}
	// The cache asks again AWSExpiryWindow before the session's Expiration.
	if d := s.Expiration.Sub(c.Expires); d != AWSExpiryWindow {
		t.Errorf("cached until %v before Expiration, want %v", d, AWSExpiryWindow)
	}
}

// Inside Lambda no option is needed: EPHEMERA_PORT and AWS_SESSION_TOKEN say where and how.
func TestAWSConfigFromEnvironment(t *testing.T) {
	b, srv := awsExtension(t)
	_, port, _ := net.SplitHostPort(srv.Addr())
	t.Setenv(EnvPort, port)
	t.Setenv(EnvToken, testToken)
	t.Setenv(EnvRegion, "us-east-1")
	cfg, err := AWSConfig(context.Background(), "reports")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil || c.AccessKeyID != b.AWSSessions()[0].AccessKeyID {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestAWSConfigErrors(t *testing.T) {
	_, srv := awsExtension(t)
	ctx := context.Background()
	if _, err := AWSConfig(ctx, "", WithBaseURL(srv.URL()), WithToken(testToken)); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := AWSConfig(ctx, "reports", WithBaseURL(srv.URL()), WithToken("")); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("no token: %v", err)
	}
	if _, err := AWSConfig(ctx, "reports", WithPort(0)); err == nil {
		t.Error("port 0 accepted")
	}
	// Errors of the extension surface when credentials are retrieved, with its code.
	for _, tc := range []struct{ name, token, code string }{
		{"reports", "wrong-token", "unauthorized"},
		{"nope", testToken, "not_found"},
	} {
		cfg, err := AWSConfig(ctx, tc.name, WithBaseURL(srv.URL()), WithToken(tc.token))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = cfg.Credentials.Retrieve(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.code) || strings.Contains(err.Error(), testToken) {
			t.Errorf("%s with token %q: %v", tc.name, tc.token, err)
		}
	}
}

package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const assumePolicy = `
@id("reports-assume")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports")
when { principal.role == "reports-api" };
`

// post signs a proof as id and posts body (with the proof as "identity")
// to the broker at base.
func post(t *testing.T, s *stack.Stack, base, path string, id stsserver.Identity, body map[string]any) (int, []byte) {
	t.Helper()
	proof, err := attest.Sign(context.Background(), aws.Credentials{
		AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken,
	}, s.Region, s.Audience, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body["identity"] = proof
	data, _ := json.Marshal(body)
	resp, err := http.Post(base+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// TestAWSProfilesAreServed: an AWS profile of Options becomes the broker's
// aws_profiles entry and a role at the STS emulator that trusts the
// broker's own identity, so that a permitted workload gets a session the
// broker assumed in its name; a further role of Options is known to STS.
// At Debug level no secret of the session reaches the output.
func TestAWSProfilesAreServed(t *testing.T) {
	t.Parallel()
	out := &observe.Buffer{}
	other := stsserver.Role{ARN: stack.RoleARN("audit-writer"), TrustedPrincipals: []string{stack.Account}}
	s := stack.StartTB(t, stack.Options{
		Policies:    assumePolicy,
		AWSProfiles: []stack.AWSProfile{{Name: "reports", RoleARN: stack.RoleARN("reports-read"), MaxTTL: 2 * time.Hour}},
		Roles:       []stsserver.Role{other},
		Output:      out,
		LogLevel:    slog.LevelDebug,
	})
	if p := s.Config.AWSProfiles["reports"]; p == nil || p.RoleARN != stack.RoleARN("reports-read") || p.MaxTTL != 2*time.Hour {
		t.Fatalf("the broker's aws_profiles: %+v", s.Config.AWSProfiles)
	}
	if s.BrokerIdentity.ARN != "arn:aws:sts::123456789012:assumed-role/ephemera-broker/broker" {
		t.Fatalf("BrokerIdentity = %s", s.BrokerIdentity.ARN)
	}

	id := s.Workload("reports-api", "reports-fn")
	status, raw := post(t, s, s.BrokerURL, api.PathAWSCredentials, id, map[string]any{"profile": "reports"})
	var cred api.AWSCredential
	if status != http.StatusCreated || api.UnmarshalAnswer(raw, &cred) != nil {
		t.Fatalf("aws-credentials: %d %s", status, raw)
	}
	var session *stsserver.Session
	for _, se := range s.STS.Sessions() {
		if se.Identity.AccessKeyID == cred.AccessKeyID {
			session = &se
		}
	}
	if session == nil || session.RoleARN != stack.RoleARN("reports-read") || session.CallerARN != s.BrokerIdentity.ARN || session.RoleSessionName != "reports-fn" {
		t.Fatalf("no STS session of reports-read assumed by the broker for the answer: %+v", session)
	}

	status, raw = post(t, s, s.BrokerURL, api.PathAWSCredentials, s.Workload("orders-api-x", "x-fn"), map[string]any{"profile": "reports"})
	if status != http.StatusForbidden {
		t.Fatalf("a workload no policy permits: %d %s", status, raw)
	}

	// The role of Options.Roles is in STS's table: the account it trusts,
	// the broker's identity among it, may assume it.
	client := sts.New(sts.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.STS.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(s.BrokerIdentity.AccessKeyID,
			s.BrokerIdentity.SecretAccessKey, s.BrokerIdentity.SessionToken),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(other.ARN), RoleSessionName: aws.String("check")}); err != nil {
		t.Fatalf("AssumeRole of Options.Roles' role: %v", err)
	}
	for _, secret := range []string{cred.SecretAccessKey, cred.SessionToken, s.BrokerIdentity.SecretAccessKey, id.SecretAccessKey} {
		if strings.Contains(out.String(), secret) {
			t.Fatal("a secret key or session token is in the broker's output")
		}
	}
	if !strings.Contains(out.String(), `"level":"DEBUG"`) && !strings.Contains(out.String(), `"level":"INFO"`) {
		t.Fatalf("no broker logs in Output:\n%s", out)
	}
}

// TestStartBrokerServesASecondBroker: StartBroker starts another broker
// over the same database and policies (here through an admin DSN of its
// own); it issues, and Close stops it while the stack's broker goes on.
func TestStartBrokerServesASecondBroker(t *testing.T) {
	t.Parallel()
	s := stack.StartTB(t, stack.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	second, err := s.StartBroker(ctx, stack.BrokerOptions{AdminDSN: s.AdminDSN + "&application_name=second"})
	if err != nil {
		t.Fatal(err)
	}
	if second.URL == s.BrokerURL {
		t.Fatal("the second broker serves on the stack's URL")
	}
	id := s.Workload("orders-api-second", "fn")
	if status, raw := post(t, s, second.URL, api.PathCredentials, id, map[string]any{"database": "orders", "role": "readonly"}); status != http.StatusCreated {
		t.Fatalf("issue at the second broker: %d %s", status, raw)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(second.URL + api.PathHealth); err == nil {
		t.Fatal("the second broker still answers after Close")
	}
	if status, raw := post(t, s, s.BrokerURL, api.PathCredentials, id, map[string]any{"database": "orders", "role": "readonly"}); status != http.StatusCreated {
		t.Fatalf("issue at the stack's broker after the second closed: %d %s", status, raw)
	}
}

// TestOptionsAreCheckedBeforeStarting: two sources of aws_profiles, or a
// role that is not a role ARN, fail Start before anything runs.
func TestOptionsAreCheckedBeforeStarting(t *testing.T) {
	for name, opts := range map[string]stack.Options{
		"profiles twice": {
			Config:      stack.DefaultConfig + "aws_profiles:\n  x: {role_arn: arn:aws:iam::123456789012:role/x}\n",
			AWSProfiles: []stack.AWSProfile{{Name: "y"}},
		},
		"bad profile role": {AWSProfiles: []stack.AWSProfile{{Name: "y", RoleARN: "arn:aws:iam::123:role/short-account"}}},
		"bad role":         {Roles: []stsserver.Role{{ARN: "arn:aws:sts::123456789012:assumed-role/r/s"}}},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := stack.Start(context.Background(), opts)
			if err == nil {
				s.Close()
				t.Fatal("Start accepted the options")
			}
			if !strings.HasPrefix(err.Error(), "stack: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

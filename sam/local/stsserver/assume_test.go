package stsserver

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
)

const (
	targetRoleARN = "arn:aws:iam::123456789012:role/target-role"
	// callerRoleARN is the role form of tempID's assumed-role ARN.
	callerRoleARN = "arn:aws:iam::123456789012:role/orders-api-role"
	testPolicy    = `{
  "Version": "2012-10-17",
  "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}]
}`
)

// recorder is an HTTP client that keeps every response body and the
// Authorization header of every request, so that tests can check that no
// secret leaks into an answer.
type recorder struct {
	mu      sync.Mutex
	bodies  [][]byte
	authzes []string
}

func (rec *recorder) Do(req *http.Request) (*http.Response, error) {
	authz := req.Header.Get("Authorization")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	rec.mu.Lock()
	rec.bodies = append(rec.bodies, b)
	rec.authzes = append(rec.authzes, authz)
	rec.mu.Unlock()
	return resp, nil
}

func (rec *recorder) last() ([]byte, string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.bodies) == 0 {
		return nil, ""
	}
	return rec.bodies[len(rec.bodies)-1], rec.authzes[len(rec.authzes)-1]
}

// sdkClient returns a real aws-sdk-go-v2 STS client that talks to s with
// the static credentials of id, in region (default us-east-1), without
// retries.
func sdkClient(s *Server, id Identity, region string, rec *recorder) *sts.Client {
	if region == "" {
		region = "us-east-1"
	}
	opts := sts.Options{
		Region:           region,
		BaseEndpoint:     aws.String(s.URL()),
		Credentials:      credentials.NewStaticCredentialsProvider(id.AccessKeyID, id.SecretAccessKey, id.SessionToken),
		RetryMaxAttempts: 1,
	}
	if rec != nil {
		opts.HTTPClient = rec
	}
	return sts.New(opts)
}

// apiError returns the code, message and HTTP status of an SDK error.
func apiErr(t *testing.T, err error) (code, message string, status int) {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got success")
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("not an API error: %v", err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return ae.ErrorCode(), ae.ErrorMessage(), status
}

func assumeInput(session string) *sts.AssumeRoleInput {
	return &sts.AssumeRoleInput{RoleArn: aws.String(targetRoleARN), RoleSessionName: aws.String(session)}
}

// noSecrets fails t if body contains any of the secrets.
func noSecrets(t *testing.T, body []byte, authz string, ids ...Identity) {
	t.Helper()
	secrets := []string{}
	if i := strings.Index(authz, "Signature="); i >= 0 {
		secrets = append(secrets, authz[i+len("Signature="):])
	}
	for _, id := range ids {
		secrets = append(secrets, id.SecretAccessKey, id.SessionToken)
	}
	for _, sec := range secrets {
		if sec != "" && bytes.Contains(body, []byte(sec)) {
			t.Errorf("answer leaks a secret: %s", body)
		}
	}
}

var assumedRoleIDRE = regexp.MustCompile(`^AROA[A-Z0-9]{17}:`)

func TestAssumeRoleSDKChain(t *testing.T) {
	s := StartTB(t, tempID, longID)
	s.AddRole(Role{ARN: targetRoleARN, MaxSessionDuration: 2 * time.Hour, TrustedPrincipals: []string{callerRoleARN}})
	rec := &recorder{}
	ctx := context.Background()

	before := time.Now().UTC()
	out, err := sdkClient(s, tempID, "", rec).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:           aws.String(targetRoleARN),
		RoleSessionName:   aws.String("broker-session"),
		DurationSeconds:   aws.Int32(900),
		Policy:            aws.String(testPolicy),
		SourceIdentity:    aws.String("alice@example.com"),
		Tags:              []ststypes.Tag{{Key: aws.String("team"), Value: aws.String("orders")}, {Key: aws.String("env"), Value: aws.String("")}},
		TransitiveTagKeys: []string{"team"},
		ExternalId:        aws.String("ext-123"),
	})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	after := time.Now().UTC()

	c := out.Credentials
	if c == nil || !regexp.MustCompile(`^ASIA[A-Z0-9]{16}$`).MatchString(aws.ToString(c.AccessKeyId)) ||
		len(aws.ToString(c.SecretAccessKey)) != 40 || len(aws.ToString(c.SessionToken)) < 100 {
		t.Fatalf("credentials %+v", c)
	}
	if exp := aws.ToTime(c.Expiration); exp.Before(before.Add(899*time.Second)) || exp.After(after.Add(900*time.Second)) {
		t.Errorf("Expiration %v, want about %v", exp, before.Add(900*time.Second))
	}
	wantARN := "arn:aws:sts::123456789012:assumed-role/target-role/broker-session"
	u := out.AssumedRoleUser
	if u == nil || aws.ToString(u.Arn) != wantARN || !assumedRoleIDRE.MatchString(aws.ToString(u.AssumedRoleId)) ||
		!strings.HasSuffix(aws.ToString(u.AssumedRoleId), ":broker-session") {
		t.Errorf("AssumedRoleUser %+v", u)
	}
	if aws.ToString(out.SourceIdentity) != "alice@example.com" {
		t.Errorf("SourceIdentity %q", aws.ToString(out.SourceIdentity))
	}
	if p := aws.ToInt32(out.PackedPolicySize); p < 1 || p > 100 {
		t.Errorf("PackedPolicySize %d", p)
	}
	body, _ := rec.last()
	for _, want := range []string{`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">`, "<AssumeRoleResult>",
		"<Credentials>", "<AssumedRoleUser>", "<PackedPolicySize>", "<SourceIdentity>alice@example.com</SourceIdentity>", "<RequestId>"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("response lacks %s:\n%s", want, body)
		}
	}
	if !regexp.MustCompile(`<Expiration>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</Expiration>`).Match(body) {
		t.Errorf("Expiration is not ISO 8601:\n%s", body)
	}

	// The session is recorded.
	sessions := s.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	se := sessions[0]
	if se.RoleARN != targetRoleARN || se.RoleSessionName != "broker-session" || se.CallerARN != tempID.ARN ||
		se.SourceIdentity != "alice@example.com" || se.Duration != 900*time.Second || se.Policy != testPolicy ||
		se.ExternalID != "ext-123" || se.Identity.AccessKeyID != aws.ToString(c.AccessKeyId) ||
		se.Identity.SecretAccessKey != aws.ToString(c.SecretAccessKey) || se.Identity.ARN != wantARN ||
		se.Identity.Account != "123456789012" || se.Identity.UserID != aws.ToString(u.AssumedRoleId) ||
		se.AssumedRoleID != aws.ToString(u.AssumedRoleId) || int32(se.PackedPolicySize) != aws.ToInt32(out.PackedPolicySize) ||
		!se.Expiration.Equal(aws.ToTime(c.Expiration)) || !se.Identity.Expiration.Equal(se.Expiration) ||
		!se.Expiration.Equal(se.Issued.Add(900*time.Second).Truncate(time.Second)) {
		t.Errorf("session %+v", se)
	}
	if fmt.Sprint(se.Tags) != "[{team orders} {env }]" || fmt.Sprint(se.TransitiveTagKeys) != "[team]" {
		t.Errorf("tags %v transitive %v", se.Tags, se.TransitiveTagKeys)
	}
	// Sessions returns copies.
	sessions[0].Tags[0].Value = "changed"
	if s.Sessions()[0].Tags[0].Value != "orders" {
		t.Error("Sessions does not return copies")
	}

	// The minted keys work, through the SDK.
	minted := Identity{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)}
	gci, err := sdkClient(s, minted, "", rec).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity with minted keys: %v", err)
	}
	if aws.ToString(gci.Arn) != wantARN || aws.ToString(gci.Account) != "123456789012" || aws.ToString(gci.UserId) != aws.ToString(u.AssumedRoleId) {
		t.Errorf("GetCallerIdentity = %s %s %s", aws.ToString(gci.Arn), aws.ToString(gci.Account), aws.ToString(gci.UserId))
	}
	// The minted key without its token, or with a wrong secret, is refused.
	noToken := minted
	noToken.SessionToken = ""
	_, err = sdkClient(s, noToken, "", rec).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if code, _, status := apiErr(t, err); code != "InvalidClientTokenId" || status != 403 {
		t.Errorf("without token: %s %d", code, status)
	}
	badSecret := minted
	badSecret.SecretAccessKey = strings.Repeat("x", 40)
	_, err = sdkClient(s, badSecret, "", rec).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if code, _, status := apiErr(t, err); code != "SignatureDoesNotMatch" || status != 403 {
		t.Errorf("bad secret: %s %d", code, status)
	}

	// After the expiration the minted keys are refused; other keys are not
	// affected by the key's expiry (only by the clock).
	s.SetClock(func() time.Time { return time.Now().Add(901 * time.Second) })
	_, err = sdkClient(s, minted, "", rec).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	code, msg, status := apiErr(t, err)
	if code != "ExpiredToken" || status != 403 || msg != "The security token included in the request is expired" {
		t.Errorf("after expiration: %s %d %q", code, status, msg)
	}
	b, authz := rec.last()
	noSecrets(t, b, authz, tempID, minted)
	_, err = sdkClient(s, minted, "", rec).AssumeRole(ctx, assumeInput("again"))
	if code, _, _ := apiErr(t, err); code != "ExpiredToken" {
		t.Errorf("AssumeRole with expired keys: %s", code)
	}
	s.SetClock(nil)
	if _, err := sdkClient(s, minted, "", rec).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("back before expiration: %v", err)
	}
}

func TestAssumeRoleTrust(t *testing.T) {
	s := StartTB(t, tempID, longID)
	ctx := context.Background()
	rec := &recorder{}
	role := func(arn string, trusted ...string) string {
		s.AddRole(Role{ARN: arn, TrustedPrincipals: trusted})
		return arn
	}
	tests := []struct {
		name   string
		caller Identity
		role   string
		ok     bool
	}{
		{"role form of the caller", tempID, role("arn:aws:iam::123456789012:role/r1", callerRoleARN), true},
		{"role form with a path", tempID, role("arn:aws:iam::123456789012:role/r2", "arn:aws:iam::123456789012:role/service/orders-api-role"), true},
		{"exact assumed-role session", tempID, role("arn:aws:iam::123456789012:role/r3", tempID.ARN), true},
		{"other session of the same role", tempID, role("arn:aws:iam::123456789012:role/r4", "arn:aws:sts::123456789012:assumed-role/orders-api-role/other"), false},
		{"same role name in another account", tempID, role("arn:aws:iam::123456789012:role/r5", "arn:aws:iam::999999999999:role/orders-api-role"), false},
		{"other role", tempID, role("arn:aws:iam::123456789012:role/r6", "arn:aws:iam::123456789012:role/orders-api-role-2"), false},
		{"account root", longID, role("arn:aws:iam::123456789012:role/r7", "arn:aws:iam::210987654321:root"), true},
		{"bare account", longID, role("arn:aws:iam::123456789012:role/r8", "210987654321"), true},
		{"IAM user", longID, role("arn:aws:iam::123456789012:role/r9", longID.ARN), true},
		{"untrusted IAM user", longID, role("arn:aws:iam::123456789012:role/r10", callerRoleARN), false},
		{"empty trust policy", tempID, role("arn:aws:iam::123456789012:role/r11"), false},
		{"unknown role", tempID, "arn:aws:iam::123456789012:role/nope", false},
		{"role ARN case matters", tempID, "arn:aws:iam::123456789012:role/R1", false},
		{"not an ARN", tempID, "this-is-not-an-arn-at-all", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.Sessions())
			_, err := sdkClient(s, tc.caller, "", rec).AssumeRole(ctx, &sts.AssumeRoleInput{
				RoleArn: aws.String(tc.role), RoleSessionName: aws.String("s1"),
			})
			if tc.ok {
				if err != nil {
					t.Fatalf("AssumeRole: %v", err)
				}
				return
			}
			code, msg, status := apiErr(t, err)
			want := "User: " + tc.caller.ARN + " is not authorized to perform: sts:AssumeRole on resource: " + tc.role
			if code != "AccessDenied" || status != 403 || msg != want {
				t.Errorf("got %s %d %q, want AccessDenied 403 %q", code, status, msg, want)
			}
			body, authz := rec.last()
			noSecrets(t, body, authz, tempID, longID)
			if len(s.Sessions()) != before {
				t.Error("a denied request minted a session")
			}
		})
	}
}

func TestAssumeRoleValidation(t *testing.T) {
	s := StartTB(t, tempID, longID)
	s.AddRole(Role{ARN: targetRoleARN, MaxSessionDuration: 2 * time.Hour, TrustedPrincipals: []string{callerRoleARN, longID.ARN}})
	s.AddRole(Role{ARN: "arn:aws:iam::123456789012:role/default-max", TrustedPrincipals: []string{longID.ARN}})
	ctx := context.Background()
	rec := &recorder{}

	tags := func(n int, key func(i int) string) []ststypes.Tag {
		out := make([]ststypes.Tag, n)
		for i := range out {
			out[i] = ststypes.Tag{Key: aws.String(key(i)), Value: aws.String("v")}
		}
		return out
	}
	keyN := func(i int) string { return "k" + strconv.Itoa(i) }

	tests := []struct {
		name     string
		caller   Identity // default longID (not role chaining)
		edit     func(in *sts.AssumeRoleInput)
		wantCode string // "" for success
		wantMsg  string // exact message, or substring if it ends in "…"
	}{
		{name: "DurationSeconds 900", edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(900) }},
		{name: "DurationSeconds at role max", edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(7200) }},
		{name: "DurationSeconds 899", edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(899) },
			wantCode: "ValidationError",
			wantMsg:  "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900"},
		{name: "DurationSeconds above role max", edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(7201) },
			wantCode: "ValidationError", wantMsg: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."},
		{name: "DurationSeconds above default role max", edit: func(in *sts.AssumeRoleInput) {
			in.RoleArn = aws.String("arn:aws:iam::123456789012:role/default-max")
			in.DurationSeconds = aws.Int32(3601)
		}, wantCode: "ValidationError", wantMsg: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."},
		{name: "DurationSeconds above 12 hours", edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(43201) },
			wantCode: "ValidationError",
			wantMsg:  "1 validation error detected: Value '43201' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200"},
		{name: "role chaining limited to one hour", caller: tempID, edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(3601) },
			wantCode: "ValidationError", wantMsg: "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."},
		{name: "role chaining one hour", caller: tempID, edit: func(in *sts.AssumeRoleInput) { in.DurationSeconds = aws.Int32(3600) }},

		{name: "session name 64 chars", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String(strings.Repeat("a", 64)) }},
		{name: "session name all allowed chars", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String("aZ09_+=,.@-") }},
		{name: "session name 65 chars", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String(strings.Repeat("a", 65)) },
			wantCode: "ValidationError", wantMsg: "Member must have length less than or equal to 64…"},
		{name: "session name 1 char", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String("a") },
			wantCode: "ValidationError",
			wantMsg:  "1 validation error detected: Value 'a' at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2"},
		{name: "session name with space", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String("bad name") },
			wantCode: "ValidationError",
			wantMsg:  `1 validation error detected: Value 'bad name' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\w+=,.@-]*`},
		{name: "session name with slash", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String("a/b") },
			wantCode: "ValidationError", wantMsg: "at 'roleSessionName'…"},
		{name: "session name non-ASCII letter", edit: func(in *sts.AssumeRoleInput) { in.RoleSessionName = aws.String("café") },
			wantCode: "ValidationError", wantMsg: "regular expression pattern…"},
		{name: "two violations", edit: func(in *sts.AssumeRoleInput) {
			in.RoleSessionName = aws.String("x")
			in.DurationSeconds = aws.Int32(60)
		}, wantCode: "ValidationError", wantMsg: "2 validation errors detected: Value 'x' at 'roleSessionName'…"},

		{name: "source identity", edit: func(in *sts.AssumeRoleInput) { in.SourceIdentity = aws.String("alice@example.com") }},
		{name: "source identity 1 char", edit: func(in *sts.AssumeRoleInput) { in.SourceIdentity = aws.String("a") },
			wantCode: "ValidationError", wantMsg: "at 'sourceIdentity' failed to satisfy constraint: Member must have length greater than or equal to 2…"},
		{name: "source identity 65 chars", edit: func(in *sts.AssumeRoleInput) { in.SourceIdentity = aws.String(strings.Repeat("s", 65)) },
			wantCode: "ValidationError", wantMsg: "at 'sourceIdentity' failed to satisfy constraint: Member must have length less than or equal to 64…"},
		{name: "source identity aws: prefix", edit: func(in *sts.AssumeRoleInput) { in.SourceIdentity = aws.String("aws:me") },
			wantCode: "ValidationError", wantMsg: "at 'sourceIdentity' failed to satisfy constraint: Member must satisfy regular expression pattern…"},

		{name: "policy", edit: func(in *sts.AssumeRoleInput) { in.Policy = aws.String(testPolicy) }},
		{name: "policy not JSON", edit: func(in *sts.AssumeRoleInput) { in.Policy = aws.String(`{"Version": "2012-10-17",`) },
			wantCode: "MalformedPolicyDocument", wantMsg: "This policy contains invalid Json"},
		{name: "policy not an object", edit: func(in *sts.AssumeRoleInput) { in.Policy = aws.String(`["Statement"]`) },
			wantCode: "MalformedPolicyDocument", wantMsg: "This policy contains invalid Json"},
		{name: "policy 2048 chars", edit: func(in *sts.AssumeRoleInput) {
			in.Policy = aws.String(`{"Sid":"` + strings.Repeat("a", 2048-10) + `"}`)
		}},
		{name: "policy 2049 chars", edit: func(in *sts.AssumeRoleInput) {
			in.Policy = aws.String(`{"Sid":"` + strings.Repeat("a", 2049-10) + `"}`)
		}, wantCode: "ValidationError",
			wantMsg: "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to 2048"},
		{name: "policy and tags too large when packed", edit: func(in *sts.AssumeRoleInput) {
			in.Policy = aws.String(`{"Sid":"` + strings.Repeat("a", 2000) + `"}`)
			in.Tags = tags(1, func(int) string { return strings.Repeat("k", 100) })
		}, wantCode: "PackedPolicyTooLarge", wantMsg: "Packed policy consumes 104% of allotted space, please use smaller policy for this session."},

		{name: "50 tags", edit: func(in *sts.AssumeRoleInput) { in.Tags = tags(50, keyN) }},
		{name: "51 tags", edit: func(in *sts.AssumeRoleInput) { in.Tags = tags(51, keyN) },
			wantCode: "ValidationError",
			wantMsg:  "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"},
		{name: "tag key 128 chars", edit: func(in *sts.AssumeRoleInput) { in.Tags = tags(1, func(int) string { return strings.Repeat("k", 128) }) }},
		{name: "tag key 129 chars", edit: func(in *sts.AssumeRoleInput) { in.Tags = tags(1, func(int) string { return strings.Repeat("k", 129) }) },
			wantCode: "ValidationError", wantMsg: "at 'tags.1.member.key' failed to satisfy constraint: Member must have length less than or equal to 128…"},
		{name: "tag key empty", edit: func(in *sts.AssumeRoleInput) { in.Tags = tags(1, func(int) string { return "" }) },
			wantCode: "ValidationError", wantMsg: "at 'tags.1.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1…"},
		{name: "tag value 256 chars", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = []ststypes.Tag{{Key: aws.String("k"), Value: aws.String(strings.Repeat("v", 256))}}
		}},
		{name: "tag value 257 chars", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = []ststypes.Tag{{Key: aws.String("k"), Value: aws.String(strings.Repeat("v", 257))}}
		}, wantCode: "ValidationError", wantMsg: "at 'tags.1.member.value' failed to satisfy constraint: Member must have length less than or equal to 256…"},
		{name: "tag key bad char", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = []ststypes.Tag{{Key: aws.String("a"), Value: aws.String("ok")}, {Key: aws.String("b*"), Value: aws.String("ok")}}
		}, wantCode: "ValidationError", wantMsg: "at 'tags.2.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern…"},
		{name: "tag key unicode letters and spaces", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = []ststypes.Tag{{Key: aws.String("Équipe x:y/z"), Value: aws.String("ünï 1")}}
		}},
		{name: "duplicate tag keys ignoring case", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = []ststypes.Tag{{Key: aws.String("Team"), Value: aws.String("a")}, {Key: aws.String("team"), Value: aws.String("b")}}
		}, wantCode: "ValidationError", wantMsg: "Duplicate tag keys found. Please note that Tag keys are case insensitive."},
		{name: "transitive key not among tags", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = tags(1, keyN)
			in.TransitiveTagKeys = []string{"other"}
		}, wantCode: "ValidationError", wantMsg: "The transitive tag key other…"},
		{name: "51 transitive keys", edit: func(in *sts.AssumeRoleInput) {
			in.Tags = tags(50, keyN)
			in.TransitiveTagKeys = make([]string, 51)
			for i := range in.TransitiveTagKeys {
				in.TransitiveTagKeys[i] = keyN(i % 50)
			}
		}, wantCode: "ValidationError", wantMsg: "at 'transitiveTagKeys' failed to satisfy constraint: Member must have length less than or equal to 50…"},

		{name: "role ARN too short", edit: func(in *sts.AssumeRoleInput) { in.RoleArn = aws.String("arn:aws:iam::1:r/x") },
			wantCode: "ValidationError",
			wantMsg:  "1 validation error detected: Value 'arn:aws:iam::1:r/x' at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20"},
		{name: "external id bad char", edit: func(in *sts.AssumeRoleInput) { in.ExternalId = aws.String("has space") },
			wantCode: "ValidationError", wantMsg: "at 'externalId'…"},
		{name: "token code not six digits", edit: func(in *sts.AssumeRoleInput) { in.TokenCode = aws.String("12345a") },
			wantCode: "ValidationError", wantMsg: "at 'tokenCode'…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			caller := tc.caller
			if caller.AccessKeyID == "" {
				caller = longID
			}
			in := assumeInput("validation")
			tc.edit(in)
			before := len(s.Sessions())
			out, err := sdkClient(s, caller, "", rec).AssumeRole(ctx, in)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("AssumeRole: %v", err)
				}
				if len(s.Sessions()) != before+1 || aws.ToString(out.Credentials.AccessKeyId) == "" {
					t.Errorf("no session minted")
				}
				return
			}
			code, msg, status := apiErr(t, err)
			wantStatus := 400
			if code != tc.wantCode || status != wantStatus {
				t.Errorf("got %s %d (%q), want %s %d", code, status, msg, tc.wantCode, wantStatus)
			}
			if sub, ok := strings.CutSuffix(tc.wantMsg, "…"); ok {
				if !strings.Contains(msg, sub) {
					t.Errorf("message %q, want it to contain %q", msg, sub)
				}
			} else if msg != tc.wantMsg {
				t.Errorf("message %q\nwant    %q", msg, tc.wantMsg)
			}
			if len(s.Sessions()) != before {
				t.Error("a rejected request minted a session")
			}
			body, authz := rec.last()
			noSecrets(t, body, authz, tempID, longID)
		})
	}
}

func TestAssumeRoleDefaults(t *testing.T) {
	s := StartTB(t, longID)
	s.AddRole(Role{ARN: targetRoleARN, MaxSessionDuration: 12 * time.Hour, TrustedPrincipals: []string{longID.ARN}})
	out, err := sdkClient(s, longID, "", nil).AssumeRole(context.Background(), assumeInput("defaults"))
	if err != nil {
		t.Fatal(err)
	}
	se := s.Sessions()[0]
	if se.Duration != time.Hour || out.PackedPolicySize != nil || out.SourceIdentity != nil || se.PackedPolicySize != 0 ||
		se.SourceIdentity != "" || len(se.Tags) != 0 || se.Policy != "" {
		t.Errorf("session %+v, packed %v", se, out.PackedPolicySize)
	}
	if d := aws.ToTime(out.Credentials.Expiration).Sub(se.Issued); d < time.Hour-time.Second || d > time.Hour {
		t.Errorf("default expiration after %v", d)
	}
	// Longer than one hour is fine for a caller that is not a role session.
	if _, err := sdkClient(s, longID, "", nil).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String(targetRoleARN), RoleSessionName: aws.String("long"), DurationSeconds: aws.Int32(43200),
	}); err != nil {
		t.Errorf("12h session: %v", err)
	}
	// Role IDs are stable per role and kept when the role is replaced.
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{longID.ARN}})
	out2, err := sdkClient(s, longID, "", nil).AssumeRole(context.Background(), assumeInput("other"))
	if err != nil {
		t.Fatal(err)
	}
	id1, _, _ := strings.Cut(aws.ToString(out.AssumedRoleUser.AssumedRoleId), ":")
	id2, _, _ := strings.Cut(aws.ToString(out2.AssumedRoleUser.AssumedRoleId), ":")
	if id1 != id2 {
		t.Errorf("role id changed: %s %s", id1, id2)
	}
	// The replacement's default maximum (1h) applies.
	_, err = sdkClient(s, longID, "", nil).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String(targetRoleARN), RoleSessionName: aws.String("long"), DurationSeconds: aws.Int32(3601),
	})
	if code, _, _ := apiErr(t, err); code != "ValidationError" {
		t.Errorf("after replace: %s", code)
	}
}

func TestAssumeRoleSourceIdentityAndChaining(t *testing.T) {
	s := StartTB(t, longID)
	ctx := context.Background()
	first := "arn:aws:iam::123456789012:role/first"
	second := "arn:aws:iam::123456789012:role/second"
	s.AddRole(Role{ARN: first, TrustedPrincipals: []string{longID.ARN}, RequireSourceIdentity: true, MaxSessionDuration: 4 * time.Hour})
	s.AddRole(Role{ARN: second, TrustedPrincipals: []string{first}, RequireSourceIdentity: true, MaxSessionDuration: 4 * time.Hour})

	// RequireSourceIdentity.
	_, err := sdkClient(s, longID, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(first), RoleSessionName: aws.String("s1")})
	if code, _, status := apiErr(t, err); code != "AccessDenied" || status != 403 {
		t.Fatalf("without SourceIdentity: %s %d", code, status)
	}
	out, err := sdkClient(s, longID, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(first), RoleSessionName: aws.String("s1"), SourceIdentity: aws.String("alice"),
		Tags: []ststypes.Tag{
			{Key: aws.String("Project"), Value: aws.String("p1")},
			{Key: aws.String("cost"), Value: aws.String("c1")},
		},
		TransitiveTagKeys: []string{"project"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	hop := Identity{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)}

	// The first session assumes the second role: it inherits the source
	// identity and the transitive tag, and is limited to one hour.
	_, err = sdkClient(s, hop, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(second), RoleSessionName: aws.String("s2"), DurationSeconds: aws.Int32(3601),
	})
	if code, _, _ := apiErr(t, err); code != "ValidationError" {
		t.Errorf("chained 3601s: %s", code)
	}
	_, err = sdkClient(s, hop, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(second), RoleSessionName: aws.String("s2"), SourceIdentity: aws.String("mallory"),
	})
	if code, msg, _ := apiErr(t, err); code != "AccessDenied" || !strings.Contains(msg, "sts:SetSourceIdentity") {
		t.Errorf("changing the source identity: %s %q", code, msg)
	}
	_, err = sdkClient(s, hop, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(second), RoleSessionName: aws.String("s2"),
		Tags: []ststypes.Tag{{Key: aws.String("PROJECT"), Value: aws.String("p2")}},
	})
	if code, _, _ := apiErr(t, err); code != "ValidationError" {
		t.Errorf("overriding an inherited tag: %s", code)
	}
	out2, err := sdkClient(s, hop, "", nil).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(second), RoleSessionName: aws.String("s2"),
		Tags: []ststypes.Tag{{Key: aws.String("cost"), Value: aws.String("c2")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out2.SourceIdentity) != "alice" {
		t.Errorf("inherited SourceIdentity %q", aws.ToString(out2.SourceIdentity))
	}
	sessions := s.Sessions()
	se := sessions[len(sessions)-1]
	if se.CallerARN != "arn:aws:sts::123456789012:assumed-role/first/s1" || se.SourceIdentity != "alice" ||
		fmt.Sprint(se.Tags) != "[{Project p1} {cost c2}]" || fmt.Sprint(se.TransitiveTagKeys) != "[Project]" ||
		se.Identity.ARN != "arn:aws:sts::123456789012:assumed-role/second/s2" {
		t.Errorf("chained session %+v", se)
	}
}

func TestAssumeRoleRegionDisabled(t *testing.T) {
	s := StartTB(t, tempID)
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{callerRoleARN}})
	s.SetDisabledRegions("eu-west-1")
	ctx := context.Background()
	_, err := sdkClient(s, tempID, "eu-west-1", nil).AssumeRole(ctx, assumeInput("region-test"))
	code, msg, status := apiErr(t, err)
	if code != "RegionDisabledException" || status != 403 || !strings.Contains(msg, "account:123456789012") {
		t.Errorf("disabled region: %s %d %q", code, status, msg)
	}
	var rde *ststypes.RegionDisabledException
	if !errors.As(err, &rde) {
		t.Errorf("SDK did not map the error to RegionDisabledException: %T", err)
	}
	if _, err := sdkClient(s, tempID, "us-east-1", nil).AssumeRole(ctx, assumeInput("region-test")); err != nil {
		t.Errorf("enabled region: %v", err)
	}
	// GetCallerIdentity is not affected.
	if _, err := sdkClient(s, tempID, "eu-west-1", nil).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("GetCallerIdentity in disabled region: %v", err)
	}
	s.SetDisabledRegions()
	if _, err := sdkClient(s, tempID, "eu-west-1", nil).AssumeRole(ctx, assumeInput("region-test")); err != nil {
		t.Errorf("re-enabled region: %v", err)
	}
}

func TestAssumeRoleMalformedPolicySDKType(t *testing.T) {
	s := StartTB(t, longID)
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{longID.ARN}})
	in := assumeInput("policy-test")
	in.Policy = aws.String("not json")
	_, err := sdkClient(s, longID, "", nil).AssumeRole(context.Background(), in)
	var mpd *ststypes.MalformedPolicyDocumentException
	if !errors.As(err, &mpd) {
		t.Errorf("want MalformedPolicyDocumentException, got %T %v", err, err)
	}
}

// assumeBody is the form body of an AssumeRole request.
func assumeBody(params ...string) string {
	v := url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"}}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	return v.Encode()
}

type xmlAssume struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Results []struct {
		AccessKeyID     string `xml:"Credentials>AccessKeyId"`
		SecretAccessKey string `xml:"Credentials>SecretAccessKey"`
		SessionToken    string `xml:"Credentials>SessionToken"`
		Expiration      string `xml:"Credentials>Expiration"`
		Arn             string `xml:"AssumedRoleUser>Arn"`
		AssumedRoleID   string `xml:"AssumedRoleUser>AssumedRoleId"`
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

// TestAssumeRoleExpiryBoundary uses the fixed clock and hand-signed
// requests to pin the exact expiry instant.
func TestAssumeRoleExpiryBoundary(t *testing.T) {
	s := StartTB(t, tempID)
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{callerRoleARN}})
	fixedClock(s, 0)
	resp := send(t, s, signedRequest(t, reqSpec{creds: tempID,
		body: assumeBody("RoleArn", targetRoleARN, "RoleSessionName", "edge", "DurationSeconds", "900")}))
	body := readBody(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/xml" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var res xmlAssume
	if err := xml.Unmarshal(body, &res); err != nil || len(res.Results) != 1 {
		t.Fatalf("%v: %s", err, body)
	}
	r := res.Results[0]
	if r.Expiration != "2025-06-01T12:15:00Z" || !uuidV4.MatchString(res.RequestID) ||
		resp.Header.Get("X-Amzn-Requestid") != res.RequestID {
		t.Errorf("result %+v, request id %q", r, res.RequestID)
	}
	minted := Identity{AccessKeyID: r.AccessKeyID, SecretAccessKey: r.SecretAccessKey, SessionToken: r.SessionToken}

	for _, tc := range []struct {
		at       time.Duration
		wantCode string
	}{
		{0, ""},
		{15*time.Minute - time.Second, ""},
		{15 * time.Minute, "ExpiredToken"},
		{time.Hour, "ExpiredToken"},
	} {
		fixedClock(s, tc.at)
		req := signedRequest(t, reqSpec{creds: minted, at: t0.Add(tc.at)})
		authz := req.Header.Get("Authorization")
		resp := send(t, s, req)
		body := readBody(t, resp)
		if tc.wantCode == "" {
			var gci xmlResult
			if resp.StatusCode != 200 || xml.Unmarshal(body, &gci) != nil || gci.Results[0].Arn != r.Arn || gci.Results[0].UserID != r.AssumedRoleID {
				t.Errorf("at +%v: %d %s", tc.at, resp.StatusCode, body)
			}
			continue
		}
		var e xmlError
		if err := xml.Unmarshal(body, &e); err != nil || resp.StatusCode != 403 || e.Code != tc.wantCode || e.Type != "Sender" ||
			e.Message != "The security token included in the request is expired" {
			t.Errorf("at +%v: %d %s", tc.at, resp.StatusCode, body)
		}
		noSecrets(t, body, authz, tempID, minted)
	}
}

func TestAssumeRoleModes(t *testing.T) {
	s := StartTB(t, tempID)
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{callerRoleARN}})
	fixedClock(s, 0)
	body := assumeBody("RoleArn", targetRoleARN, "RoleSessionName", "mode-sess")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(t *testing.T) (*http.Response, []byte) {
		t.Helper()
		resp, err := sendErr(s, signedRequest(t, reqSpec{creds: tempID, body: body}), noRedirect)
		if err != nil {
			t.Fatal(err)
		}
		return resp, readBody(t, resp)
	}
	accepted := func(t *testing.T, keyID string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.ids[keyID]
		return ok
	}

	t.Run("ModeUnavailable", func(t *testing.T) {
		s.SetMode(ModeUnavailable)
		defer s.SetMode(ModeNormal)
		resp, b := do(t)
		var e xmlError
		if resp.StatusCode != 503 || xml.Unmarshal(b, &e) != nil || e.Code != "ServiceUnavailable" {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
		// Through the SDK (no retries).
		s.SetClock(nil)
		defer fixedClock(s, 0)
		_, err := sdkClient(s, tempID, "", nil).AssumeRole(context.Background(), assumeInput("unavailable"))
		if code, _, status := apiErr(t, err); code != "ServiceUnavailable" || status != 503 {
			t.Errorf("SDK: %s %d", code, status)
		}
		if len(s.Sessions()) != 0 {
			t.Error("minted in ModeUnavailable")
		}
	})
	t.Run("ModeRedirect", func(t *testing.T) {
		s.SetMode(ModeRedirect)
		defer s.SetMode(ModeNormal)
		resp, _ := do(t)
		if resp.StatusCode != 307 || resp.Header.Get("Location") != "http://127.0.0.1:1/" {
			t.Errorf("%d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("ModeJSON", func(t *testing.T) {
		s.SetMode(ModeJSON)
		defer s.SetMode(ModeNormal)
		resp, b := do(t)
		var doc struct {
			R struct {
				Result struct {
					Credentials     struct{ AccessKeyId, SecretAccessKey, SessionToken, Expiration string }
					AssumedRoleUser struct{ AssumedRoleId, Arn string }
				} `json:"AssumeRoleResult"`
				Meta struct{ RequestId string } `json:"ResponseMetadata"`
			} `json:"AssumeRoleResponse"`
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &doc) != nil {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		if doc.R.Result.AssumedRoleUser.Arn != "arn:aws:sts::123456789012:assumed-role/target-role/mode-sess" ||
			doc.R.Result.Credentials.AccessKeyId == "" || !uuidV4.MatchString(doc.R.Meta.RequestId) {
			t.Errorf("JSON body %s", b)
		}
		if accepted(t, doc.R.Result.Credentials.AccessKeyId) {
			t.Error("ModeJSON credentials are accepted")
		}
	})
	t.Run("ModeDoubleResult", func(t *testing.T) {
		s.SetMode(ModeDoubleResult)
		defer s.SetMode(ModeNormal)
		resp, b := do(t)
		var res xmlAssume
		if resp.StatusCode != 200 || xml.Unmarshal(b, &res) != nil || len(res.Results) != 2 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		if res.Results[0].AccessKeyID == res.Results[1].AccessKeyID || res.Results[0].Arn == res.Results[1].Arn {
			t.Errorf("results not different: %+v", res.Results)
		}
		for _, r := range res.Results {
			if accepted(t, r.AccessKeyID) {
				t.Error("ModeDoubleResult credentials are accepted")
			}
		}
	})
	t.Run("ModeSlow", func(t *testing.T) {
		s.mu.Lock()
		s.slowDelay = 100 * time.Millisecond
		s.mu.Unlock()
		s.SetMode(ModeSlow)
		defer s.SetMode(ModeNormal)
		start := time.Now()
		resp, b := do(t)
		if resp.StatusCode != 200 || time.Since(start) < 100*time.Millisecond {
			t.Errorf("%d after %v: %s", resp.StatusCode, time.Since(start), b)
		}
	})
	t.Run("ModeNormal", func(t *testing.T) {
		resp, b := do(t)
		if resp.StatusCode != 200 {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})
}

func TestAddRolePanics(t *testing.T) {
	for _, r := range []Role{
		{ARN: "arn:aws:iam::123456789012:user/alice"},
		{ARN: "arn:aws:iam::1234:role/short-account"},
		{ARN: "arn:aws:iam::123456789012:role/"},
		{ARN: "not-an-arn"},
		{ARN: targetRoleARN, MaxSessionDuration: -time.Second},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddRole(%+v) did not panic", r)
				}
			}()
			New().AddRole(r)
		}()
	}
}

func TestAssumeRoleConcurrency(t *testing.T) {
	s := StartTB(t, tempID)
	s.AddRole(Role{ARN: targetRoleARN, TrustedPrincipals: []string{callerRoleARN}})
	const workers = 6
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx := context.Background()
			out, err := sdkClient(s, tempID, "", nil).AssumeRole(ctx, assumeInput("w"+strconv.Itoa(w)))
			if err != nil {
				errs <- err
				return
			}
			_ = s.Sessions()
			c := out.Credentials
			minted := Identity{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)}
			gci, err := sdkClient(s, minted, "", nil).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
			if err != nil {
				errs <- err
				return
			}
			if want := "arn:aws:sts::123456789012:assumed-role/target-role/w" + strconv.Itoa(w); aws.ToString(gci.Arn) != want {
				errs <- fmt.Errorf("arn %s, want %s", aws.ToString(gci.Arn), want)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(s.Sessions()); n != workers {
		t.Errorf("%d sessions", n)
	}
}

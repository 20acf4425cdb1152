package broker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func (e *env) assume(w workload, profile string, ttl int) answer {
	e.t.Helper()
	body := map[string]any{"identity": e.proof(w), "profile": profile}
	if ttl > 0 {
		body["ttl_seconds"] = ttl
	}
	return e.post("/v1/aws-credentials", body)
}

// TestAWSCredentialsChain: proof → AssumeRole → the session's keys are
// accepted by STS as the profile role, in the workload's name.
func TestAWSCredentialsChain(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("reports-api", "reports-fn")
	a := e.assume(w, "reports-read", 900)
	if a.Status != http.StatusCreated {
		t.Fatalf("assume: %d %s", a.Status, a.Raw)
	}
	for _, k := range []string{"lease_id", "access_key_id", "secret_access_key", "session_token", "expiration"} {
		if a.str(k) == "" {
			t.Fatalf("answer lacks %s: %s", k, a.Raw)
		}
	}
	exp := parseTime(t, a.str("expiration"))
	if d := time.Until(exp); d < 14*time.Minute || d > 16*time.Minute {
		t.Fatalf("expiration in %s, want about 15m", d)
	}
	client := sts.NewFromConfig(aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider(
		a.str("access_key_id"), a.str("secret_access_key"), a.str("session_token"))},
		func(o *sts.Options) { o.BaseEndpoint = aws.String(e.sts.URL()) })
	out, err := client.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	must(t, err)
	if got := aws.ToString(out.Arn); got != "arn:aws:sts::123456789012:assumed-role/reports-read/reports-fn" {
		t.Fatalf("the session is %s", got)
	}
	var sess *struct{}
	_ = sess
	found := false
	for _, s := range e.sts.Sessions() {
		if s.RoleARN == "arn:aws:iam::123456789012:role/reports-read" && s.SourceIdentity == "reports-api" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no session with SourceIdentity reports-api: %+v", e.sts.Sessions())
	}
	row := auditOne(t, a.RequestID)
	if row.Event != "assume" || row.Decision != "allow" || !contains(row.Policies, "reports-assume-read") {
		t.Fatalf("audit %+v", row)
	}
	var si, profile, all string
	must(t, superuser(t).QueryRow(context.Background(), `SELECT source_identity, aws_profile, row_to_json(a)::text
		FROM ephemera.audit_log a WHERE request_id = $1`, a.RequestID).Scan(&si, &profile, &all))
	if si != "reports-api" || profile != "reports-read" {
		t.Fatalf("audit source_identity %q profile %q", si, profile)
	}
	for what, secret := range map[string]string{"secret key": a.str("secret_access_key"), "session token": a.str("session_token")} {
		if strings.Contains(all, secret) || strings.Contains(e.logs.String(), secret) || strings.Contains(e.audits.String(), secret) {
			t.Fatalf("the %s leaked into the audit or logs", what)
		}
	}
	// After Expiration STS refuses the keys.
	e.sts.SetClock(func() time.Time { return exp.Add(time.Second) })
	defer e.sts.SetClock(time.Now)
	if _, err := client.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}); err == nil || !strings.Contains(err.Error(), "ExpiredToken") {
		t.Fatalf("expired keys: %v", err)
	}
}

func TestAWSCredentialsRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("reports-api", "reports-fn")
	cases := []struct {
		name, profile string
		ttl           int
		status        int
		code          string
	}{
		{"profile no policy lists", "billing-admin", 900, 403, "access_denied"},
		{"unconfigured profile", "root", 900, 404, "not_found"},
		{"ttl above the profile's max", "reports-read", 1801, 400, "ttl_exceeds_max"},
		{"ttl below the STS minimum", "reports-read", 899, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			before := len(e.sts.Sessions())
			a := e.assume(w, c.profile, c.ttl)
			if a.Status != c.status || a.code() != c.code {
				t.Fatalf("got %d %s", a.Status, a.Raw)
			}
			if len(e.sts.Sessions()) != before {
				t.Fatal("a refused request reached AssumeRole")
			}
		})
	}
	// Another workload is denied the listed profile too.
	if a := e.assume(e.workload("orders-api-role", "fn"), "reports-read", 900); a.Status != 403 {
		t.Fatalf("orders workload assuming reports-read: %d %s", a.Status, a.Raw)
	}
}

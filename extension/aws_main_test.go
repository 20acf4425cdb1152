package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/ephemera-sh/ephemera/extension/internal/localapitest"
)

// readAWS reads /v1/aws/name as the AWS SDKs do: the token in Authorization.
func (h *harness) readAWS(t *testing.T, name, query string) (int, map[string]any) {
	t.Helper()
	return localapitest.Get(t, h.port, "/v1/aws/"+name+query, "Authorization", h.env["AWS_SESSION_TOKEN"])
}

// An extension with AWS profiles only (no EPHEMERA_CREDENTIALS): sessions assumed at INIT,
// served in the SDKs' container-credentials format, nothing revoked at SHUTDOWN.
func TestLifecycleAWSOnly(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "EPHEMERA_CREDENTIALS")
	h.env["EPHEMERA_AWS_PROFILES"] = "reports=reports-read:30m"
	h.start(context.Background())
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
	if n := h.broker.Count("assume"); n != 1 {
		t.Fatalf("%d assumes at INIT", n)
	}
	s := h.broker.AWSSessions()[0]
	status, body := h.readAWS(t, "reports", "")
	if status != 200 || body["AccessKeyId"] != s.AccessKeyID || body["SecretAccessKey"] != s.SecretAccessKey ||
		body["Token"] != s.SessionToken || body["Expiration"] != s.Expiration.UTC().Format(time.RFC3339) || len(body) != 4 {
		t.Fatalf("read: %d %v", status, body)
	}
	// An unmodified SDK provider reads the same session.
	p := endpointcreds.New("http://127.0.0.1:"+strconv.Itoa(h.port)+"/v1/aws/reports",
		func(o *endpointcreds.Options) { o.AuthorizationToken = h.env["AWS_SESSION_TOKEN"] })
	c, err := p.Retrieve(context.Background())
	if err != nil || c.AccessKeyID != s.AccessKeyID || !c.Expires.Equal(s.Expiration) {
		t.Fatalf("SDK: %+v %v", c, err)
	}
	// A forced refresh assumes a new session.
	if status, body := h.readAWS(t, "reports", "?refresh=true"); status != 200 || body["AccessKeyId"] == s.AccessKeyID {
		t.Fatalf("refresh: %d %v", status, body)
	}
	if status, _ := h.read(t, "orders"); status != 404 {
		t.Fatalf("database credential read: %d", status)
	}
	h.api.Invoke("req-1", time.Now().Add(3*time.Second))
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatal("no /event/next after INVOKE")
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if code := h.wait(t); code != 0 {
		t.Fatalf("exit %d; logs:\n%s", code, h.logs)
	}
	if n, r := h.broker.Count("assume"), h.broker.Count("revoke"); n != 2 || r != 0 {
		t.Fatalf("%d assumes, %d revocations", n, r)
	}
	if reps := h.api.Reports(); len(reps) != 0 {
		t.Errorf("error reports %+v", reps)
	}
	h.checkLogs(t)
	logs := h.logs.String()
	for _, s := range h.broker.AWSSessions() {
		if strings.Contains(logs, s.SecretAccessKey) || strings.Contains(logs, s.SessionToken) {
			t.Fatal("an AWS session's secret key or token was logged")
		}
	}
	if !strings.Contains(logs, `"aws_profiles":["reports"]`) {
		t.Errorf("the start line does not list the AWS profiles:\n%s", logs)
	}
}

func TestConfigNeitherList(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "EPHEMERA_CREDENTIALS")
	h.configInvalid(t, "EPHEMERA_CREDENTIALS")
}

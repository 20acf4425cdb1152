package demo_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/demo"
)

// TestDemo runs `make demo` end to end and checks that each step shows what
// it claims.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := demo.Run(ctx, &out, demo.Options{TTL: 6 * time.Second, WorkDir: t.TempDir()}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Invocation 1 → the function queried PostgreSQL as eph_readonly_[a-z2-7]{12}`),
		regexp.MustCompile(`order 1  espresso beans`),
		regexp.MustCompile(`Invocation 2 → the same user`),
		regexp.MustCompile(`Invocation 3 → a new user eph_readonly_`),
		regexp.MustCompile(`role billing-api .* 403 access_denied`),
		regexp.MustCompile(`role compromised .* 403 access_denied: .*quarantine`),
		regexp.MustCompile(`a replay\)\s+→ 401 replayed_proof`),
		regexp.MustCompile(`The reaper \(every 3s\) revoked it .* after expiry: session terminated: true, role gone: true`),
		regexp.MustCompile(`(?m)^0 ephemeral roles left`),
		regexp.MustCompile(`(?m)^\S+\s+reap\s+allow\s+expired`),
		regexp.MustCompile(`(?m)^\S+\s+issue\s+deny\s+access_denied\s+role/billing-api`),
	} {
		if !want.MatchString(text) {
			t.Errorf("demo output lacks %s", want)
		}
	}
	if !strings.Contains(text, "(the live credential) exists in pg_roles: false") {
		t.Errorf("the live credential's role survived SHUTDOWN")
	}
	if t.Failed() {
		t.Log(text)
	}
}

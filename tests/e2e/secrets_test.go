package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestNoCredentialInLogs: a function gets a credential, reads with it and
// shuts down (the extension revokes); no password the broker issued, this
// test's or any earlier test's, appears in what any sandbox (extension or
// function) printed, nor in the broker's logs and audit lines, nor in
// PostgreSQL's statement log. TestMain scans once more after the last test,
// whichever order the tests ran in.
func TestNoCredentialInLogs(t *testing.T) {
	sb := mustStartSandbox(t, st.Workload("orders-api-secrets", "orders-secrets-fn"), nil, nil)
	for range 2 {
		if a := sb.invokeDemo(t); !a.ok() {
			t.Fatalf("invocation: %+v", a)
		}
	}
	res, err := sb.emu.Shutdown(context.Background())
	if err != nil || !slices.Contains(res.Exited, "ephemera") {
		t.Fatalf("shutdown: %+v, %v", res, err)
	}
	passwords := rec.allPasswords()
	outs := sandboxOuts.all()
	if len(passwords) == 0 || len(outs) == 0 || sb.out.Len() == 0 {
		t.Fatalf("nothing to check: %d passwords, %d sandbox outputs, %d bytes from this test's sandbox", len(passwords), len(outs), sb.out.Len())
	}
	for _, leak := range scanForCredentials() {
		t.Error(leak)
	}
	t.Logf("%d issued passwords checked against %d sandbox outputs, the broker's and PostgreSQL's", len(passwords), len(outs))
}

// scanForCredentials looks for every password the broker issued so far in
// everything the package's sandboxes, the broker and PostgreSQL wrote, and
// describes each place one appears.
func scanForCredentials() []string {
	passwords := rec.allPasswords()
	logs := map[string]string{"broker": brokerOut.String()}
	for name, out := range sandboxOuts.all() {
		logs["sandbox "+name] = out
	}
	if pgLog, err := st.PG.Logs(); err == nil {
		logs["postgres"] = string(pgLog)
	}
	var leaks []string
	for name, text := range logs {
		for _, pw := range passwords {
			if strings.Contains(text, pw) {
				leaks = append(leaks, fmt.Sprintf("a password issued by the broker appears in the output of %s", name))
				break
			}
		}
	}
	slices.Sort(leaks)
	return leaks
}

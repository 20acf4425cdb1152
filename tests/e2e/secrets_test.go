package e2e

import (
	"strings"
	"testing"
)

// TestNoCredentialInLogs runs last (files are taken in name order): no
// password the broker issued during this package appears in what any
// sandbox (extension or function) printed, nor in the broker's logs and
// audit lines, nor in PostgreSQL's statement log.
func TestNoCredentialInLogs(t *testing.T) {
	passwords := rec.allPasswords()
	outs := sandboxOuts.all()
	if len(passwords) == 0 || len(outs) == 0 {
		t.Fatalf("nothing to check: %d passwords, %d sandbox outputs (run the whole package)", len(passwords), len(outs))
	}
	logs := map[string]string{"broker": brokerOut.String()}
	for name, out := range outs {
		logs["sandbox "+name] = out
	}
	if pgLog, err := st.PG.Logs(); err == nil {
		logs["postgres"] = string(pgLog)
	}
	var bytes int
	for name, text := range logs {
		bytes += len(text)
		for _, pw := range passwords {
			if strings.Contains(text, pw) {
				t.Errorf("a password issued by the broker appears in the output of %s", name)
				break
			}
		}
	}
	t.Logf("%d issued passwords checked against %d outputs (%d bytes)", len(passwords), len(logs), bytes)
}

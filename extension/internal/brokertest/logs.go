package brokertest

import (
	"encoding/json"
	"strings"
	"testing"
)

// CheckLogs fails t if logs (the JSON log lines of code that talked to this double)
// hold a secret: the AWS credentials the double signs with, or a database password it
// handed out (they all start "pw-"), or the word "password=" of a connection string. It
// also fails t for every line that is not JSON.
func (b *Broker) CheckLogs(t testing.TB, logs string) {
	t.Helper()
	c := b.Credentials()
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken, "pw-", "password="} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%.8s…)", secret)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
}

package agent_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
)

// The cached values print (fmt, slog) without their secrets; the wire types of
// broker/api they carry have no such methods of their own.
func TestPrintingHidesSecrets(t *testing.T) {
	cred := agent.Credential{Name: "orders", Credential: api.Credential{LeaseID: "l", Username: "eph_u", Password: "hunter2-password"}}
	sess := agent.AWSCredential{Name: "reports", AWSCredential: api.AWSCredential{LeaseID: "l", AccessKeyID: "ASIAVISIBLE",
		SecretAccessKey: "hunter2-secret", SessionToken: "hunter2-token", Expiration: time.Now()}}
	for _, tc := range []struct {
		v       any
		visible string
	}{{cred, "eph_u"}, {&cred, "eph_u"}, {sess, "ASIAVISIBLE"}, {&sess, "ASIAVISIBLE"}} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "v", tc.v)
		for _, s := range []string{fmt.Sprint(tc.v), fmt.Sprintf("%+v", tc.v), fmt.Sprintf("%#v", tc.v), fmt.Sprintf("%s", tc.v), buf.String()} {
			if strings.Contains(s, "hunter2") {
				t.Errorf("a secret printed: %s", s)
			}
			if !strings.Contains(s, tc.visible) {
				t.Errorf("%s missing: %s", tc.visible, s)
			}
		}
	}
}

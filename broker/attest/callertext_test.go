package attest_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// TestVerifyClipsCallerText: text a caller sent that failed verification is
// quoted in messages cut to 64 bytes of valid UTF-8, however long it was.
func TestVerifyClipsCallerText(t *testing.T) {
	longName := "X-" + strings.Repeat("€", 21333) // 64,001 bytes
	longHost := strings.Repeat("h", 64000) + ".amazonaws.com"
	for _, tc := range []struct {
		name  string
		check int
		code  string
		fix   func(*attest.Config, *stsserver.Identity)
		sp    func(*spec)
		after func(*attest.Proof)
		long  string
	}{
		{name: "header name", check: 4, code: attest.CodeInvalidProof, long: longName,
			after: func(p *attest.Proof) { p.Headers[longName] = []string{"v"} }},
		{name: "url host", check: 2, code: attest.CodeInvalidProof, long: longHost,
			after: func(p *attest.Proof) { p.URL = "https://" + longHost + "/" }},
		{name: "identity ARN from STS", check: 10, code: attest.CodeIdentityRejected,
			long: "arn:aws:sts::123456789012:assumed-role/" + strings.Repeat("r", 64000) + "/s1",
			fix: func(_ *attest.Config, id *stsserver.Identity) {
				id.ARN = "arn:aws:sts::123456789012:assumed-role/" + strings.Repeat("r", 64000) + "/s1"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := stsserver.NewIdentity(testAccount, testRole, testSession)
			sts := stsserver.StartTB(t, id)
			cfg := attest.Config{Audience: testAudience, Region: testRegion, Endpoint: sts.URL(), Nonces: newMemNonces()}
			if tc.fix != nil {
				tc.fix(&cfg, &id)
				sts.Add(id)
			}
			v, err := attest.NewVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := signSpec(t, spec{creds: credsOf(id), after: tc.after})
			_, err = v.Verify(context.Background(), p)
			e := wantErr(t, err, tc.code, tc.check, secretsOf(credsOf(id), p)...)
			if len(e.Message) > 200 || len(err.Error()) > 400 || !utf8.ValidString(e.Message) {
				t.Errorf("message of %d bytes (error %d bytes): %.300q", len(e.Message), len(err.Error()), e.Message)
			}
			if !strings.Contains(e.Message, "…") || strings.Contains(e.Message, tc.long[:65]) {
				t.Errorf("message %q does not cut the caller's text to 64 bytes", e.Message)
			}
		})
	}
	if _, err := attest.CanonicalRoleARN(strings.Repeat("arn:", 16000)); err == nil || len(err.Error()) > 200 {
		t.Errorf("CanonicalRoleARN error of %d bytes", len(err.Error()))
	}
}

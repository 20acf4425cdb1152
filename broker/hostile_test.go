package broker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestAdminRevokeNamesTheCanonicalPrincipal: an incident responder may
// name the workload as STS shows it (an assumed-role ARN), with its IAM
// path, or in another case (IAM role names are unique regardless of case);
// every form reaches the same leases, and the answer names the canonical
// ARN. Anything that is not a role ARN is 400, never "revoked 0" while the
// workload keeps its access.
func TestAdminRevokeNamesTheCanonicalPrincipal(t *testing.T) {
	e := newEnv(t, envOptions{})
	admin := e.workload("incident-responder", "ir")
	const canonical = "arn:aws:iam::123456789012:role/orders-api-forms"
	for _, form := range []string{
		"arn:aws:sts::123456789012:assumed-role/orders-api-forms/some-function",
		"arn:aws:iam::123456789012:role/team/payments/orders-api-forms",
		"arn:aws:iam::123456789012:role/Orders-API-Forms",
	} {
		victim := e.workload("orders-api-forms", "fn")
		held := e.mustIssue(victim, "readonly", 600)
		r := e.post("/v1/admin/revoke", map[string]any{"identity": e.proof(admin), "principal_arn": form})
		if r.Status != http.StatusOK || r.Body["revoked"] != float64(1) || r.str("principal_arn") != canonical {
			t.Fatalf("%s: %d %s, want 200 revoked 1 naming %s", form, r.Status, r.Raw, canonical)
		}
		if roleExists(t, held.str("username")) {
			t.Fatalf("%s: the role survived", form)
		}
	}
	victim := e.workload("orders-api-forms", "fn")
	held := e.mustIssue(victim, "readonly", 600)
	for _, bad := range []string{
		canonical + " ", " " + canonical, "orders-api-forms", "arn:aws:iam::123456789012:user/orders-api-forms",
		"arn:aws:s3:::orders-api-forms", "arn:aws:iam::12345:role/orders-api-forms", "",
	} {
		r := e.post("/v1/admin/revoke", map[string]any{"identity": e.proof(admin), "principal_arn": bad})
		if r.Status != http.StatusBadRequest || r.code() != "invalid_request" {
			t.Errorf("%q: %d %s, want 400 invalid_request", bad, r.Status, r.Raw)
		}
	}
	if !roleExists(t, held.str("username")) {
		t.Fatal("a refused admin revoke revoked something")
	}
}

// TestCallerTextIsCutInTheAuditTrail: a caller without a valid proof must
// not be able to grow the audit trail (kept for 400 days) or the logs with
// large strings: text that failed verification, or names nothing
// configured, is recorded cut to 64 bytes.
func TestCallerTextIsCutInTheAuditTrail(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-amplify", "fn")
	huge := strings.Repeat("r", 64000)
	noProof := e.post("/v1/credentials", map[string]any{"database": "orders", "role": huge})
	unknownRole := e.post("/v1/credentials", map[string]any{"identity": e.proof(w), "database": "orders", "role": huge})
	unknownProfile := e.post("/v1/aws-credentials", map[string]any{"identity": e.proof(w), "profile": huge})
	if noProof.Status != http.StatusUnauthorized || unknownRole.Status != http.StatusNotFound || unknownProfile.Status != http.StatusNotFound {
		t.Fatalf("statuses %d %d %d, want 401 404 404", noProof.Status, unknownRole.Status, unknownProfile.Status)
	}
	for _, a := range []answer{noProof, unknownRole, unknownProfile} {
		if len(a.Raw) > 1024 {
			t.Errorf("the answer echoes the text: %d bytes", len(a.Raw))
		}
	}
	var longest int
	must(t, superuser(t).QueryRow(context.Background(), `SELECT coalesce(max(greatest(length(db_role), length(database), length(aws_profile))), 0)
		FROM ephemera.audit_log WHERE request_id = ANY($1)`,
		[]string{noProof.RequestID, unknownRole.RequestID, unknownProfile.RequestID}).Scan(&longest))
	if longest > 64 {
		t.Errorf("an audit row keeps %d bytes of caller text", longest)
	}
	var rows int
	must(t, superuser(t).QueryRow(context.Background(), `SELECT count(*) FROM ephemera.audit_log WHERE request_id = ANY($1)`,
		[]string{noProof.RequestID, unknownRole.RequestID, unknownProfile.RequestID}).Scan(&rows))
	if rows != 3 {
		t.Errorf("%d audit rows, want one per request", rows)
	}
	for _, line := range strings.Split(e.audits.String()+e.logs.String(), "\n") {
		if len(line) > 4096 {
			t.Errorf("a log line of %d bytes", len(line))
		}
	}
}

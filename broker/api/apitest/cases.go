package apitest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
)

type testCase struct {
	name string
	run  func(t *testing.T, tg *Target)
}

// cases are the contract, in the order of a credential's life.
var cases = []testCase{
	{"IssueReturnsEveryField", func(t *testing.T, tg *Target) {
		before := time.Now().Add(-time.Minute)
		c := tg.issue(t, tg.AllowedRole)
		var missing []string
		for field, empty := range map[string]bool{
			"lease_id": c.LeaseID == "", "database": c.Database == "", "role": c.Role == "", "username": c.Username == "",
			"password": c.Password == "", "host": c.Host == "", "port": c.Port == 0, "dbname": c.DBName == "",
			"sslmode": c.SSLMode == "", "issued_at": c.IssuedAt.IsZero(), "expires_at": c.ExpiresAt.IsZero(),
			"max_expires_at": c.MaxExpiresAt.IsZero(),
		} {
			if empty {
				missing = append(missing, field)
			}
		}
		if len(missing) > 0 {
			t.Fatalf("the credential lacks %s", strings.Join(missing, ", "))
		}
		if c.Database != tg.Database || c.Role != tg.Role {
			t.Errorf("issued %s/%s, asked %s/%s", c.Database, c.Role, tg.Database, tg.Role)
		}
		if !isUUID(c.LeaseID) {
			t.Errorf("lease_id %q is not a UUID", c.LeaseID)
		}
		if c.IssuedAt.Before(before) || !c.IssuedAt.Before(c.ExpiresAt) || c.ExpiresAt.After(c.MaxExpiresAt) {
			t.Errorf("times out of order: issued %s expires %s max %s", c.IssuedAt, c.ExpiresAt, c.MaxExpiresAt)
		}
		for _, ts := range []time.Time{c.IssuedAt, c.ExpiresAt, c.MaxExpiresAt} {
			if _, off := ts.Zone(); off != 0 {
				t.Errorf("time %s is not UTC", ts)
			}
		}
	}},
	{"IssueUnknownDatabaseIsNotFound", func(t *testing.T, tg *Target) {
		req := tg.issueRequest(t)
		req.Database = tg.UnknownDatabase
		failure(t, tg.post(t, api.PathCredentials, req), http.StatusNotFound, api.CodeNotFound)
	}},
	{"IssueDeniedRoleIsAccessDenied", func(t *testing.T, tg *Target) {
		req := tg.issueRequest(t)
		req.Identity = tg.Prove(t, tg.DeniedRole)
		failure(t, tg.post(t, api.PathCredentials, req), http.StatusForbidden, api.CodeAccessDenied)
	}},
	{"ReplayedProofIsRefused", func(t *testing.T, tg *Target) {
		req := tg.issueRequest(t)
		var c api.Credential
		success(t, tg.post(t, api.PathCredentials, req), http.StatusCreated, &c)
		failure(t, tg.post(t, api.PathCredentials, req), http.StatusUnauthorized, api.CodeReplayedProof)
	}},
	{"RenewStaysWithinMaxExpiry", func(t *testing.T, tg *Target) {
		c := tg.issue(t, tg.AllowedRole)
		var r api.Renewal
		success(t, tg.renew(t, c.LeaseID), http.StatusOK, &r)
		if r.LeaseID != c.LeaseID || r.ExpiresAt.IsZero() || r.MaxExpiresAt.IsZero() {
			t.Fatalf("renewal %+v of lease %s", r, c.LeaseID)
		}
		if r.ExpiresAt.After(r.MaxExpiresAt) {
			t.Fatalf("expires_at %s is past max_expires_at %s", r.ExpiresAt, r.MaxExpiresAt)
		}
		if d := r.MaxExpiresAt.Sub(c.MaxExpiresAt); d > time.Second || d < -time.Second { // stores may round
			t.Errorf("max_expires_at moved from %s to %s", c.MaxExpiresAt, r.MaxExpiresAt)
		}
	}},
	{"RevokeIsIdempotent", func(t *testing.T, tg *Target) {
		c := tg.issue(t, tg.AllowedRole)
		for i := range 2 {
			var r api.Revocation
			success(t, tg.revoke(t, c.LeaseID), http.StatusOK, &r)
			if r.LeaseID != c.LeaseID || r.RevokedAt.IsZero() {
				t.Fatalf("revocation %d: %+v", i+1, r)
			}
		}
	}},
	{"RenewAfterRevokeIsLeaseRevoked", func(t *testing.T, tg *Target) {
		c := tg.issue(t, tg.AllowedRole)
		var r api.Revocation
		success(t, tg.revoke(t, c.LeaseID), http.StatusOK, &r)
		failure(t, tg.renew(t, c.LeaseID), http.StatusConflict, api.CodeLeaseRevoked)
	}},
	{"WrongMethodIsBadRequestWithAllow", func(t *testing.T, tg *Target) {
		a := tg.send(t, http.MethodGet, api.PathCredentials, "", nil)
		failure(t, a, http.StatusBadRequest, api.CodeInvalidRequest)
		if allow := a.header.Get("Allow"); !strings.Contains(allow, http.MethodPost) {
			t.Errorf("Allow %q does not name POST", allow)
		}
	}},
	{"NonJSONContentTypeIsBadRequest", func(t *testing.T, tg *Target) {
		for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded"} {
			a := tg.send(t, http.MethodPost, api.PathCredentials, ct, tg.issueRequest(t))
			failure(t, a, http.StatusBadRequest, api.CodeInvalidRequest)
		}
	}},
	{"AmbiguousJSONIsBadRequest", func(t *testing.T, tg *Target) {
		for name, body := range map[string]string{
			"duplicate key":  `{"identity":%s,"database":"` + tg.Database + `","role":"` + tg.Role + `","database":"` + tg.UnknownDatabase + `"}`,
			"case variant":   `{"identity":%s,"Database":"` + tg.Database + `","role":"` + tg.Role + `"}`,
			"NUL in a value": `{"identity":%s,"database":"` + tg.Database + `\u0000","role":"` + tg.Role + `"}`,
			"unknown field":  `{"identity":%s,"database":"` + tg.Database + `","role":"` + tg.Role + `","admin":true}`,
		} {
			t.Run(name, func(t *testing.T) {
				proof, err := json.Marshal(tg.Prove(t, tg.AllowedRole)) // fresh: only the ambiguity may fail
				if err != nil {
					t.Fatal(err)
				}
				body := []byte(strings.Replace(body, "%s", string(proof), 1))
				failure(t, tg.post(t, api.PathCredentials, body), http.StatusBadRequest, api.CodeInvalidRequest)
			})
		}
	}},
	{"UnavailableCarriesRetryAfter", func(t *testing.T, tg *Target) {
		if tg.FailNext == nil {
			t.Fatal("apitest: the Target cannot be told to fail (Target.FailNext is nil): every implementation must show its 503")
		}
		tg.FailNext(t)
		a := tg.post(t, api.PathCredentials, tg.issueRequest(t))
		var doc api.ErrorDocument
		if err := api.Unmarshal(a.body, &doc); err != nil {
			t.Fatalf("the 503 is not an api.ErrorDocument: %v: %s", err, clip(a.body))
		}
		code := doc.Error.Code
		if code != api.CodeDatabaseUnavailable && code != api.CodeSTSUnavailable {
			t.Fatalf("code %q, want database_unavailable or sts_unavailable", code)
		}
		failure(t, a, http.StatusServiceUnavailable, code)
	}},
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of a UUID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
	}
	return true
}

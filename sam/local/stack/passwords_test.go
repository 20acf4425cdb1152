package stack_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/stack"
)

// TestPasswords: the passwords of issue answers are recorded, the answers pass through
// unchanged, and other requests and answers without a password record nothing.
func TestPasswords(t *testing.T) {
	exchanges := []struct{ method, path, body string }{
		{http.MethodPost, "/v1/credentials", `{"lease_id":"l-1","password":"pw-1"}`},
		{http.MethodPost, "/v1/credentials", `{"lease_id":"l-2","password":"pw-2"}`},
		{http.MethodPost, "/v1/credentials", `{"error":{"code":"access_denied"}}`},
		{http.MethodPost, "/v1/leases/l-1/renew", `{"password":"not-issued"}`},
		{http.MethodGet, "/v1/credentials", `{"password":"not-issued"}`},
	}
	var p stack.Passwords
	// The broker stand-in answers each request with its body.
	h := p.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	}))
	for _, x := range exchanges {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(x.method, x.path, strings.NewReader(x.body)))
		if got := rec.Body.String(); got != x.body {
			t.Errorf("%s %s answered %q, want %q", x.method, x.path, got, x.body)
		}
	}
	got := p.All()
	slices.Sort(got)
	if want := []string{"pw-1", "pw-2"}; !slices.Equal(got, want) {
		t.Fatalf("All() = %q, want %q", got, want)
	}
}

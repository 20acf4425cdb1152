// Package pgroletest helps tests that create and drop database users against a real
// PostgreSQL: it makes a throwaway user's login secrets and checks role memberships.
package pgroletest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// Login returns a fresh username for role, a random password and its SCRAM-SHA-256
// verifier made with iterations rounds (tests use few: the verifier's strength is not
// what they test). It fails t if any of them cannot be made.
func Login(t testing.TB, role string, iterations int) (user, password, verifier string) {
	t.Helper()
	user, err := pgrole.NewUsername(role)
	if err != nil {
		t.Fatal(err)
	}
	password, err = pgrole.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err = pgrole.SCRAMVerifier(password, iterations)
	if err != nil {
		t.Fatal(err)
	}
	return user, password, verifier
}

// Querier is what Member needs of a connection or pool.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Member reports whether the current user of q may use the privileges of role
// (pg_has_role ... 'USAGE'): after a revocation, whether the admin role kept a
// membership it borrowed. It fails t if the query fails.
func Member(t testing.TB, q Querier, role string) bool {
	t.Helper()
	var member bool
	if err := q.QueryRow(context.Background(), "SELECT pg_has_role(current_user, $1, 'USAGE')", role).Scan(&member); err != nil {
		t.Fatal(err)
	}
	return member
}

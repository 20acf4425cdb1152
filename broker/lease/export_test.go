package lease

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// SetBeforeLeaseInsert installs the test hook that runs inside the issue
// transaction after the role exists and before the lease row is written.
func (s *Store) SetBeforeLeaseInsert(f func(ctx context.Context) error) { s.beforeLeaseInsert = f }

// MarkTemplate is the statement that Issue runs to mark a user, as a
// creation template, for tests that issue leases before Issue itself runs
// markStatement.
func (s *Store) MarkTemplate(ctx context.Context) (pgrole.Template, error) {
	stmt, err := s.markStatement(ctx, "eph_x_aaaaaaaaaaaa")
	if err != nil {
		return pgrole.Template{}, err
	}
	return pgrole.ParseTemplate(strings.Replace(stmt, `"eph_x_aaaaaaaaaaaa"`, "{{name}}", 1))
}

// MarkStatement exposes markStatement.
func (s *Store) MarkStatement(ctx context.Context, username string) (string, error) {
	return s.markStatement(ctx, username)
}

// MigrateTo applies the embedded migrations up to version (inclusive).
func MigrateTo(ctx context.Context, pool *pgxpool.Pool, version int) error {
	return migrate(ctx, pool, version)
}

// MigrationVersions lists the embedded migrations' versions, ascending.
func MigrationVersions() ([]int, error) {
	ms, err := embedded()
	if err != nil {
		return nil, err
	}
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.version
	}
	return out, nil
}

package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// ErrNoMarker reports that the database has no marker group: its
// migrations have not run, or the group was dropped by hand.
var ErrNoMarker = errors.New("lease: this deployment's marker group is missing")

// Every ephemeral user is a member of this deployment's marker group (a
// NOLOGIN role that migration 0006 creates with a random name, recorded
// in ephemera.deployment). The sweep drops only its members: a role that
// merely has an ephemeral-looking name is never touched.

// marker is what a store remembers of its marker group.
type marker struct {
	group string
	// opts qualify the grant: on PostgreSQL 16 and later the membership
	// neither inherits the group's privileges nor lets the user SET ROLE
	// to it (the group holds none, and must own nothing).
	opts string
}

// markers caches each store's marker (it never changes once created).
var markers sync.Map // *Store → marker

func (s *Store) marker(ctx context.Context) (marker, error) {
	if m, ok := markers.Load(s); ok {
		return m.(marker), nil
	}
	var m marker
	var exists, pg16 bool
	err := s.pool.QueryRow(ctx, `SELECT d.marker_group,
			EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = d.marker_group),
			pg_catalog.current_setting('server_version_num')::integer >= 160000
		FROM ephemera.deployment d`).Scan(&m.group, &exists, &pg16)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !exists) {
		return marker{}, ErrNoMarker
	}
	if err != nil {
		return marker{}, fmt.Errorf("lease: marker group: %w", err)
	}
	if pg16 {
		m.opts = " WITH INHERIT FALSE, SET FALSE"
	}
	markers.Store(s, m)
	return m, nil
}

// MarkerGroupOf reads the marker group of the database q is a session of:
// "" when schema ephemera is not there yet (before the first migration).
// It is what admindb's preflight checks ADMIN OPTION on.
func MarkerGroupOf(ctx context.Context, q admindb.Querier) (string, error) {
	var migrated bool
	if err := q.QueryRow(ctx, `SELECT pg_catalog.to_regclass('ephemera.deployment') IS NOT NULL`).Scan(&migrated); err != nil {
		return "", fmt.Errorf("lease: marker group: %w", err)
	}
	if !migrated {
		return "", nil
	}
	var group string
	err := q.QueryRow(ctx, `SELECT marker_group FROM ephemera.deployment`).Scan(&group)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("lease: marker group: %w", err)
	}
	return group, nil
}

// MarkerGroup returns the name of this deployment's marker group.
func (s *Store) MarkerGroup(ctx context.Context) (string, error) {
	m, err := s.marker(ctx)
	return m.group, err
}

// markStatement returns the statement that marks username as one of this
// deployment's ephemeral users. Issue runs it with the role statements, in
// the transaction that creates the role.
func (s *Store) markStatement(ctx context.Context, username string) (string, error) {
	m, err := s.marker(ctx)
	if err != nil {
		return "", err
	}
	grant, err := pgrole.GrantMembership(m.group, username)
	if err != nil {
		return "", fmt.Errorf("lease: mark: %w", err)
	}
	return grant + m.opts, nil
}

package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/config"
)

// Stores is the lease store of every configured database, over one admin
// pool each. It is what the broker, the reaper function and the operator
// CLI open, the one way to reach ephemera's state.
type Stores struct {
	byName map[string]*Store
	names  []string
}

// OpenOptions configure Open; zero values take admindb's defaults.
type OpenOptions = admindb.Options

// Open connects to every configured database as its admin role (search_path
// pinned, pool sized by the configuration), applies the embedded migrations
// under an advisory lock, and returns the stores. On error nothing stays
// open.
func Open(ctx context.Context, cfg *config.Config, opts OpenOptions) (_ *Stores, err error) {
	pools, err := admindb.OpenAll(ctx, cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	s := NewStores(pools)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, name := range s.names {
		// Refuse to start without the privileges revocation needs, naming
		// each missing GRANT, rather than half-revoke later.
		marker, err := MarkerGroupOf(ctx, pools[name])
		if err != nil {
			return nil, fmt.Errorf("lease: database %s: %w", name, err)
		}
		if err := admindb.Preflight(ctx, pools[name], cfg.Databases[name], marker); err != nil {
			return nil, fmt.Errorf("lease: database %s: %w", name, err)
		}
		if err := Migrate(ctx, pools[name]); err != nil {
			return nil, fmt.Errorf("lease: database %s: %w", name, err)
		}
	}
	return s, nil
}

// NewStores wraps already-open, migrated pools by configured database name
// (tests and tools that manage their own pools).
func NewStores(pools map[string]*pgxpool.Pool) *Stores {
	s := &Stores{byName: map[string]*Store{}}
	for name, p := range pools {
		s.byName[name] = NewStore(p, name)
		s.names = append(s.names, name)
	}
	slices.Sort(s.names)
	return s
}

// Get returns the store of a configured database, or nil.
func (s *Stores) Get(database string) *Store { return s.byName[database] }

// Names returns the configured database names, sorted.
func (s *Stores) Names() []string { return slices.Clone(s.names) }

// All returns the stores by name (the map is the caller's).
func (s *Stores) All() map[string]*Store {
	out := make(map[string]*Store, len(s.byName))
	for k, v := range s.byName {
		out[k] = v
	}
	return out
}

// Close closes every pool.
func (s *Stores) Close() {
	for _, st := range s.byName {
		st.pool.Close()
	}
}

// ErrUnknownDatabase is returned for a database name that is not configured.
var ErrUnknownDatabase = errors.New("lease: database is not configured")

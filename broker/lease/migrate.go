package lease

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the advisory lock key under which migrations run.
const migrationLock int64 = 0x657068656d657261 // "ephemera"

// migration is one embedded migration file.
type migration struct {
	version int
	name    string
	sql     string
}

// embedded returns the embedded migrations in version order.
func embedded() ([]migration, error) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	out := make([]migration, 0, len(files))
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("bad migration name %s", base)
		}
		sql, err := migrations.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: base, sql: string(sql)})
	}
	return out, nil
}

// Migrate applies the embedded migrations that the database lacks, each in
// its own transaction with its row in ephemera.schema_migrations. It holds
// a session advisory lock while doing so; concurrent callers wait, then
// find nothing left to do. The pool's connections should be hardened
// (admindb.Harden): migrations resolve every name in pg_catalog or
// ephemera.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrate(ctx, pool, math.MaxInt)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, upTo int) error {
	ms, err := embedded()
	if err != nil {
		return fmt.Errorf("lease: migrate: %w", err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("lease: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.pg_advisory_lock($1::bigint)", migrationLock); err != nil {
		return fmt.Errorf("lease: migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_catalog.pg_advisory_unlock($1::bigint)", migrationLock) //nolint:errcheck // released with the session anyway
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS ephemera;
		CREATE TABLE IF NOT EXISTS ephemera.schema_migrations (
			version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT pg_catalog.now())`); err != nil {
		return fmt.Errorf("lease: migrate: bootstrap: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(pg_catalog.max(version), 0) FROM ephemera.schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("lease: migrate: %w", err)
	}
	for _, m := range ms {
		if m.version <= current || m.version > upTo {
			continue
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO ephemera.schema_migrations (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("lease: migrate: %s: %w", m.name, err)
		}
	}
	return nil
}

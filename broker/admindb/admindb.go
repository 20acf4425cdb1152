// Package admindb connects to the configured databases as their admin role. The admin password is
// either an RDS IAM auth token made for each new connection or part of a DSN
// read from the environment; it is never logged.
package admindb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Options configure OpenAll. Zero values take the documented defaults.
type Options struct {
	// Getenv reads the DSN variables of auth: dsn. Default os.LookupEnv.
	Getenv config.Getenv
	// AWS signs RDS IAM tokens. Default: loaded from the environment, only
	// when a database uses rds_iam.
	AWS *aws.Config
	// MaxConns per pool. Default: the configuration's AdminPoolSize.
	MaxConns int32
	// MarkerGroup reads the deployment's marker group over an admin
	// session ("" before the first migration), for Doctor's preflight;
	// nil skips that group. lease.MarkerGroupOf is the one to pass: the
	// lease store owns schema ephemera.
	MarkerGroup func(context.Context, Querier) (string, error)
}

// OpenAll opens one admin pool per configured database (connecting
// lazily). On error every pool opened so far is closed. Migrations are the
// lease store's job (lease.Open).
func OpenAll(ctx context.Context, cfg *config.Config, opts Options) (_ map[string]*pgxpool.Pool, err error) {
	if opts.Getenv == nil {
		opts.Getenv = os.LookupEnv
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = int32(cfg.AdminPoolSize)
	}
	pools := map[string]*pgxpool.Pool{}
	defer func() {
		if err != nil {
			for _, p := range pools {
				p.Close()
			}
		}
	}()
	for _, name := range cfg.DatabaseNames() {
		db := cfg.Databases[name]
		if db.Admin.Auth == "rds_iam" && opts.AWS == nil {
			loaded, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				return nil, fmt.Errorf("admindb: aws config for rds_iam: %w", err)
			}
			opts.AWS = &loaded
		}
		pool, err := Connect(ctx, db, opts)
		if err != nil {
			return nil, fmt.Errorf("admindb: database %s: %w", name, err)
		}
		pools[name] = pool
	}
	return pools, nil
}

// Connect builds the admin pool of db (it connects lazily).
func Connect(ctx context.Context, db *config.Database, opts Options) (*pgxpool.Pool, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	var pc *pgxpool.Config
	var err error
	switch db.Admin.Auth {
	case "dsn":
		dsn, ok := getenv(db.Admin.DSNEnv)
		if !ok || strings.TrimSpace(dsn) == "" {
			return nil, fmt.Errorf("admin.dsn_env: environment variable %s is not set", db.Admin.DSNEnv)
		}
		if pc, err = pgxpool.ParseConfig(dsn); err != nil {
			// the parse error may quote the DSN, password included: do not wrap it
			return nil, fmt.Errorf("admin.dsn_env: %s does not parse as a PostgreSQL DSN", db.Admin.DSNEnv)
		}
	case "rds_iam":
		if opts.AWS == nil {
			return nil, errors.New("admin: rds_iam needs AWS credentials")
		}
		if pc, err = pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=%s",
			quoteKV(db.Host), db.Port, quoteKV(db.DBName), quoteKV(db.Admin.User), db.SSLMode)); err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
		endpoint := fmt.Sprintf("%s:%d", db.Host, db.Port)
		region, user, creds := db.Admin.Region, db.Admin.User, opts.AWS.Credentials
		pc.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
			token, err := auth.BuildAuthToken(ctx, endpoint, region, user, creds)
			if err != nil {
				return fmt.Errorf("rds iam auth token: %w", err)
			}
			cc.Password = token
			return nil
		}
	default:
		return nil, fmt.Errorf("admin.auth: %q is not supported", db.Admin.Auth)
	}
	Harden(pc.ConnConfig)
	pc.ConnConfig.Tracer = trace.PgxTracer() // statement text without values; no-op without a segment
	pc.MaxConns = opts.MaxConns
	if pc.MaxConns <= 0 {
		pc.MaxConns = config.DefaultAdminPoolSize
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	return pool, nil
}

// SearchPath is the search_path of every admin session: the system catalog
// and the session's own temporary schema, and nothing an ephemeral user can
// create objects in. It is sent as a connection parameter, so it holds from
// the first statement; a function or operator that an ephemeral user plants
// in public (where writer groups often have CREATE, the default before
// PostgreSQL 15) can never shadow pg_catalog's in the admin's SQL.
const SearchPath = "pg_catalog, pg_temp"

// Harden sets the parameters every admin connection carries: the pinned
// search_path, standard strings, statement and lock timeouts, a connect
// timeout, and the application name. The broker, the reaper and the CLI
// call it on every connection configuration they build.
func Harden(cc *pgx.ConnConfig) {
	cc.RuntimeParams["search_path"] = SearchPath
	cc.RuntimeParams["application_name"] = "ephemera"
	cc.RuntimeParams["standard_conforming_strings"] = "on"
	cc.RuntimeParams["statement_timeout"] = "15000"
	cc.RuntimeParams["lock_timeout"] = "5000"
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > 5*time.Second {
		cc.ConnectTimeout = 5 * time.Second
	}
}

// quoteKV quotes a value for a key=value DSN.
func quoteKV(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

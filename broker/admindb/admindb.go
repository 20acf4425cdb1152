// Package admindb connects to the configured databases as their admin role
// (DESIGN §6) and applies ephemera's migrations. The admin password is
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
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Options configure OpenAll. Zero values take the documented defaults.
type Options struct {
	// Getenv reads the DSN variables of auth: dsn. Default os.LookupEnv.
	Getenv config.Getenv
	// AWS signs RDS IAM tokens. Default: loaded from the environment, only
	// when a database uses rds_iam.
	AWS *aws.Config
	// MaxConns per pool. Default 8.
	MaxConns int32
}

// OpenAll opens one admin pool per configured database and applies the
// migrations to each. On error every pool opened so far is closed.
func OpenAll(ctx context.Context, cfg *config.Config, opts Options) (_ map[string]*pgxpool.Pool, err error) {
	if opts.Getenv == nil {
		opts.Getenv = os.LookupEnv
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
		if err := lease.Migrate(ctx, pool); err != nil {
			return nil, fmt.Errorf("admindb: database %s: %w", name, err)
		}
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
	pc.ConnConfig.RuntimeParams["application_name"] = "ephemera"
	pc.ConnConfig.RuntimeParams["standard_conforming_strings"] = "on"
	pc.ConnConfig.RuntimeParams["statement_timeout"] = "15000"
	pc.ConnConfig.RuntimeParams["lock_timeout"] = "5000"
	pc.ConnConfig.ConnectTimeout = 5 * time.Second
	pc.ConnConfig.Tracer = trace.PgxTracer() // statement text without values; no-op without a segment
	pc.MaxConns = opts.MaxConns
	if pc.MaxConns <= 0 {
		pc.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("admin pool: %w", err)
	}
	return pool, nil
}

// quoteKV quotes a value for a key=value DSN.
func quoteKV(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

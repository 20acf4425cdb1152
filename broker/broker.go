package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
)

// Version is the broker's version, reported by GET /v1/health.
var Version = "dev"

// Options configure New. Only Config is required.
type Options struct {
	// Config is the loaded configuration (config.FromEnv).
	Config *config.Config
	// Policies overrides loading Config.PolicyDir (tests, policy tooling).
	Policies *policy.Set
	// Logger receives operational JSON logs. Default: JSON on stderr.
	Logger *slog.Logger
	// AuditOut receives one JSON line per decision. Default: os.Stdout.
	AuditOut io.Writer
	// STSClient sends verified proofs to STS. Default: 2 s timeout, no redirects.
	STSClient *http.Client
	// Getenv reads the DSN variables of auth: dsn. Default os.LookupEnv.
	Getenv config.Getenv
	// AWS is used for RDS IAM auth tokens. Default: loaded from the environment when needed.
	AWS *aws.Config
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Broker issues, renews and revokes database credentials.
type Broker struct {
	cfg      *config.Config
	policies *policy.Set
	verifier *attest.Verifier
	stores   map[string]*lease.Store
	pools    map[string]*pgxpool.Pool
	audit    *audit.Log
	log      *slog.Logger
	now      func() time.Time
}

// New connects to every configured database, applies migrations, loads the
// policies and returns a ready broker. Invalid policies fail New; a policy
// directory without policies yields a broker that denies everything.
func New(ctx context.Context, opts Options) (_ *Broker, err error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("broker: Options.Config is required")
	}
	b := &Broker{cfg: cfg, log: opts.Logger, now: opts.Now, stores: map[string]*lease.Store{}, pools: map[string]*pgxpool.Pool{}}
	if b.log == nil {
		b.log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if b.now == nil {
		b.now = time.Now
	}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	b.policies = opts.Policies
	if b.policies == nil {
		if b.policies, err = policy.LoadDir(cfg.PolicyDir); err != nil {
			return nil, fmt.Errorf("broker: policies: %w", err)
		}
	}
	if b.policies.Len() == 0 {
		b.log.Warn("no policies loaded: every request will be denied", "policy_dir", cfg.PolicyDir)
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	awsCfg := opts.AWS
	for _, name := range cfg.DatabaseNames() {
		db := cfg.Databases[name]
		if db.Admin.Auth == "rds_iam" && awsCfg == nil {
			loaded, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				return nil, fmt.Errorf("broker: aws config for rds_iam: %w", err)
			}
			awsCfg = &loaded
		}
		pool, err := adminPool(ctx, db, getenv, awsCfg)
		if err != nil {
			return nil, fmt.Errorf("broker: database %s: %w", name, err)
		}
		b.pools[name] = pool
		if err := lease.Migrate(ctx, pool); err != nil {
			return nil, fmt.Errorf("broker: database %s: %w", name, err)
		}
		b.stores[name] = lease.NewStore(pool, name)
	}
	b.audit = audit.New(orDefault(opts.AuditOut, io.Writer(os.Stdout)), b.pools, b.log)
	b.verifier, err = attest.NewVerifier(attest.Config{
		Audience:      cfg.Audience,
		Region:        cfg.Region,
		AllowedHosts:  cfg.STSHosts,
		Endpoint:      cfg.STSEndpoint,
		MaxAge:        cfg.ProofMaxAge,
		AllowIAMUsers: cfg.AllowIAMUsers,
		Nonces:        b.stores[cfg.ReplayDatabase],
		HTTPClient:    opts.STSClient,
		Now:           b.now,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return b, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close closes the database pools.
func (b *Broker) Close() {
	for _, p := range b.pools {
		p.Close()
	}
}

// Store returns the lease store of a configured database, or nil.
func (b *Broker) Store(database string) *lease.Store { return b.stores[database] }

// adminPool builds the admin connection pool of db. Its password is either
// an RDS IAM token made per connection or part of a DSN from the
// environment; it is never logged.
func adminPool(ctx context.Context, db *config.Database, getenv config.Getenv, awsCfg *aws.Config) (*pgxpool.Pool, error) {
	var pc *pgxpool.Config
	var err error
	switch db.Admin.Auth {
	case "dsn":
		dsn, ok := getenv(db.Admin.DSNEnv)
		if !ok || strings.TrimSpace(dsn) == "" {
			return nil, fmt.Errorf("admin.dsn_env: environment variable %s is not set", db.Admin.DSNEnv)
		}
		if pc, err = pgxpool.ParseConfig(dsn); err != nil {
			return nil, fmt.Errorf("admin.dsn_env: %s does not parse as a PostgreSQL DSN", db.Admin.DSNEnv)
		}
	case "rds_iam":
		if pc, err = pgxpool.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=%s",
			quoteKV(db.Host), db.Port, quoteKV(db.DBName), quoteKV(db.Admin.User), db.SSLMode)); err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
		endpoint := fmt.Sprintf("%s:%d", db.Host, db.Port)
		region, user, creds := db.Admin.Region, db.Admin.User, awsCfg.Credentials
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
	pc.ConnConfig.RuntimeParams["application_name"] = "ephemera-broker"
	pc.ConnConfig.RuntimeParams["standard_conforming_strings"] = "on"
	pc.ConnConfig.RuntimeParams["statement_timeout"] = "15000"
	pc.ConnConfig.RuntimeParams["lock_timeout"] = "5000"
	pc.ConnConfig.ConnectTimeout = 5 * time.Second
	if pc.MaxConns < 8 {
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

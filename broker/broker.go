package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/broker/reaper"
	"github.com/ephemera-sh/ephemera/internal/trace"
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
	// Metrics receives EMF metric lines. Default: written to AuditOut.
	Metrics *metrics.Emitter
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Broker issues, renews and revokes database credentials.
type Broker struct {
	cfg      *config.Config
	policies *policy.Set
	verifier *attest.Verifier
	stores   *lease.Stores
	audit    *audit.Log
	reaper   *reaper.Reaper
	assumer  assumer
	metrics  *metrics.Emitter
	log      *slog.Logger
	lastReap sync.Map // database → *atomic.Int64: unix ns of the last reap on issue
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
	b := &Broker{cfg: cfg, log: opts.Logger, now: opts.Now}
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
	m := opts.Metrics
	if m == nil {
		if m, err = metrics.NewWithOptions(orDefault(opts.AuditOut, io.Writer(os.Stdout)), metrics.Options{Namespace: cfg.MetricsNamespace}); err != nil {
			return nil, fmt.Errorf("broker: EPHEMERA_METRICS_NAMESPACE: %w", err)
		}
	}
	b.stores, err = lease.Open(ctx, cfg, lease.OpenOptions{Getenv: opts.Getenv, AWS: opts.AWS})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.wire(opts.AuditOut, m)
	b.verifier, err = attest.NewVerifier(attest.Config{
		Audience:      cfg.Audience,
		Region:        cfg.Region,
		AllowedHosts:  cfg.STSHosts,
		Endpoint:      cfg.STSEndpoint,
		MaxAge:        cfg.ProofMaxAge,
		AllowIAMUsers: cfg.AllowIAMUsers,
		Nonces:        b.stores.Get(cfg.ReplayDatabase),
		HTTPClient:    stsClient(opts.STSClient),
		Now:           b.now,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if len(cfg.AWSProfiles) > 0 {
		awsCfg := opts.AWS
		if awsCfg == nil {
			loaded, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.Region))
			if err != nil {
				return nil, fmt.Errorf("broker: aws config for aws_profiles: %w", err)
			}
			awsCfg = &loaded
		}
		b.assumer = newAssumer(*awsCfg, cfg.STSEndpoint, stsClient(opts.STSClient))
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

// ForOperator returns a broker over already-open stores that serves only
// an operator's Revoke and AdminRevoke (the CLI's break-glass revocation):
// it has no proof verifier and no policies. auditOut receives the audit
// lines (default os.Stdout).
func ForOperator(stores *lease.Stores, logger *slog.Logger, auditOut io.Writer) *Broker {
	b := &Broker{cfg: &config.Config{}, stores: stores, log: logger, now: time.Now}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.wire(auditOut, nil)
	return b
}

// wire builds the audit log, metrics and reaper over b.stores.
func (b *Broker) wire(auditOut io.Writer, m *metrics.Emitter) {
	out := orDefault(auditOut, io.Writer(os.Stdout))
	b.audit = audit.New(out, b.log)
	b.metrics = m
	if b.metrics == nil {
		b.metrics = metrics.New(out)
	}
	b.reaper = reaper.New(b.stores.All(), b.audit, b.log, reaper.Config{Now: b.now, Metrics: b.metrics})
}

// Close closes the database pools.
func (b *Broker) Close() {
	if b.stores != nil {
		b.stores.Close()
	}
}

// Reaper returns the broker's reaper (the same one functions/reaper runs).
func (b *Broker) Reaper() *reaper.Reaper { return b.reaper }

// Stores returns the lease stores of the configured databases.
func (b *Broker) Stores() *lease.Stores { return b.stores }

// Store returns the lease store of a configured database, or nil.
func (b *Broker) Store(database string) *lease.Store { return b.stores.Get(database) }

// databaseNames lists the databases the broker serves, sorted.
func (b *Broker) databaseNames() []string { return b.stores.Names() }

// stsClient is the client for STS: the caller's, or one with the 2 s
// timeout and no redirects; either way each call is a remote trace subsegment.
func stsClient(c *http.Client) *http.Client {
	if c == nil {
		c = &http.Client{
			Timeout:       attest.DefaultSTSTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return trace.HTTPClient(c)
}

package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Fixed names of the local system.
const (
	// Account is the AWS account of every workload (and of lambdaemu's ARNs).
	Account = "123456789012"
	// Region is the broker's region and the functions' AWS_REGION.
	Region = "us-east-1"
	// Audience is the broker's audience (EPHEMERA_AUDIENCE on both sides).
	Audience = "local-orders"
	// Stage is the broker's EPHEMERA_STAGE, given to policies as context.stage.
	Stage = "local"
	// AdminDSNEnv is the variable, in the broker's private environment, that
	// holds the admin DSN of the throwaway server (admin.dsn_env in Config).
	AdminDSNEnv = "EPHEMERA_LOCAL_ADMIN_DSN"
)

// DefaultConfig is the broker YAML used when Options.Config is empty. The
// placeholders {{pg_host}}, {{pg_port}} and {{pg_dbname}} (also allowed in
// Options.Config) are replaced by the throwaway server's address and
// database; {{admin_dsn_env}} by AdminDSNEnv.
const DefaultConfig = `databases:
  orders:
    host: {{pg_host}}
    port: {{pg_port}}
    dbname: {{pg_dbname}}
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: {{admin_dsn_env}}}
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: 15m
        max_ttl: 1h
        max_leases: 500
      writer:
        member_of: [orders_write]
        default_ttl: 5m
        max_ttl: 30m
`

// DefaultPolicies is the Cedar text used when Options.Policies is empty.
const DefaultPolicies = `// Functions whose execution role is orders-api-* may use the orders database.
@id("orders-api-uses-orders")
permit (principal,
        action in [Ephemera::Action::"issue", Ephemera::Action::"renew", Ephemera::Action::"revoke"],
        resource in Ephemera::Database::"orders")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };

// Incident responders may revoke every lease of a principal.
@id("incident-responders")
permit (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/incident-responder",
        action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");

@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/compromised", action, resource);
`

// Options configure Start. The zero value starts the default system.
type Options struct {
	// LogStatements makes PostgreSQL log every statement (tests grep the
	// server log for leaked secrets); the same as Postgres.LogStatements.
	LogStatements bool
	// Postgres configures the throwaway server (durability, connection
	// limit); default pgserver's defaults.
	Postgres pgserver.Options
	// Policies is the Cedar text of the broker's policies; default
	// DefaultPolicies. It is written to Dir/policies/local.cedar.
	Policies string
	// Config is the broker's YAML configuration file, with the placeholders
	// of DefaultConfig; default DefaultConfig. It is written to
	// Dir/ephemera.yaml.
	Config string
	// AWSProfiles are AWS roles whose sessions the broker hands to
	// workloads: Start adds them to the YAML as aws_profiles (Config must
	// then have no aws_profiles of its own) and registers each role with
	// the STS emulator, trusting the broker's own role (BrokerRole).
	AWSProfiles []AWSProfile
	// Roles are further roles of the STS emulator, with trust policies of
	// their own (a role the broker may not assume, say).
	Roles []stsserver.Role
	// Configure, if set, may adjust the parsed and validated configuration
	// before the broker starts: a test device for settings the YAML refuses
	// (for example a max_ttl under 30 s, to see many rotations quickly).
	Configure func(*config.Config)
	// Middleware, if set, wraps the broker's handler on BrokerURL (slow or
	// failing answers, recording what the broker answered).
	Middleware func(http.Handler) http.Handler
	// ReapEvery runs the broker's reaper in the background at this interval;
	// 0 runs none (the broker still reaps a few expired leases on each issue).
	ReapEvery time.Duration
	// Now is the broker's clock; default time.Now.
	Now func() time.Time
	// Output receives the broker's JSON logs, its audit lines and metrics,
	// and (through Lambda) what functions and extensions print. Default:
	// discarded.
	Output io.Writer
	// LogLevel is the level of the broker's logs; default Info (the zero
	// value). Debug shows more of what a secret could leak into.
	LogLevel slog.Level
	// Metrics receives the broker's EMF metric lines; default Output.
	Metrics *metrics.Emitter
}

// Stack is a running local system. Close stops it.
type Stack struct {
	// PG is the throwaway PostgreSQL server; PG.URL() is a superuser DSN.
	PG *pgserver.Server
	// Setup is what demodb.Bootstrap made (the broker's admin role).
	Setup *demodb.Setup
	// AdminDSN is the broker's admin login on PG (the value of AdminDSNEnv).
	AdminDSN string
	// STS is the STS emulator the broker sends proofs to.
	STS *stsserver.Server
	// BrokerIdentity is the broker's own AWS identity at STS (a session of
	// BrokerRole), with which it assumes the roles of AWSProfiles.
	BrokerIdentity stsserver.Identity
	// Broker is the broker library instance behind BrokerURL.
	Broker *broker.Broker
	// Config is the broker's configuration as it runs.
	Config *config.Config
	// BrokerURL is http://127.0.0.1:PORT, serving Broker.Handler().
	BrokerURL string
	// Audience, Region and Account are the constants of this package.
	Audience, Region, Account string
	// Dir holds ephemera.yaml and policies/; Close removes it.
	Dir string

	opts    Options
	out     io.Writer
	cfgPath string
	polDir  string
	main    *BrokerServer

	mu      sync.Mutex
	brokers []*BrokerServer // every broker served, the main one first

	stopReap context.CancelFunc
	reaped   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start starts PostgreSQL, prepares it with demodb, starts the STS emulator
// (with the broker's identity and the roles of Options), and the broker,
// serving its handler on a loopback port. On error everything started so
// far is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	if err := validate(opts); err != nil {
		return nil, err
	}
	s := &Stack{Audience: Audience, Region: Region, Account: Account, opts: opts, out: out}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.Dir, err = os.MkdirTemp("", "ephemera-stack-*"); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	pgOpts := opts.Postgres
	pgOpts.LogStatements = pgOpts.LogStatements || opts.LogStatements
	if s.PG, err = pgserver.Start(ctx, pgOpts); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if s.Setup, err = demodb.Bootstrap(ctx, s.PG.URL()); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	s.AdminDSN = s.PG.ConnString(s.Setup.AdminUser, s.Setup.AdminPassword, s.PG.Database())
	if s.STS, err = stsserver.Start(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	s.addRoles(opts)
	if err = s.writeFiles(opts); err != nil {
		return nil, err
	}
	if s.main, err = s.StartBroker(ctx, BrokerOptions{Middleware: opts.Middleware, Metrics: opts.Metrics}); err != nil {
		return nil, err
	}
	s.Broker, s.Config, s.BrokerURL = s.main.Broker, s.main.Config, s.main.URL

	if opts.ReapEvery > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		s.stopReap, s.reaped = cancel, make(chan struct{})
		go s.reapLoop(rctx, opts.ReapEvery)
	}
	return s, nil
}

// writeFiles writes the YAML and the policy into s.Dir.
func (s *Stack) writeFiles(opts Options) error {
	yaml := opts.Config
	if strings.TrimSpace(yaml) == "" {
		yaml = DefaultConfig
	}
	yaml = strings.NewReplacer(
		"{{pg_host}}", s.PG.Host(),
		"{{pg_port}}", strconv.Itoa(s.PG.Port()),
		"{{pg_dbname}}", s.PG.Database(),
		"{{admin_dsn_env}}", AdminDSNEnv,
	).Replace(yaml)
	profiles, err := profilesYAML(yaml, opts.AWSProfiles)
	if err != nil {
		return err
	}
	yaml += profiles
	policies := opts.Policies
	if strings.TrimSpace(policies) == "" {
		policies = DefaultPolicies
	}
	s.cfgPath = filepath.Join(s.Dir, "ephemera.yaml")
	s.polDir = filepath.Join(s.Dir, "policies")
	if err := os.WriteFile(s.cfgPath, []byte(yaml), 0o600); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if err := os.Mkdir(s.polDir, 0o700); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.polDir, "local.cedar"), []byte(policies), 0o600); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return nil
}

// reapLoop runs the reaper every interval until ctx ends.
func (s *Stack) reapLoop(ctx context.Context, every time.Duration) {
	defer close(s.reaped)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, every+10*time.Second)
			_, _ = s.Broker.Reaper().Run(rctx) // the reaper audits and logs its own outcome
			cancel()
		}
	}
}

// Workload registers a new execution-role identity with the STS emulator:
// arn:aws:sts::123456789012:assumed-role/<role>/<function>, as Lambda gives
// a function whose execution role is role. Its canonical principal at the
// broker is arn:aws:iam::123456789012:role/<role> with session function.
func (s *Stack) Workload(role, function string) stsserver.Identity {
	id := stsserver.NewIdentity(Account, role, function)
	s.STS.Add(id)
	return id
}

// RoleARN is the canonical role ARN the broker records for role.
func RoleARN(role string) string { return "arn:aws:iam::" + Account + ":role/" + role }

// Close stops the reaper, every broker (the main one and those of
// StartBroker) and its listener, the STS emulator and PostgreSQL, and
// removes Dir. It is idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.stopReap != nil {
			s.stopReap()
			<-s.reaped
		}
		s.mu.Lock()
		brokers := s.brokers
		s.brokers = nil
		s.mu.Unlock()
		for _, b := range brokers {
			errs = append(errs, b.Close())
		}
		if s.STS != nil {
			errs = append(errs, s.STS.Close())
		}
		if s.PG != nil {
			errs = append(errs, s.PG.Stop())
		}
		if s.Dir != "" {
			errs = append(errs, os.RemoveAll(s.Dir))
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("stack: close: %w", err)
		}
	})
	return s.closeErr
}

// TB is the part of testing.TB that StartTB uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	Logf(format string, args ...any)
}

// StartTB is Start for tests: it fails tb (never skips) if the stack cannot
// start, and closes it when tb's cleanups run.
func StartTB(tb TB, opts Options) *Stack {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("stack.StartTB: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Logf("stack.StartTB: %v", err)
		}
	})
	return s
}

// ShortRole is an Options.Configure that adds the role name to the database orders
// of DefaultConfig: readonly again, with default_ttl ttl and max_ttl maxTTL, which
// may be shorter than the YAML allows, so that a test sees rotations within
// seconds.
func ShortRole(name string, ttl, maxTTL time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		db := c.Databases["orders"]
		r := *db.Roles["readonly"]
		r.Name, r.DefaultTTL, r.MaxTTL = name, ttl, maxTTL
		db.Roles[name] = &r
	}
}

package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/config"
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
	// server log for leaked secrets).
	LogStatements bool
	// Policies is the Cedar text of the broker's policies; default
	// DefaultPolicies. It is written to Dir/policies/local.cedar.
	Policies string
	// Config is the broker's YAML (DESIGN §6), with the placeholders of
	// DefaultConfig; default DefaultConfig. It is written to Dir/ephemera.yaml.
	Config string
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
}

// Stack is a running local system. Close stops it.
type Stack struct {
	// PG is the throwaway PostgreSQL server; PG.URL() is a superuser DSN.
	PG *pgserver.Server
	// Setup is what demodb.Bootstrap made (the broker's admin role).
	Setup *demodb.Setup
	// STS is the STS emulator the broker sends proofs to.
	STS *stsserver.Server
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

	out      io.Writer
	httpSrv  *http.Server
	served   chan struct{}
	stopReap context.CancelFunc
	reaped   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start starts PostgreSQL, prepares it with demodb, starts the STS emulator
// and the broker, and serves the broker's handler on a loopback port. On
// error everything started so far is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	s := &Stack{Audience: Audience, Region: Region, Account: Account, out: out}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.Dir, err = os.MkdirTemp("", "ephemera-stack-*"); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if s.PG, err = pgserver.Start(ctx, pgserver.Options{LogStatements: opts.LogStatements}); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if s.Setup, err = demodb.Bootstrap(ctx, s.PG.URL()); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if s.STS, err = stsserver.Start(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}

	cfgPath, policyDir, err := s.writeFiles(opts)
	if err != nil {
		return nil, err
	}
	env := map[string]string{
		"EPHEMERA_CONFIG":       cfgPath,
		"EPHEMERA_POLICY_DIR":   policyDir,
		"EPHEMERA_AUDIENCE":     Audience,
		"EPHEMERA_STS_ENDPOINT": s.STS.URL(),
		"EPHEMERA_STAGE":        Stage,
		"AWS_REGION":            Region,
		AdminDSNEnv:             s.PG.ConnString(s.Setup.AdminUser, s.Setup.AdminPassword, s.PG.Database()),
	}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if s.Config, err = config.FromEnv(getenv); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if opts.Configure != nil {
		opts.Configure(s.Config)
	}
	if s.Broker, err = broker.New(ctx, broker.Options{
		Config:   s.Config,
		Logger:   slog.New(slog.NewJSONHandler(out, nil)),
		AuditOut: out,
		Getenv:   getenv,
		Now:      opts.Now,
	}); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stack: listen: %w", err)
	}
	var h http.Handler = s.Broker.Handler()
	if opts.Middleware != nil {
		h = opts.Middleware(h)
	}
	s.BrokerURL = "http://" + ln.Addr().String()
	s.httpSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		_ = s.httpSrv.Serve(ln)
	}()

	if opts.ReapEvery > 0 {
		rctx, cancel := context.WithCancel(context.Background())
		s.stopReap, s.reaped = cancel, make(chan struct{})
		go s.reapLoop(rctx, opts.ReapEvery)
	}
	return s, nil
}

// writeFiles writes the YAML and the policy into s.Dir.
func (s *Stack) writeFiles(opts Options) (cfgPath, policyDir string, err error) {
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
	policies := opts.Policies
	if strings.TrimSpace(policies) == "" {
		policies = DefaultPolicies
	}
	cfgPath = filepath.Join(s.Dir, "ephemera.yaml")
	policyDir = filepath.Join(s.Dir, "policies")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return "", "", fmt.Errorf("stack: %w", err)
	}
	if err := os.Mkdir(policyDir, 0o700); err != nil {
		return "", "", fmt.Errorf("stack: %w", err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "local.cedar"), []byte(policies), 0o600); err != nil {
		return "", "", fmt.Errorf("stack: %w", err)
	}
	return cfgPath, policyDir, nil
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

// Close stops the reaper, the broker's listener and the broker, the STS
// emulator and PostgreSQL, and removes Dir. It is idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.stopReap != nil {
			s.stopReap()
			<-s.reaped
		}
		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				_ = s.httpSrv.Close()
			}
			cancel()
			<-s.served
		}
		if s.Broker != nil {
			s.Broker.Close()
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

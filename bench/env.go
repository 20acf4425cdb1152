package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Names of the benchmark system.
const (
	account      = "123456789012"
	region       = "us-east-1"
	audience     = "bench-orders"
	dbDefault    = "orders"      // scram_iterations 4096 (the default)
	dbFast       = "orders_fast" // scram_iterations 64
	fastIters    = 64
	dbRole       = "readonly"
	group        = "orders_read"
	workRole     = "orders-api-role"
	workFunction = "orders-fn"
	principalARN = "arn:aws:iam::" + account + ":role/" + workRole
	dsnEnv       = "BENCH_ADMIN_DSN"
	// Fixture roles log in with this password (SCRAM verifier of fastIters).
	fixturePassword  = "bench-fixture-password-not-a-secret-0123456789"
	fixtureRequestID = "bench-fixture"
)

const brokerConfig = `replay_database: orders
databases:
  orders:
    host: 127.0.0.1
    port: {{port}}
    dbname: {{dbname}}
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: ` + dsnEnv + `}
    scram_iterations: 4096
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: 15m
        max_ttl: 1h
        max_leases: 1000000
  orders_fast:
    host: 127.0.0.1
    port: {{port}}
    dbname: {{dbname}}
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: ` + dsnEnv + `}
    scram_iterations: 64
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: 15m
        max_ttl: 1h
        max_leases: 1000000
`

const brokerPolicies = `
@id("orders-api-uses-orders")
permit (principal,
        action in [Ephemera::Action::"issue", Ephemera::Action::"renew", Ephemera::Action::"revoke"],
        resource in Ephemera::Database::"orders")
when { principal.account == "123456789012" && principal.role like "orders-api-*" && context.ttl_seconds <= 3600 };

@id("orders-api-uses-orders-fast")
permit (principal,
        action in [Ephemera::Action::"issue", Ephemera::Action::"renew", Ephemera::Action::"revoke"],
        resource in Ephemera::Database::"orders_fast")
when { principal.account == "123456789012" && principal.role like "orders-api-*" && context.ttl_seconds <= 3600 };

@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/compromised", action, resource);
`

// env is the running system under test.
type env struct {
	pg       *pgserver.Server
	setup    *demodb.Setup
	sts      *stsserver.Server
	dir      string
	adminDSN string
	cfgPath  string
	polDir   string

	main   *runningBroker
	sink   *metricsSink // the main broker's EMF metrics
	client *http.Client
	id     stsserver.Identity
	creds  aws.Credentials

	super *pgxpool.Pool // superuser: cleanup, settings
	admin *pgxpool.Pool // the broker's admin role: floor, fixtures

	fixtureVerifier string
	dataFS          string // file system type of the data directory
	pgVersion       string
}

type runningBroker struct {
	b   *broker.Broker
	url string
	srv *http.Server
}

func (r *runningBroker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		_ = r.srv.Close()
	}
	r.b.Close()
}

// chooseTmp makes pgserver put the data directory on a disk, not tmpfs,
// so that durable commits really reach stable storage.
func chooseTmp() {
	if os.Getenv("TMPDIR") != "" {
		return
	}
	for _, d := range []string{"/var/tmp", "/tmp"} {
		if fs := fsType(d); fs != "" && fs != "tmpfs" {
			os.Setenv("TMPDIR", d)
			return
		}
	}
}

func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	switch st.Type {
	case 0x01021994:
		return "tmpfs"
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("fs-0x%x", st.Type)
}

func startEnv(ctx context.Context) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	chooseTmp()
	if e.pg, err = pgserver.Start(ctx, pgserver.Options{Durable: true, MaxConnections: 300}); err != nil {
		return nil, err
	}
	if lf := e.pg.LogFile(); lf != "" {
		e.dataFS = fsType(filepath.Dir(lf))
	} else {
		e.dataFS = "external server"
	}
	if e.setup, err = demodb.Bootstrap(ctx, e.pg.URL()); err != nil {
		return nil, err
	}
	if e.sts, err = stsserver.Start(); err != nil {
		return nil, err
	}
	e.id = stsserver.NewIdentity(account, workRole, workFunction)
	e.sts.Add(e.id)
	e.creds = aws.Credentials{AccessKeyID: e.id.AccessKeyID, SecretAccessKey: e.id.SecretAccessKey, SessionToken: e.id.SessionToken}
	e.adminDSN = e.pg.ConnString(e.setup.AdminUser, e.setup.AdminPassword, e.pg.Database())
	if e.dir, err = os.MkdirTemp("", "ephemera-bench-*"); err != nil {
		return nil, err
	}
	e.cfgPath = filepath.Join(e.dir, "ephemera.yaml")
	e.polDir = filepath.Join(e.dir, "policies")
	yaml := strings.NewReplacer("{{port}}", strconv.Itoa(e.pg.Port()), "{{dbname}}", e.pg.Database()).Replace(brokerConfig)
	if err = os.WriteFile(e.cfgPath, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	if err = os.Mkdir(e.polDir, 0o700); err != nil {
		return nil, err
	}
	if err = os.WriteFile(filepath.Join(e.polDir, "bench.cedar"), []byte(brokerPolicies), 0o600); err != nil {
		return nil, err
	}
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}}
	e.sink = &metricsSink{}
	if e.main, err = e.startBroker(ctx, e.adminDSN, nil, e.sink); err != nil {
		return nil, err
	}
	if e.super, err = pgxpool.New(ctx, e.pg.URL()); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(e.adminDSN)
	if err != nil {
		return nil, errors.New("admin DSN does not parse")
	}
	pc.MaxConns = 16
	if e.admin, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, err
	}
	if e.fixtureVerifier, err = pgrole.SCRAMVerifier(fixturePassword, fastIters); err != nil {
		return nil, err
	}
	if err = e.super.QueryRow(ctx, "SHOW server_version").Scan(&e.pgVersion); err != nil {
		return nil, err
	}
	return e, nil
}

// startBroker starts a broker over the admin DSN dsn and serves it on loopback.
// Its EMF metric lines go to metricsOut (nil: dropped with the audit lines).
func (e *env) startBroker(ctx context.Context, dsn string, stsClient *http.Client, metricsOut io.Writer) (*runningBroker, error) {
	vars := map[string]string{
		"EPHEMERA_CONFIG":       e.cfgPath,
		"EPHEMERA_POLICY_DIR":   e.polDir,
		"EPHEMERA_AUDIENCE":     audience,
		"EPHEMERA_STS_ENDPOINT": e.sts.URL(),
		"EPHEMERA_STAGE":        "bench",
		"AWS_REGION":            region,
		dsnEnv:                  dsn,
	}
	getenv := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	cfg, err := config.FromEnv(getenv)
	if err != nil {
		return nil, err
	}
	var em *metrics.Emitter
	if metricsOut != nil {
		em = metrics.New(metricsOut)
	}
	b, err := broker.New(ctx, broker.Options{
		Metrics: em,
		Config:  cfg,
		// JSON logs and audit lines are encoded as in Lambda, then dropped.
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil)),
		AuditOut:  io.Discard,
		Getenv:    getenv,
		STSClient: stsClient,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Close()
		return nil, err
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	return &runningBroker{b: b, url: "http://" + ln.Addr().String(), srv: srv}, nil
}

func (e *env) close() {
	if e.main != nil {
		e.main.close()
	}
	if e.admin != nil {
		e.admin.Close()
	}
	if e.super != nil {
		e.super.Close()
	}
	if e.sts != nil {
		_ = e.sts.Close()
	}
	if e.pg != nil {
		_ = e.pg.Stop()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// post sends a signed-proof request to a broker and decodes the answer.
func (e *env) post(ctx context.Context, base, path string, body map[string]any, want int, dst any) error {
	p, err := attest.Sign(ctx, e.creds, region, audience, time.Now())
	if err != nil {
		return err
	}
	body["identity"] = p
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if dst != nil {
		return json.Unmarshal(raw, dst)
	}
	return nil
}

type issued struct {
	LeaseID  string `json:"lease_id"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// issue asks broker base for a credential of database db.
func (e *env) issue(ctx context.Context, base, db string) (*issued, error) {
	var out issued
	err := e.post(ctx, base, "/v1/credentials", map[string]any{"database": db, "role": dbRole}, http.StatusCreated, &out)
	return &out, err
}

func (e *env) revoke(ctx context.Context, base, leaseID string) error {
	return e.post(ctx, base, "/v1/leases/"+leaseID+"/revoke", map[string]any{}, http.StatusOK, nil)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Names of the benchmark system.
const (
	account      = stack.Account
	region       = stack.Region
	audience     = stack.Audience
	dbDefault    = "orders"      // scram_iterations 4096 (the default)
	dbFast       = "orders_fast" // scram_iterations 64
	fastIters    = 64
	dbRole       = "readonly"
	group        = "orders_read"
	workRole     = "orders-api-role"
	workFunction = "orders-fn"
	principalARN = "arn:aws:iam::" + account + ":role/" + workRole
	// Fixture roles log in with this password (SCRAM verifier of fastIters).
	fixturePassword  = "bench-fixture-password-not-a-secret-0123456789"
	fixtureRequestID = "bench-fixture"
)

// configure adjusts the stack's configuration (stack.DefaultConfig) for the
// benchmark: max_leases is never what limits a phase, and orders_fast is the
// database orders again, on the same server, with scram_iterations 64. Proof
// nonces are kept in orders for both.
func configure(c *config.Config) {
	orders := c.Databases[dbDefault]
	for _, r := range orders.Roles {
		r.MaxLeases = 1_000_000
	}
	fast := *orders
	fast.Name, fast.SCRAMIterations = dbFast, fastIters
	fast.Roles = make(map[string]*config.Role, len(orders.Roles))
	for name, r := range orders.Roles {
		copied := *r
		fast.Roles[name] = &copied
	}
	c.Databases[dbFast] = &fast
	c.ReplayDatabase = dbDefault
}

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

// env is the running system under test: the local system of stack, with
// a durable PostgreSQL, and pools and fixtures of the benchmark.
type env struct {
	stack    *stack.Stack
	pg       *pgserver.Server
	setup    *demodb.Setup
	sts      *stsserver.Server
	adminDSN string

	main *runningBroker
	// fast is a second broker whose replay database is dbFast, so that
	// issues there, like the main broker's in dbDefault, commit their
	// nonce with the credential (each broker has one replay database).
	fast   *runningBroker
	sink   *metricsSink // the brokers' EMF metrics
	client *http.Client
	id     stsserver.Identity
	creds  aws.Credentials

	super *pgxpool.Pool // superuser: cleanup, settings
	admin *pgxpool.Pool // the broker's admin role: floor, fixtures

	fixtureVerifier string
	dataFS          string // file system type of the data directory
	pgVersion       string
}

// runningBroker is a broker served on loopback: the stack's own (srv nil,
// closed with the stack) or one of stack.StartBroker.
type runningBroker struct {
	b   *broker.Broker
	url string
	srv *stack.BrokerServer
}

func (r *runningBroker) close() {
	if r.srv != nil {
		_ = r.srv.Close()
	}
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
	e.sink = &metricsSink{}
	if e.stack, err = stack.Start(ctx, stack.Options{
		Postgres:  pgserver.Options{Durable: true, MaxConnections: 300},
		Configure: configure,
		Policies:  brokerPolicies,
		Metrics:   metrics.New(e.sink),
		// JSON logs and audit lines are encoded as in Lambda, then dropped
		// (Output nil).
	}); err != nil {
		return nil, err
	}
	e.pg, e.setup, e.sts, e.adminDSN = e.stack.PG, e.stack.Setup, e.stack.STS, e.stack.AdminDSN
	e.main = &runningBroker{b: e.stack.Broker, url: e.stack.BrokerURL}
	fast, err := e.stack.StartBroker(ctx, stack.BrokerOptions{Metrics: metrics.New(e.sink),
		Configure: func(c *config.Config) { c.ReplayDatabase = dbFast }})
	if err != nil {
		return nil, err
	}
	e.fast = &runningBroker{b: fast.Broker, url: fast.URL, srv: fast}
	if lf := e.pg.LogFile(); lf != "" {
		e.dataFS = fsType(filepath.Dir(lf))
	} else {
		e.dataFS = "external server"
	}
	e.id = e.stack.Workload(workRole, workFunction)
	e.creds = aws.Credentials{AccessKeyID: e.id.AccessKeyID, SecretAccessKey: e.id.SecretAccessKey, SessionToken: e.id.SessionToken}
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}}
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

// startBroker starts another broker over the admin DSN dsn and serves it on
// loopback, as a Lambda cold start would. Its EMF metric lines go to
// metricsOut (nil: dropped with the audit lines).
func (e *env) startBroker(ctx context.Context, dsn string, stsClient *http.Client, metricsOut io.Writer) (*runningBroker, error) {
	var em *metrics.Emitter
	if metricsOut != nil {
		em = metrics.New(metricsOut)
	}
	srv, err := e.stack.StartBroker(ctx, stack.BrokerOptions{AdminDSN: dsn, STSClient: stsClient, Metrics: em})
	if err != nil {
		return nil, err
	}
	return &runningBroker{b: srv.Broker, url: srv.URL, srv: srv}, nil
}

func (e *env) close() {
	if e.admin != nil {
		e.admin.Close()
	}
	if e.super != nil {
		e.super.Close()
	}
	if e.fast != nil {
		e.fast.close()
	}
	if e.stack != nil {
		_ = e.stack.Close()
	}
}

// brokerFor is the URL of the broker whose replay database is db (the
// main broker for every database but dbFast).
func (e *env) brokerFor(db string) string {
	if db == dbFast {
		return e.fast.url
	}
	return e.main.url
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

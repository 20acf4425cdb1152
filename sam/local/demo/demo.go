// Package demo is `make demo` (`ephemera local`): the whole of ephemera on
// one machine, narrated for someone who has never seen it. It starts the
// local stack (sam/local/stack), runs the demo function with the ephemera
// extension under the Lambda emulator, and walks through issue → use →
// renew → rotate → deny → revoke → reap, then prints the audit trail.
package demo

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	extconfig "github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Options tune the demo. Zero values take the defaults.
type Options struct {
	// TTL of the function's credential (default 10s; the role's max_ttl is twice it).
	TTL time.Duration
	// WorkDir holds the built binaries and the logs (default: a temp dir, removed at the end).
	WorkDir string
	// ReapEvery is the background reaper's interval (default 3s).
	ReapEvery time.Duration
}

// EnvDatabaseURL names an existing PostgreSQL server to use instead of a
// throwaway one (the demo creates, and then drops, a database of its own).
const EnvDatabaseURL = "EPHEMERA_DEMO_DATABASE_URL"

// Run runs the demo, writing the narration to out.
func Run(ctx context.Context, out io.Writer, opts Options) (err error) {
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
	}
	if opts.ReapEvery <= 0 {
		opts.ReapEvery = 3 * time.Second
	}
	if url := os.Getenv(EnvDatabaseURL); url != "" {
		os.Setenv(pgserver.EnvDatabaseURL, url) // pgserver then uses that server
	}
	n := &narrator{out: out, start: time.Now()}
	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "ephemera-demo-"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(work)
	}
	logPath := filepath.Join(work, "system.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer logFile.Close()

	n.section("1. Start everything on this machine (no Docker, no AWS account)")
	s, err := stack.Start(ctx, stack.Options{
		// The stack's configuration, with short TTLs so that a renewal and a
		// rotation happen within a minute.
		Configure: func(c *config.Config) {
			r := c.Databases["orders"].Roles["readonly"]
			r.DefaultTTL, r.MaxTTL, r.MaxLeases = opts.TTL, 2*opts.TTL, 50
		},
		Output:    logFile,
		ReapEvery: opts.ReapEvery,
	})
	if err != nil {
		return fmt.Errorf("demo: starting the local stack: %w", err)
	}
	defer s.Close()
	n.say("PostgreSQL      127.0.0.1:%d, a throwaway cluster; the broker logs in as ephemera_admin", s.PG.Port())
	n.say("                (CREATEROLE and pg_signal_backend only: not a superuser, no access to data)")
	n.say("STS emulator    %s, verifies AWS SigV4 signatures like the real STS", s.STS.URL())
	n.say("Broker          %s, audience %q, Cedar policy: roles orders-api-* may use database orders", s.BrokerURL, s.Audience)
	n.say("Reaper          every %s", opts.ReapEvery)
	n.say("Logs of every process: %s", logPath)
	n.step("Building the extension and the demo function (go build)...")
	extDir, bootstrap, err := stack.Binaries(ctx, filepath.Join(work, "bin"))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	n.section("2. Cold start: a Lambda function with the ephemera extension")
	id := s.Workload("orders-api-demo", "orders-api")
	n.say("The function's execution role: arn:aws:iam::%s:role/orders-api-demo (function orders-api).", stack.Account)
	n.say("It holds no database password. At INIT the extension signs an STS GetCallerIdentity")
	n.say("request with the role's own temporary credentials, sends it to the broker as proof,")
	n.say("and asks for orders/readonly for %s.", opts.TTL)
	t0 := time.Now()
	emu, err := s.Lambda(ctx, id, extDir, bootstrap, map[string]string{
		"EPHEMERA_CREDENTIALS": "orders=orders/readonly:" + opts.TTL.String(),
	})
	if err != nil {
		return fmt.Errorf("demo: function INIT: %w", err)
	}
	defer emu.Close()
	n.say("INIT done in %s (extension registered, proof verified, role created, function connected).", ms(time.Since(t0)))
	first, err := invoke(ctx, emu)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(first.CurrentUser, "eph_readonly_") || len(first.Orders) == 0 {
		return fmt.Errorf("demo: invocation 1 ran as %q with %d rows", first.CurrentUser, len(first.Orders))
	}
	n.say("Invocation 1 → the function queried PostgreSQL as %s:", first.CurrentUser)
	for _, o := range first.Orders {
		n.say("    order %d  %-16s qty %d", o.ID, o.Item, o.Qty)
	}
	l1, err := leaseOf(ctx, s, first.CurrentUser)
	if err != nil {
		return err
	}
	n.say("Lease %s: expires %s, renewable until %s.", l1.id, l1.expires.Format(time.TimeOnly), l1.max.Format(time.TimeOnly))
	n.say("PostgreSQL has VALID UNTIL = lease expiry for %s, and only orders_read's privileges.", first.CurrentUser)

	n.section("3. Freeze and thaw: the credential is renewed, same user")
	margin := extconfig.Margin(0, opts.TTL) // the extension's own rule
	freeze := time.Until(l1.expires) - margin + time.Second
	n.say("Lambda freezes the sandbox between invocations; timers do not run. Frozen for %s...", freeze.Round(time.Second))
	sleep(ctx, freeze)
	second, err := invoke(ctx, emu)
	if err != nil {
		return err
	}
	l2, err := leaseOf(ctx, s, second.CurrentUser)
	if err != nil {
		return err
	}
	if second.CurrentUser != first.CurrentUser || !l2.expires.After(l1.expires) || len(second.Orders) == 0 {
		return fmt.Errorf("demo: expected a renewal of %s, got %s expiring %s", first.CurrentUser, second.CurrentUser, l2.expires)
	}
	same := "the same user"
	n.say("Invocation 2 → %s, lease now expires %s (the extension checked the wall clock", same, l2.expires.Format(time.TimeOnly))
	n.say("on INVOKE, saw less than %s left and renewed; open connections stay valid).", margin)

	n.section("4. At the role's max TTL the extension rotates to a new user")
	freeze = time.Until(l2.max) - margin + time.Second
	n.say("Frozen for %s, past the point where renewal can no longer help...", freeze.Round(time.Second))
	sleep(ctx, freeze)
	third, err := invoke(ctx, emu)
	if err != nil {
		return err
	}
	if third.CurrentUser == first.CurrentUser || !strings.HasPrefix(third.CurrentUser, "eph_readonly_") || len(third.Orders) == 0 {
		return fmt.Errorf("demo: expected a new user at max TTL, got %s", third.CurrentUser)
	}
	n.say("Invocation 3 → a new user %s; every query succeeded (the function's pool", third.CurrentUser)
	n.say("retires connections before their lease ends). The old user %s will expire unused.", first.CurrentUser)

	n.section("5. Refusals: an unnamed workload, a quarantined one, a replayed proof")
	intruder := s.Workload("billing-api", "billing-report")
	status, body, err := issueDirect(ctx, s, intruder)
	if err != nil {
		return err
	}
	if status != http.StatusForbidden {
		return fmt.Errorf("demo: billing-api got %d %s", status, body)
	}
	n.say("role billing-api asks for orders/readonly      → %d %s (default deny)", status, body)
	quarantined := s.Workload("compromised", "orders-api")
	status, body, err = issueDirect(ctx, s, quarantined)
	if err != nil {
		return err
	}
	if status != http.StatusForbidden || !strings.Contains(body, "quarantine") {
		return fmt.Errorf("demo: compromised got %d %s", status, body)
	}
	n.say("role compromised asks for orders/readonly      → %d %s", status, body)
	batch := s.Workload("orders-api-batch", "nightly-export")
	proof, err := sign(ctx, s, batch)
	if err != nil {
		return err
	}
	status, cred, err := postProof(ctx, s, proof, map[string]any{"database": "orders", "role": "readonly", "ttl_seconds": 5})
	if err != nil {
		return err
	}
	if status != http.StatusCreated {
		return fmt.Errorf("demo: batch credential: %d %v", status, cred)
	}
	n.say("role orders-api-batch asks with a fresh proof  → %d user %v (5 s)", status, cred["username"])
	status, replay, err := postProof(ctx, s, proof, map[string]any{"database": "orders", "role": "readonly", "ttl_seconds": 5})
	if err != nil {
		return err
	}
	if status != http.StatusUnauthorized {
		return fmt.Errorf("demo: a replayed proof got %d %v", status, replay)
	}
	n.say("the same proof sent again (a replay)           → %d %s", status, errorText(replay))

	n.section("6. SHUTDOWN: the extension revokes its leases")
	res, err := emu.Shutdown(ctx)
	if err != nil {
		return fmt.Errorf("demo: shutdown: %w", err)
	}
	n.say("Lambda sent SHUTDOWN (2 s budget); the extension revoked and exited in %s (killed: %d).", ms(res.Duration), len(res.Killed))
	if len(res.Killed) > 0 {
		return fmt.Errorf("demo: SHUTDOWN had to kill %v", res.Killed)
	}
	if roleExists(ctx, s, third.CurrentUser) {
		return fmt.Errorf("demo: %s survived SHUTDOWN", third.CurrentUser)
	}
	n.say("    %s (the live credential) exists in pg_roles: %v", third.CurrentUser, roleExists(ctx, s, third.CurrentUser))
	if first.CurrentUser != third.CurrentUser {
		n.say("    %s expired earlier; the reaper takes it (exists now: %v)", first.CurrentUser, roleExists(ctx, s, first.CurrentUser))
	}

	n.section("7. The reaper revokes what nobody revoked")
	if err := reaperDemo(ctx, s, n, cred, opts.ReapEvery); err != nil {
		return err
	}

	n.section("8. The audit trail (ephemera.audit_log)")
	if err := auditTrail(ctx, s, out); err != nil {
		return err
	}
	left := -1
	for deadline := time.Now().Add(3 * opts.ReapEvery); time.Now().Before(deadline); sleep(ctx, 200*time.Millisecond) {
		if left = ephemeralRoles(ctx, s); left == 0 {
			break
		}
	}
	n.say("")
	n.say("Every decision, allowed or not, is a row here and a JSON line in the logs; no row holds")
	n.say("a password, signature, session token or nonce.")
	n.say("%d ephemeral roles left. Done in %s.", left, time.Since(n.start).Round(time.Second))
	if left != 0 {
		return fmt.Errorf("demo: %d ephemeral roles left", left)
	}
	return nil
}

func ephemeralRoles(ctx context.Context, s *stack.Stack) int {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return -1
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'eph\_%'`).Scan(&n); err != nil {
		return -1
	}
	return n
}

func errorText(body map[string]any) string {
	if e, ok := body["error"].(map[string]any); ok {
		return fmt.Sprintf("%v: %v", e["code"], e["message"])
	}
	return fmt.Sprint(body)
}

type demoAnswer struct {
	CurrentUser string `json:"current_user"`
	Orders      []struct {
		ID   int    `json:"id"`
		Item string `json:"item"`
		Qty  int    `json:"qty"`
	} `json:"orders"`
}

func invoke(ctx context.Context, emu *lambdaemu.Emulator) (*demoAnswer, error) {
	ev, _ := json.Marshal(events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "GET /orders", RawPath: "/orders",
		RequestContext: events.APIGatewayV2HTTPRequestContext{HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "GET", Path: "/orders"}}})
	res, err := emu.Invoke(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("demo: invoke: %w", err)
	}
	if res.ErrorType != "" {
		return nil, fmt.Errorf("demo: the function failed: %s: %s", res.ErrorType, res.Payload)
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(res.Payload, &resp); err != nil {
		return nil, fmt.Errorf("demo: function answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("demo: the function answered %d: %s", resp.StatusCode, resp.Body)
	}
	var a demoAnswer
	if err := json.Unmarshal([]byte(resp.Body), &a); err != nil {
		return nil, fmt.Errorf("demo: function body: %w", err)
	}
	return &a, nil
}

type leaseInfo struct {
	id           string
	expires, max time.Time
}

func leaseOf(ctx context.Context, s *stack.Stack, user string) (*leaseInfo, error) {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	defer conn.Close(ctx)
	got, err := lease.LeaseByUsername(ctx, conn, user)
	if err != nil {
		return nil, fmt.Errorf("demo: lease of %s: %w", user, err)
	}
	return &leaseInfo{id: got.ID, expires: got.ExpiresAt.Local(), max: got.MaxExpiresAt.Local()}, nil
}

func roleExists(ctx context.Context, s *stack.Stack, user string) bool {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var ok bool
	_ = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, user).Scan(&ok)
	return ok
}

// issueDirect asks the broker for a credential as workload id, the way the
// extension does, and returns the status and a short description.
func issueDirect(ctx context.Context, s *stack.Stack, id stsserver.Identity) (int, string, error) {
	proof, err := sign(ctx, s, id)
	if err != nil {
		return 0, "", err
	}
	status, body, err := postProof(ctx, s, proof, map[string]any{"database": "orders", "role": "readonly", "ttl_seconds": 5})
	if err != nil {
		return 0, "", err
	}
	if _, ok := body["error"]; ok {
		return status, errorText(body), nil
	}
	return status, fmt.Sprintf("user %v", body["username"]), nil
}

func sign(ctx context.Context, s *stack.Stack, id stsserver.Identity) (*attest.Proof, error) {
	proof, err := attest.Sign(ctx, aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken},
		s.Region, s.Audience, time.Now())
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return proof, nil
}

func postProof(ctx context.Context, s *stack.Stack, proof *attest.Proof, fields map[string]any) (int, map[string]any, error) {
	fields["identity"] = proof
	data, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.BrokerURL+"/v1/credentials", bytes.NewReader(data))
	if err != nil {
		return 0, nil, fmt.Errorf("demo: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("demo: broker: %w", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, nil, fmt.Errorf("demo: broker answer: %w", err)
	}
	return resp.StatusCode, body, nil
}

// reaperDemo follows the batch job's 5-second credential: it connects,
// never revokes, and the background reaper ends it.
func reaperDemo(ctx context.Context, s *stack.Stack, n *narrator, cred map[string]any, every time.Duration) error {
	user, _ := cred["username"].(string)
	dsn := fmt.Sprintf("host=%v port=%v dbname=%v user=%v password=%v sslmode=disable", cred["host"], cred["port"], cred["dbname"], user, cred["password"])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("demo: batch login: %w", err)
	}
	defer conn.Close(context.Background())
	expires, _ := time.Parse(time.RFC3339, fmt.Sprint(cred["expires_at"]))
	n.say("The batch job's %s (5 s) is connected; the job crashes without revoking.", user)
	sleep(ctx, time.Until(expires)+200*time.Millisecond)
	_, loginErr := pgx.Connect(ctx, dsn)
	_, queryErr := conn.Exec(ctx, "SELECT 1")
	if loginErr == nil {
		return fmt.Errorf("demo: %s could still log in after expiry", user)
	}
	n.say("At expiry PostgreSQL refuses new logins itself (VALID UNTIL): %v; the open session still works: %v.", loginErr != nil, queryErr == nil)
	var revokedAt time.Time
	for deadline := time.Now().Add(4 * every); time.Now().Before(deadline) && revokedAt.IsZero(); sleep(ctx, 100*time.Millisecond) {
		revokedAt = leaseRevokedAt(ctx, s, user)
	}
	if revokedAt.IsZero() {
		return fmt.Errorf("demo: the reaper did not revoke %s", user)
	}
	_, err = conn.Exec(ctx, "SELECT 1")
	if err == nil || roleExists(ctx, s, user) {
		return fmt.Errorf("demo: %s's session or role survived the reaper", user)
	}
	n.say("The reaper (every %s) revoked it %s after expiry: session terminated: true, role gone: true.",
		every, revokedAt.Sub(expires).Round(100*time.Millisecond))
	return nil
}

func leaseRevokedAt(ctx context.Context, s *stack.Stack, user string) time.Time {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return time.Time{}
	}
	defer conn.Close(ctx)
	l, err := lease.LeaseByUsername(ctx, conn, user)
	if err != nil || l.RevokedAt == nil {
		return time.Time{}
	}
	return *l.RevokedAt
}

func auditTrail(ctx context.Context, s *stack.Stack, out io.Writer) error {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer conn.Close(ctx)
	recs, _, err := lease.AuditRows(ctx, conn, lease.HistoryFilter{To: time.Now().Add(time.Hour)}, 10000)
	if err != nil {
		return fmt.Errorf("demo: audit: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tDECISION\tREASON\tPRINCIPAL\tFUNCTION\tROLE\tUSERNAME\tPOLICIES")
	for _, r := range recs {
		principal := strings.TrimPrefix(r.PrincipalARN, "arn:aws:iam::"+stack.Account+":")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Local().Format(time.TimeOnly), r.Event, r.Decision, dash(r.Reason),
			dash(principal), dash(r.Session), dash(r.DBRole), dash(r.Username), dash(strings.Join(r.Policies, ",")))
	}
	return tw.Flush()
}

type narrator struct {
	out   io.Writer
	start time.Time
}

func (n *narrator) section(title string) {
	fmt.Fprintf(n.out, "\n== %s ==\n", title)
}

func (n *narrator) say(format string, args ...any) {
	fmt.Fprintf(n.out, format+"\n", args...)
}

func (n *narrator) step(msg string) { fmt.Fprintln(n.out, msg) }

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Serve starts the local stack (broker, reaper, throwaway PostgreSQL, STS)
// and keeps it running until ctx ends, printing its addresses and
// ready-to-paste curl commands with single-use request files.
func Serve(ctx context.Context, out io.Writer, opts Options) error {
	if opts.ReapEvery <= 0 {
		opts.ReapEvery = 3 * time.Second
	}
	if url := os.Getenv(EnvDatabaseURL); url != "" {
		os.Setenv(pgserver.EnvDatabaseURL, url)
	}
	dir, err := os.MkdirTemp("", "ephemera-local-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	logFile, err := os.Create(filepath.Join(dir, "system.log"))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer logFile.Close()
	s, err := stack.Start(ctx, stack.Options{Output: logFile, ReapEvery: opts.ReapEvery})
	if err != nil {
		return fmt.Errorf("demo: starting the local stack: %w", err)
	}
	defer s.Close()
	// The admin DSN holds the throwaway cluster's admin password: it goes
	// into a file of mode 0600, never onto the terminal.
	dsnFile := filepath.Join(dir, "admin.dsn")
	if err := os.WriteFile(dsnFile, []byte(s.AdminDSN), 0o600); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	id := s.Workload("orders-api-local", "orders-api")
	var files []string
	for i := 1; i <= 5; i++ {
		proof, err := sign(ctx, s, id)
		if err != nil {
			return err
		}
		data, _ := json.MarshalIndent(map[string]any{"identity": proof, "database": "orders", "role": "readonly", "ttl_seconds": 300}, "", "  ")
		f := filepath.Join(dir, fmt.Sprintf("issue-%d.json", i))
		if err := os.WriteFile(f, data, 0o600); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		files = append(files, f)
	}
	fmt.Fprintf(out, `ephemera is running on this machine (Ctrl-C stops and deletes everything).

  broker      %s   (audience %q; reaper every %s)
  postgres    127.0.0.1:%d  database %q  (throwaway)
  sts         %s   (verifies SigV4)
  logs        %s

Health:
  curl -s %s/v1/health

Issue a credential as arn:aws:iam::%s:role/orders-api-local (each file is a signed,
single-use proof, valid for 5 minutes):
  curl -s -H 'Content-Type: application/json' -d @%s %s/v1/credentials

Then log in with the answer's username and password:
  psql "host=127.0.0.1 port=%d dbname=%s user=<username> password=<password>" -c 'SELECT current_user, * FROM orders'

More request files: %s

Watch the leases and the audit trail as the broker's admin (its DSN, with the
throwaway password, is in a file only you can read):
  EPHEMERA_DATABASE_URL="$(cat %s)" ephemera leases
  EPHEMERA_DATABASE_URL="$(cat %s)" ephemera audit --database orders --since 1h

Run your own function against this kind of stack: ephemera local invoke --help
`, s.BrokerURL, s.Audience, opts.ReapEvery, s.PG.Port(), s.PG.Database(), s.STS.URL(), logFile.Name(),
		s.BrokerURL, stack.Account, files[0], s.BrokerURL, s.PG.Port(), s.PG.Database(), strings.Join(files[1:], " "),
		shellQuote(dsnFile), shellQuote(dsnFile))
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping…")
	return nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

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
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Options tune the demo. Zero values take the defaults.
type Options struct {
	// TTL of the function's credential (default 10s; the role's max_ttl is twice it).
	TTL time.Duration
	// WorkDir holds the built binaries and the logs (default: a temp dir, removed at the end).
	WorkDir string
}

// The demo's broker configuration: the stack's, with short TTLs so that a
// renewal and a rotation happen within a minute.
const config = `databases:
  orders:
    host: {{pg_host}}
    port: {{pg_port}}
    dbname: {{pg_dbname}}
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: {{admin_dsn_env}}}
    scram_iterations: 4096
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: %s
        max_ttl: %s
        max_leases: 50
`

// Run runs the demo, writing the narration to out.
func Run(ctx context.Context, out io.Writer, opts Options) (err error) {
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Second
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
		Config: fmt.Sprintf(config, opts.TTL, 2*opts.TTL),
		Output: logFile,
	})
	if err != nil {
		return fmt.Errorf("demo: starting the local stack: %w", err)
	}
	defer s.Close()
	n.say("PostgreSQL      127.0.0.1:%d, a throwaway cluster; the broker logs in as ephemera_admin", s.PG.Port())
	n.say("                (CREATEROLE and pg_signal_backend only: not a superuser, no access to data)")
	n.say("STS emulator    %s, verifies AWS SigV4 signatures like the real STS", s.STS.URL())
	n.say("Broker          %s, audience %q, Cedar policy: roles orders-api-* may use database orders", s.BrokerURL, s.Audience)
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
	margin := max(5*time.Second, opts.TTL/5)
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
	same := "the same user"
	if second.CurrentUser != first.CurrentUser {
		same = "a new user " + second.CurrentUser
	}
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
	n.say("Invocation 3 → a new user %s; every query succeeded (the function's pool", third.CurrentUser)
	n.say("retires connections before their lease ends). The old user %s will expire unused.", first.CurrentUser)

	n.section("5. A workload the policy does not name is refused")
	intruder := s.Workload("billing-api", "billing-report")
	status, body, err := issueDirect(ctx, s, intruder)
	if err != nil {
		return err
	}
	n.say("arn:aws:iam::%s:role/billing-api asks for orders/readonly → %d %s", stack.Account, status, body)

	n.section("6. SHUTDOWN: the extension revokes its leases")
	users := []string{first.CurrentUser, third.CurrentUser}
	res, err := emu.Shutdown(ctx)
	if err != nil {
		return fmt.Errorf("demo: shutdown: %w", err)
	}
	n.say("Lambda sent SHUTDOWN (2 s budget); the extension revoked and exited in %s (killed: %d).", ms(res.Duration), len(res.Killed))
	for _, u := range uniq(users) {
		n.say("    %s exists in pg_roles: %v", u, roleExists(ctx, s, u))
	}

	n.section("7. The reaper revokes what nobody revoked")
	reaped, err := reaperDemo(ctx, s, n)
	if err != nil {
		return err
	}
	_ = reaped

	n.section("8. The audit trail (ephemera.audit_log)")
	if err := auditTrail(ctx, s, out); err != nil {
		return err
	}
	n.say("")
	n.say("Every decision, allowed or not, is a row here and a JSON line in the logs; no row holds")
	n.say("a password, signature, session token or nonce. Done in %s.", time.Since(n.start).Round(time.Second))
	return nil
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
	var l leaseInfo
	err = conn.QueryRow(ctx, `SELECT lease_id::text, expires_at, max_expires_at FROM ephemera.leases WHERE username = $1`, user).
		Scan(&l.id, &l.expires, &l.max)
	if err != nil {
		return nil, fmt.Errorf("demo: lease of %s: %w", user, err)
	}
	l.expires, l.max = l.expires.Local(), l.max.Local()
	return &l, nil
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
	status, body, err := post(ctx, s, id, map[string]any{"database": "orders", "role": "readonly", "ttl_seconds": 5})
	if err != nil {
		return 0, "", err
	}
	if e, ok := body["error"].(map[string]any); ok {
		return status, fmt.Sprintf("%v: %v", e["code"], e["message"]), nil
	}
	return status, fmt.Sprintf("user %v", body["username"]), nil
}

func post(ctx context.Context, s *stack.Stack, id stsserver.Identity, fields map[string]any) (int, map[string]any, error) {
	proof, err := attest.Sign(ctx, aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken},
		s.Region, s.Audience, time.Now())
	if err != nil {
		return 0, nil, fmt.Errorf("demo: %w", err)
	}
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

// reaperDemo issues a 5-second credential to a batch job that never revokes
// it, keeps a session open past expiry, and lets the reaper end it.
func reaperDemo(ctx context.Context, s *stack.Stack, n *narrator) (int, error) {
	batch := s.Workload("orders-api-batch", "nightly-export")
	status, cred, err := post(ctx, s, batch, map[string]any{"database": "orders", "role": "readonly", "ttl_seconds": 5})
	if err != nil {
		return 0, err
	}
	if status != http.StatusCreated {
		return 0, fmt.Errorf("demo: batch credential: %d %v", status, cred)
	}
	user, _ := cred["username"].(string)
	dsn := fmt.Sprintf("host=%v port=%v dbname=%v user=%v password=%v sslmode=disable", cred["host"], cred["port"], cred["dbname"], user, cred["password"])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("demo: batch login: %w", err)
	}
	defer conn.Close(context.Background())
	n.say("A batch job (role orders-api-batch) got %s for 5 s, connected, and crashed without revoking.", user)
	sleep(ctx, 6*time.Second)
	_, loginErr := pgx.Connect(ctx, dsn)
	n.say("After 6 s a new login is refused by PostgreSQL itself (VALID UNTIL): %v", loginErr != nil)
	_, err = conn.Exec(ctx, "SELECT 1")
	n.say("…but its open session still works until revocation: %v", err == nil)
	sum, err := s.Broker.Reaper().Run(ctx)
	if err != nil {
		return 0, fmt.Errorf("demo: reaper: %w", err)
	}
	n.say("One reaper run (the schedule runs it every minute): revoked %d, failed %d, in %.0f ms.", sum.Revoked, sum.Failed, sum.DurationMS)
	_, err = conn.Exec(ctx, "SELECT 1")
	n.say("The open session was terminated: %v; the role is gone: %v.", err != nil, !roleExists(ctx, s, user))
	return sum.Revoked, nil
}

func auditTrail(ctx context.Context, s *stack.Stack, out io.Writer) error {
	conn, err := pgx.Connect(ctx, s.PG.URL())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT time, event, decision, reason, principal_arn, session, db_role, username, policies
		FROM ephemera.audit_log ORDER BY id`)
	if err != nil {
		return fmt.Errorf("demo: audit: %w", err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tDECISION\tREASON\tPRINCIPAL\tFUNCTION\tROLE\tUSERNAME\tPOLICIES")
	for rows.Next() {
		var t time.Time
		var event, decision, reason, principal, session, role, user string
		var policies []string
		if err := rows.Scan(&t, &event, &decision, &reason, &principal, &session, &role, &user, &policies); err != nil {
			return fmt.Errorf("demo: audit: %w", err)
		}
		principal = strings.TrimPrefix(principal, "arn:aws:iam::"+stack.Account+":")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Local().Format(time.TimeOnly), event, decision, dash(reason),
			dash(principal), dash(session), dash(role), dash(user), dash(strings.Join(policies, ",")))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("demo: audit: %w", err)
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

func uniq(ss []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
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

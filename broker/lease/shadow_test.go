package lease_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// shadowFunctions are the functions ephemera's SQL calls (and a few it
// could), each planted in schema public with argument types that beat
// pg_catalog's in overload resolution where such types exist.
var shadowFunctions = []struct{ sig, returns, body string }{
	{"hashtextextended(text, integer)", "bigint", "RETURN pg_catalog.hashtextextended($1, $2::bigint);"},
	{"hashtextextended(text, bigint)", "bigint", "RETURN pg_catalog.hashtextextended($1, $2);"},
	{"power(integer, integer)", "double precision", "RETURN pg_catalog.power($1::float8, $2::float8);"},
	{"power(double precision, integer)", "double precision", "RETURN pg_catalog.power($1, $2::float8);"},
	{"least(integer, integer)", "integer", "RETURN LEAST($1, $2);"},
	{"now()", "timestamptz", "RETURN pg_catalog.now();"},
	{"pg_advisory_xact_lock(bigint)", "void", "PERFORM pg_catalog.pg_advisory_xact_lock($1);"},
	{"pg_advisory_xact_lock(integer)", "void", "PERFORM pg_catalog.pg_advisory_xact_lock($1::bigint);"},
	{"pg_advisory_lock(bigint)", "void", "PERFORM pg_catalog.pg_advisory_lock($1);"},
	// A parameter of undeclared type prefers the string category: these
	// win over pg_catalog's for pg_advisory_lock($1) and the like.
	{"pg_advisory_lock(text)", "void", "PERFORM pg_catalog.pg_advisory_lock($1::bigint);"},
	{"pg_advisory_unlock(text)", "boolean", "RETURN pg_catalog.pg_advisory_unlock($1::bigint);"},
	{"pg_advisory_xact_lock(text)", "void", "PERFORM pg_catalog.pg_advisory_xact_lock($1::bigint);"},
	{"pg_terminate_backend(text)", "boolean", "RETURN pg_catalog.pg_terminate_backend($1::integer);"},
	{"pg_advisory_unlock(bigint)", "boolean", "RETURN pg_catalog.pg_advisory_unlock($1);"},
	{"pg_terminate_backend(integer)", "boolean", "RETURN pg_catalog.pg_terminate_backend($1);"},
	{"pg_backend_pid()", "integer", "RETURN pg_catalog.pg_backend_pid();"},
	{"pg_stat_clear_snapshot()", "void", "PERFORM pg_catalog.pg_stat_clear_snapshot();"},
	{"pg_has_role(name, text, text)", "boolean", "RETURN pg_catalog.pg_has_role($1, $2, $3);"},
	{"pg_has_role(text, text)", "boolean", "RETURN pg_catalog.pg_has_role($1, $2);"},
	{"current_database()", "name", "RETURN pg_catalog.current_database();"},
	{"current_setting(text)", "text", "RETURN pg_catalog.current_setting($1);"},
	{"md5(text)", "text", "RETURN pg_catalog.md5($1);"},
	{"gen_random_uuid()", "uuid", "RETURN pg_catalog.gen_random_uuid();"},
	{"substr(text, integer, integer)", "text", "RETURN pg_catalog.substr($1, $2, $3);"},
	{"unnest(text[])", "SETOF text", "RETURN QUERY SELECT pg_catalog.unnest($1);"},
	{"pg_get_userbyid(oid)", "name", "RETURN pg_catalog.pg_get_userbyid($1);"},
}

// shadowOperators are operators on the types ephemera's SQL compares.
// Those with a text right operand win over pg_catalog's for a parameter
// of undeclared type (lease_id = $1): resolution prefers the string
// category for an unknown input.
var shadowOperators = []struct{ op, left, right, fn string }{
	{"=", "uuid", "text", "uuid_eq"},
	{"<=", "timestamptz", "text", "timestamptz_le"},
	{"<", "timestamptz", "text", "timestamptz_lt"},
	{"=", "text", "text", "texteq"},
	{"=", "uuid", "uuid", "uuid_eq"},
	{"=", "name", "name", "nameeq"},
	{"=", "name", "text", "nameeqtext"},
	{"=", "oid", "oid", "oideq"},
	{"<>", "name", "name", "namene"},
	{"<>", "oid", "oid", "oidne"},
	{"<=", "timestamptz", "timestamptz", "timestamptz_le"},
	{"<", "timestamptz", "timestamptz", "timestamptz_lt"},
	{">", "text", "text", "text_gt"},
}

// plantShadows creates, as the attacker, a tripwire table and the shadows
// in dbname's schema public. Each shadow records who ran it and, when that
// role may, creates role trojanRole: run by the admin role (SECURITY
// INVOKER), it would succeed.
func plantShadows(t *testing.T, conn *pgx.Conn, trojanRole string) {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	b.WriteString(`CREATE TABLE public.tripwire (fn text, by_role text);
		GRANT INSERT ON public.tripwire TO PUBLIC;
		CREATE FUNCTION public.trojan_fire(fn text) RETURNS void LANGUAGE plpgsql
		SET search_path = pg_catalog, pg_temp AS $f$
		BEGIN
			INSERT INTO public.tripwire VALUES (fn, CURRENT_USER);
			BEGIN
				EXECUTE 'CREATE ROLE ` + trojanRole + ` LOGIN';
			EXCEPTION WHEN OTHERS THEN NULL;
			END;
		END $f$;
		`)
	for _, f := range shadowFunctions {
		fmt.Fprintf(&b, `CREATE FUNCTION public.%s RETURNS %s LANGUAGE plpgsql
			SET search_path = pg_catalog, pg_temp AS $f$
			BEGIN PERFORM public.trojan_fire(%s); %s END $f$;
			`, f.sig, f.returns, "'"+f.sig+"'", f.body)
	}
	for i, o := range shadowOperators {
		fmt.Fprintf(&b, `CREATE FUNCTION public.trojan_op%d(a %s, b %s) RETURNS boolean LANGUAGE plpgsql
			SET search_path = pg_catalog, pg_temp AS $f$
			BEGIN PERFORM public.trojan_fire('operator %s(%s, %s)'); RETURN pg_catalog.%s(a, b::%s); END $f$;
			CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.trojan_op%d);
			`, i, o.left, o.right, o.op, o.left, o.right, o.fn, o.left, o.op, o.left, o.right, i)
	}
	if _, err := conn.Exec(ctx, b.String()); err != nil {
		t.Fatalf("planting shadows: %v", err)
	}
}

// TestNoCodeRunsAsTheAdmin: an ephemeral user whose group may create in
// schema public plants shadows of every function and operator ephemera's
// SQL uses, in the database of a deployment and in another database where
// it leaves objects. Then the deployment is opened the production way
// (lease.Open: admindb's hardened pools, migrations from scratch) and every
// store operation runs — issue, renew, revoke (the admin revoke is the
// same call), reap with objects to reassign, sweep, pruning, the listings
// and a cross-database revocation. None of the shadows may run as the
// admin, and no trojan role may appear. A control at the end proves the
// shadows were live: an unhardened admin session trips them at once.
func TestNoCodeRunsAsTheAdmin(t *testing.T) {
	ctx := context.Background()
	group := randomName("shadow_writers_")
	trojan := randomName("trojan_")
	suExec(t, "", "CREATE ROLE "+group+" NOLOGIN")
	suExec(t, "", `DO $$ BEGIN
		IF current_setting('server_version_num')::int >= 160000 THEN
			EXECUTE 'GRANT `+group+` TO ephemera_admin WITH ADMIN OPTION, INHERIT FALSE, SET FALSE';
		END IF; END $$`)
	dbname := randomName("ephemera_shadow_")
	suExec(t, "", "CREATE DATABASE "+dbname)
	suExec(t, "", "GRANT CONNECT, CREATE ON DATABASE "+dbname+" TO ephemera_admin")
	suExec(t, dbname, "GRANT CREATE ON SCHEMA public TO "+group)
	t.Cleanup(func() {
		suExec(t, "", "DROP DATABASE IF EXISTS "+dbname+" WITH (FORCE)")
		suExec(t, "", "DROP ROLE IF EXISTS "+trojan)
	})

	// The attacker: a user of the test deployment, in the writer group.
	home := lease.NewStore(admin, "shadow_home")
	attacker, attackerPW := issueWithPassword(t, home, group, time.Hour)
	plantShadows(t, userConn(t, attacker.Username, attackerPW, dbname), trojan)

	// The victim deployment, opened as the broker opens it.
	cfg := &config.Config{AdminPoolSize: 4, Databases: map[string]*config.Database{"shadow": {
		Name: "shadow", Host: pg.Host(), Port: pg.Port(), DBName: dbname, SSLMode: "disable",
		Admin: config.Admin{User: "ephemera_admin", Auth: "dsn", DSNEnv: "SHADOW_ADMIN_DSN"},
	}}}
	getenv := func(k string) (string, bool) {
		if k == "SHADOW_ADMIN_DSN" {
			return adminDSNFor(dbname), true
		}
		return "", false
	}
	stores, err := lease.Open(ctx, cfg, lease.OpenOptions{Getenv: getenv})
	must(t, err)
	defer stores.Close()
	s := stores.Get("shadow")

	// Issue, renew, list, revoke.
	l, lpw := issueWithPassword(t, s, group, time.Minute)
	userConn(t, l.Username, lpw, dbname) // a session for the revocation to terminate
	_, err = s.Renew(ctx, lease.RenewRequest{ID: l.ID, TTL: 10 * time.Minute, Renewal: []pgrole.Template{pgrole.DefaultRenewal}})
	must(t, err)
	_, err = s.Get(ctx, l.ID)
	must(t, err)
	_, err = s.LiveByPrincipal(ctx, l.PrincipalARN)
	must(t, err)
	_, err = s.CountLive(ctx, l.DBRole, time.Now())
	must(t, err)
	_, err = s.UseNonce(ctx, randomName("nonce_"), time.Now().Add(time.Minute))
	must(t, err)
	must(t, s.AppendAudit(ctx, audit.Record{RequestID: "shadow", Event: audit.EventIssue, Decision: audit.Deny}))
	if _, _, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "admin"}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	// Reap a user that owns a table (REASSIGN OWNED, borrowed memberships).
	victim, victimPW := issueWithPassword(t, s, group, 2*time.Second)
	vc := userConn(t, victim.Username, victimPW, dbname)
	_, err = vc.Exec(ctx, "CREATE TABLE public.victim_"+victim.Username[len(victim.Username)-12:]+" (id int)")
	must(t, err)
	must(t, vc.Close(ctx))
	time.Sleep(time.Until(victim.ExpiresAt) + 100*time.Millisecond)
	out, err := s.ReapExpired(ctx, time.Now(), 100, "expired", func(r lease.Reaped) audit.Record {
		return audit.Record{RequestID: "reaper", Event: audit.EventReap, Decision: audit.Allow, Username: r.Username}
	})
	must(t, err)
	if len(out) != 1 || out[0].Err != nil {
		t.Fatalf("reap: %+v", out)
	}
	// Sweep a marked orphan.
	orphan, err := pgrole.NewUsername("orphan")
	must(t, err)
	mark, err := s.MarkStatement(ctx, orphan)
	must(t, err)
	suExec(t, "", `CREATE ROLE "`+orphan+`" LOGIN`)
	_, err = s.Pool().Exec(ctx, mark)
	must(t, err)
	for _, at := range []time.Time{time.Now(), time.Now().Add(time.Hour)} {
		swept, err := s.Sweep(ctx, at, time.Minute, nil, nil)
		must(t, err)
		for _, r := range swept {
			must(t, r.Err)
		}
	}
	if roleExists(t, orphan) {
		t.Fatal("the marked orphan was not swept")
	}
	_, err = s.PruneRevoked(ctx, time.Now().Add(time.Hour))
	must(t, err)
	_, err = s.Databases(ctx)
	must(t, err)
	_, err = s.DeleteUsedNonces(ctx, time.Now())
	must(t, err)
	// The attacker's own revocation crosses into the shadowed database
	// (it owns the shadows there).
	if _, _, err := home.Revoke(ctx, lease.RevokeRequest{ID: attacker.ID, Reason: "admin"}); err != nil {
		t.Fatalf("revoke of the attacker: %v", err)
	}
	if roleExists(t, attacker.Username) {
		t.Fatal("the attacker's role survived its revocation")
	}

	fired := func() (n int, by []string) {
		su := hardenedSuperuser(t, dbname)
		rows, err := su.Query(ctx, "SELECT DISTINCT fn || ' as ' || by_role FROM public.tripwire ORDER BY 1")
		must(t, err)
		by, err = pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		must(t, admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", trojan).Scan(&n))
		return n, by
	}
	if trojans, by := fired(); trojans != 0 || len(by) != 0 {
		t.Fatalf("shadows ran (trojan roles: %d): %v", trojans, by)
	}
	// Whatever SQL a future change sends through the store's pool, an
	// unqualified name cannot reach schema public: the search_path is
	// pinned on every connection.
	for _, q := range []string{"SELECT hashtextextended('ephemera', 0)", "SELECT pg_advisory_unlock('42')"} {
		_, err = s.Pool().Exec(ctx, q)
		must(t, err)
	}
	if trojans, by := fired(); trojans != 0 || len(by) != 0 {
		t.Fatalf("unqualified SQL through the store's pool ran shadows (trojan roles: %d): %v", trojans, by)
	}

	// Control: the same admin login without admindb.Harden resolves the
	// attacker's function first.
	pc, err := pgxpool.ParseConfig(adminDSNFor(dbname))
	must(t, err)
	plain, err := pgxpool.NewWithConfig(ctx, pc)
	must(t, err)
	defer plain.Close()
	_, err = plain.Exec(ctx, "SELECT hashtextextended('ephemera', 0)")
	must(t, err)
	if trojans, by := fired(); trojans != 1 || len(by) == 0 {
		t.Fatalf("control: an unhardened admin session did not trip the shadows (trojans %d, %v): the test proves nothing", trojans, by)
	}
}

// hardenedSuperuser connects as the superuser to dbname with the pinned
// search_path (the shadows must not fire on the test's own queries).
func hardenedSuperuser(t *testing.T, dbname string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(superuserDSN(dbname))
	must(t, err)
	admindb.Harden(cc)
	conn, err := pgx.ConnectConfig(context.Background(), cc)
	must(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

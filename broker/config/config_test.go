package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// ---------------------------------------------------------------------------
// Helpers

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustParse(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: unexpected error: %v\ndocument:\n%s", err, doc)
	}
	return cfg
}

// indent prefixes every line with n spaces.
func indent(n int, lines []string) string {
	var b strings.Builder
	pad := strings.Repeat(" ", n)
	for _, l := range lines {
		b.WriteString(pad)
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// roleDocRaw is a valid database "orders" whose one role "readonly" has
// exactly the given fields (indented under the role).
func roleDocRaw(roleLines ...string) string {
	return "databases:\n" +
		"  orders:\n" +
		"    host: db.example\n" +
		"    admin: {user: ephemera_admin, auth: rds_iam}\n" +
		"    roles:\n" +
		"      readonly:\n" +
		indent(8, roleLines)
}

// roleDoc is roleDocRaw with a valid member_of added.
func roleDoc(roleLines ...string) string {
	return roleDocRaw(append([]string{"member_of: [orders_read]"}, roleLines...)...)
}

// dbDoc is a database "orders" with exactly the given fields, followed by a
// valid roles block.
func dbDoc(dbLines ...string) string {
	return "databases:\n" +
		"  orders:\n" +
		indent(4, dbLines) +
		"    roles:\n" +
		"      readonly:\n" +
		"        member_of: [orders_read]\n"
}

// dbDocNoRoles is a database "orders" with exactly the given fields.
func dbDocNoRoles(dbLines ...string) string {
	return "databases:\n  orders:\n" + indent(4, dbLines)
}

func templateStrings(ts []pgrole.Template) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}

// checkInvariants asserts what every successfully parsed configuration must
// satisfy, whatever the input (shared by the tests and the fuzz target).
func checkInvariants(t testing.TB, cfg *config.Config) {
	t.Helper()
	if cfg == nil {
		t.Fatal("Parse returned nil config and nil error")
	}
	if len(cfg.Databases) == 0 {
		t.Fatal("no databases")
	}
	if cfg.Databases[cfg.ReplayDatabase] == nil {
		t.Fatalf("replay_database %q is not a configured database", cfg.ReplayDatabase)
	}
	for name, db := range cfg.Databases {
		if db == nil || db.Name != name {
			t.Fatalf("database %q: bad entry %+v", name, db)
		}
		if db.Host == "" || db.DBName == "" {
			t.Fatalf("database %q: empty host or dbname", name)
		}
		if db.Port < 1 || db.Port > 65535 {
			t.Fatalf("database %q: port %d", name, db.Port)
		}
		if db.SCRAMIterations < 1 {
			t.Fatalf("database %q: scram_iterations %d", name, db.SCRAMIterations)
		}
		switch db.Admin.Auth {
		case "rds_iam":
			if db.Admin.User == "" || db.Admin.DSNEnv != "" {
				t.Fatalf("database %q: bad rds_iam admin %+v", name, db.Admin)
			}
		case "dsn":
			if db.Admin.DSNEnv == "" {
				t.Fatalf("database %q: dsn admin without dsn_env", name)
			}
		default:
			t.Fatalf("database %q: admin.auth %q", name, db.Admin.Auth)
		}
		if len(db.Roles) == 0 {
			t.Fatalf("database %q: no roles", name)
		}
		for rn, r := range db.Roles {
			where := name + "." + rn
			if r == nil || r.Name != rn {
				t.Fatalf("role %s: bad entry %+v", where, r)
			}
			if r.DefaultTTL > r.MaxTTL {
				t.Fatalf("role %s: default_ttl %s > max_ttl %s", where, r.DefaultTTL, r.MaxTTL)
			}
			if r.DefaultTTL < 5*time.Second || r.MaxTTL > 7*24*time.Hour {
				t.Fatalf("role %s: TTLs %s/%s out of range", where, r.DefaultTTL, r.MaxTTL)
			}
			if r.MaxLeases < 1 {
				t.Fatalf("role %s: max_leases %d", where, r.MaxLeases)
			}
			if len(r.MemberOf) == 0 {
				t.Fatalf("role %s: no member_of", where)
			}
			for _, g := range r.MemberOf {
				if g == "" || strings.HasPrefix(g, pgrole.Prefix) || strings.HasPrefix(g, "pg_") {
					t.Fatalf("role %s: member_of %q", where, g)
				}
			}
			for _, ph := range []string{"name", "password", "expiration"} {
				if !anyUses(r.Creation, ph) {
					t.Fatalf("role %s: creation never uses {{%s}}: %q", where, ph, templateStrings(r.Creation))
				}
			}
			if !anyUses(r.Renewal, "name") || !anyUses(r.Renewal, "expiration") || anyUses(r.Renewal, "password") {
				t.Fatalf("role %s: bad renewal %q", where, templateStrings(r.Renewal))
			}
		}
	}
}

func anyUses(ts []pgrole.Template, ph string) bool {
	for _, t := range ts {
		if t.Uses(ph) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Parse: valid documents

func TestParseFullDocument(t *testing.T) {
	cfg, err := config.Parse(readTestdata(t, "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, cfg)

	// Parse alone never reads the environment.
	if cfg.Audience != "" || cfg.Region != "" || cfg.PolicyDir != "" || cfg.STSEndpoint != "" ||
		cfg.STSHosts != nil || cfg.ProofMaxAge != 0 || cfg.Stage != "" {
		t.Errorf("Parse filled environment fields: %+v", cfg)
	}
	if !cfg.AllowIAMUsers {
		t.Error("AllowIAMUsers = false, want true")
	}
	if cfg.ReplayDatabase != "orders-local" {
		t.Errorf("ReplayDatabase = %q, want orders-local (explicit)", cfg.ReplayDatabase)
	}
	if got, want := cfg.DatabaseNames(), []string{"orders", "orders-local"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DatabaseNames = %q, want %q", got, want)
	}
	if cfg.Database("orders") != cfg.Databases["orders"] || cfg.Database("nope") != nil {
		t.Error("Database() does not look up Databases")
	}

	type roleWant struct {
		memberOf           []string
		defaultTTL, maxTTL time.Duration
		maxLeases          int
		creation, renewal  []string
	}
	type dbWant struct {
		host, dbname, sslmode string
		port, scram           int
		admin                 config.Admin
		roles                 map[string]roleWant
	}
	defCreation := []string{pgrole.DefaultCreation.String()}
	defRenewal := []string{pgrole.DefaultRenewal.String()}
	want := map[string]dbWant{
		"orders": {
			host: "orders.cluster-abc.eu-west-1.rds.amazonaws.com", port: 5432, dbname: "orders",
			sslmode: "verify-full", scram: 4096,
			admin: config.Admin{User: "ephemera_admin", Auth: "rds_iam"},
			roles: map[string]roleWant{
				"readonly": {
					memberOf: []string{"orders_read"}, defaultTTL: 15 * time.Minute, maxTTL: time.Hour, maxLeases: 500,
					creation: []string{"CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"},
					renewal:  defRenewal,
				},
			},
		},
		"orders-local": {
			host: "127.0.0.1", port: 15432, dbname: "orders_dev", sslmode: "disable", scram: 1,
			admin: config.Admin{User: "ephemera_admin", Auth: "dsn", DSNEnv: "ORDERS_ADMIN_DSN"},
			roles: map[string]roleWant{
				"readwrite": {
					memberOf: []string{"orders_read", "orders_write"}, defaultTTL: 5 * time.Minute,
					maxTTL: 2*time.Hour + 30*time.Minute, maxLeases: 100,
					creation: []string{
						"CREATE ROLE {{name}} LOGIN PASSWORD {{password}}",
						"ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
					},
					renewal: []string{
						"ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
						"COMMENT ON ROLE {{name}} IS 'renewed'",
					},
				},
				"reporting": {
					memberOf: []string{"reports"}, defaultTTL: 15 * time.Minute, maxTTL: time.Hour, maxLeases: 100,
					creation: defCreation, renewal: defRenewal,
				},
			},
		},
	}
	if len(cfg.Databases) != len(want) {
		t.Fatalf("got %d databases, want %d", len(cfg.Databases), len(want))
	}
	for name, w := range want {
		db := cfg.Databases[name]
		if db == nil {
			t.Fatalf("database %q missing", name)
		}
		got := dbWant{host: db.Host, dbname: db.DBName, sslmode: db.SSLMode, port: db.Port, scram: db.SCRAMIterations, admin: db.Admin}
		w2 := w
		w2.roles = nil
		if !reflect.DeepEqual(got, w2) {
			t.Errorf("database %q:\n got %+v\nwant %+v", name, got, w2)
		}
		if db.Name != name {
			t.Errorf("database %q: Name = %q", name, db.Name)
		}
		if len(db.Roles) != len(w.roles) {
			t.Errorf("database %q: %d roles, want %d", name, len(db.Roles), len(w.roles))
		}
		for rn, rw := range w.roles {
			r := db.Roles[rn]
			if r == nil {
				t.Errorf("database %q: role %q missing", name, rn)
				continue
			}
			gotR := roleWant{memberOf: r.MemberOf, defaultTTL: r.DefaultTTL, maxTTL: r.MaxTTL, maxLeases: r.MaxLeases,
				creation: templateStrings(r.Creation), renewal: templateStrings(r.Renewal)}
			if r.Name != rn {
				t.Errorf("role %s.%s: Name = %q", name, rn, r.Name)
			}
			if !reflect.DeepEqual(gotR, rw) {
				t.Errorf("role %s.%s:\n got %+v\nwant %+v", name, rn, gotR, rw)
			}
		}
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := config.Parse(readTestdata(t, "minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, cfg)
	if cfg.AllowIAMUsers {
		t.Error("AllowIAMUsers defaults to true")
	}
	if cfg.ReplayDatabase != "orders" {
		t.Errorf("ReplayDatabase = %q, want orders", cfg.ReplayDatabase)
	}
	db := cfg.Databases["orders"]
	checks := []struct {
		field     string
		got, want any
	}{
		{"port", db.Port, 5432},
		{"port (const)", db.Port, config.DefaultPort},
		{"sslmode", db.SSLMode, "verify-full"},
		{"sslmode (const)", db.SSLMode, config.DefaultSSLMode},
		{"dbname", db.DBName, "orders"},
		{"scram_iterations", db.SCRAMIterations, 4096},
		{"scram_iterations (const)", db.SCRAMIterations, pgrole.DefaultSCRAMIterations},
		{"admin.region", db.Admin.Region, ""},
		{"admin.dsn_env", db.Admin.DSNEnv, ""},
	}
	r := db.Roles["readonly"]
	checks = append(checks, []struct {
		field     string
		got, want any
	}{
		{"default_ttl", r.DefaultTTL, 15 * time.Minute},
		{"default_ttl (const)", r.DefaultTTL, config.DefaultTTL},
		{"max_ttl", r.MaxTTL, time.Hour},
		{"max_ttl (const)", r.MaxTTL, config.DefaultMaxTTL},
		{"max_leases", r.MaxLeases, 100},
		{"max_leases (const)", r.MaxLeases, config.DefaultMaxLeases},
		{"creation", templateStrings(r.Creation), []string{pgrole.DefaultCreation.String()}},
		{"renewal", templateStrings(r.Renewal), []string{pgrole.DefaultRenewal.String()}},
		{"member_of", r.MemberOf, []string{"orders_read"}},
	}...)
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
		}
	}
	if config.DefaultProofAge != 5*time.Minute {
		t.Errorf("DefaultProofAge = %s, want 5m", config.DefaultProofAge)
	}
}

func TestParseReplayDatabase(t *testing.T) {
	db := func(name string) string {
		return "  " + name + ":\n" +
			"    host: h\n" +
			"    admin: {user: a, auth: rds_iam}\n" +
			"    roles: {r: {member_of: [g]}}\n"
	}
	tests := []struct {
		name, doc, want string
	}{
		{"single", "databases:\n" + db("orders"), "orders"},
		{"first by name, not by file order", "databases:\n" + db("zeta") + db("alpha") + db("mid"), "alpha"},
		{"sort is bytewise", "databases:\n" + db("orders_b") + db("orders-a"), "orders-a"},
		{"explicit", "replay_database: zeta\ndatabases:\n" + db("zeta") + db("alpha"), "zeta"},
		{"explicit empty string means default", "replay_database: ''\ndatabases:\n" + db("zeta") + db("alpha"), "alpha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.doc)
			checkInvariants(t, cfg)
			if cfg.ReplayDatabase != tt.want {
				t.Errorf("ReplayDatabase = %q, want %q", cfg.ReplayDatabase, tt.want)
			}
		})
	}
}

// TestParseValidEdges: boundary values that must be accepted, and what they
// parse to.
func TestParseValidEdges(t *testing.T) {
	sixteen := make([]string, 16)
	sixteen[0] = "- 'CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}'"
	for i := 1; i < 16; i++ {
		sixteen[i] = "- 'SELECT 1'"
	}
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, db *config.Database, r *config.Role)
	}{
		{"default_ttl == max_ttl", roleDoc("default_ttl: 1h", "max_ttl: 60m"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.DefaultTTL != time.Hour || r.MaxTTL != time.Hour {
				t.Errorf("TTLs %s/%s", r.DefaultTTL, r.MaxTTL)
			}
		}},
		{"ttl minimum 5s", roleDoc("default_ttl: 5s", "max_ttl: 5s"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.DefaultTTL != 5*time.Second || r.MaxTTL != 5*time.Second {
				t.Errorf("TTLs %s/%s", r.DefaultTTL, r.MaxTTL)
			}
		}},
		{"ttl maximum 168h", roleDoc("max_ttl: 168h"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.MaxTTL != 7*24*time.Hour || r.DefaultTTL != 15*time.Minute {
				t.Errorf("TTLs %s/%s", r.DefaultTTL, r.MaxTTL)
			}
		}},
		{"fractional but whole seconds", roleDoc("default_ttl: 1.5m"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.DefaultTTL != 90*time.Second {
				t.Errorf("DefaultTTL %s", r.DefaultTTL)
			}
		}},
		{"max_ttl only, above default", roleDoc("max_ttl: 4h"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.DefaultTTL != 15*time.Minute || r.MaxTTL != 4*time.Hour {
				t.Errorf("TTLs %s/%s", r.DefaultTTL, r.MaxTTL)
			}
		}},
		{"default_ttl only, below max default", roleDoc("default_ttl: 45m"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.DefaultTTL != 45*time.Minute || r.MaxTTL != time.Hour {
				t.Errorf("TTLs %s/%s", r.DefaultTTL, r.MaxTTL)
			}
		}},
		{"max_leases 1", roleDoc("max_leases: 1"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.MaxLeases != 1 {
				t.Errorf("MaxLeases %d", r.MaxLeases)
			}
		}},
		{"max_leases 0 means default", roleDoc("max_leases: 0"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if r.MaxLeases != 100 {
				t.Errorf("MaxLeases %d", r.MaxLeases)
			}
		}},
		{"16 creation statements", roleDoc(append([]string{"creation:"}, sixteen...)...), func(t *testing.T, _ *config.Database, r *config.Role) {
			if len(r.Creation) != 16 {
				t.Errorf("%d creation statements", len(r.Creation))
			}
		}},
		{"empty creation list means default", roleDoc("creation: []", "renewal: []"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if !reflect.DeepEqual(templateStrings(r.Creation), []string{pgrole.DefaultCreation.String()}) ||
				!reflect.DeepEqual(templateStrings(r.Renewal), []string{pgrole.DefaultRenewal.String()}) {
				t.Errorf("creation %q renewal %q", templateStrings(r.Creation), templateStrings(r.Renewal))
			}
		}},
		{"renewal may use extra statements", roleDoc("renewal: ['ALTER ROLE {{name}} VALID UNTIL {{expiration}}', 'SELECT 1']"), func(t *testing.T, _ *config.Database, r *config.Role) {
			if len(r.Renewal) != 2 {
				t.Errorf("%d renewal statements", len(r.Renewal))
			}
		}},
		{"member_of with several odd but legal names", roleDocRaw(`member_of: [Orders Read, "x\"y", ephemeral, pgadmin, public_read]`), func(t *testing.T, _ *config.Database, r *config.Role) {
			want := []string{"Orders Read", `x"y`, "ephemeral", "pgadmin", "public_read"}
			if !reflect.DeepEqual(r.MemberOf, want) {
				t.Errorf("MemberOf %q, want %q", r.MemberOf, want)
			}
		}},
		{"port 1", dbDoc("host: h", "port: 1", "admin: {user: a, auth: rds_iam}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.Port != 1 {
				t.Errorf("Port %d", db.Port)
			}
		}},
		{"port 65535", dbDoc("host: h", "port: 65535", "admin: {user: a, auth: rds_iam}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.Port != 65535 {
				t.Errorf("Port %d", db.Port)
			}
		}},
		{"scram_iterations 1000000", dbDoc("host: h", "scram_iterations: 1000000", "admin: {user: a, auth: rds_iam}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.SCRAMIterations != 1_000_000 {
				t.Errorf("SCRAMIterations %d", db.SCRAMIterations)
			}
		}},
		{"rds_iam with explicit region", dbDoc("host: h", "admin: {user: a, auth: rds_iam, region: us-east-2}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.Admin.Region != "us-east-2" {
				t.Errorf("Region %q", db.Admin.Region)
			}
		}},
		{"dsn admin without user", dbDoc("host: h", "admin: {auth: dsn, dsn_env: _X1}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.Admin != (config.Admin{Auth: "dsn", DSNEnv: "_X1"}) {
				t.Errorf("Admin %+v", db.Admin)
			}
		}},
		{"longest database and role names", "databases:\n  " + "a" + strings.Repeat("b", 62) + ":\n    host: h\n    admin: {user: a, auth: rds_iam}\n    roles:\n      " + "r" + strings.Repeat("0", 39) + ":\n        member_of: [g]\n", nil},
	}
	for _, mode := range []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"} {
		mode := mode
		tests = append(tests, struct {
			name  string
			doc   string
			check func(t *testing.T, db *config.Database, r *config.Role)
		}{"sslmode " + mode, dbDoc("host: h", "sslmode: "+mode, "admin: {user: a, auth: rds_iam}"), func(t *testing.T, db *config.Database, _ *config.Role) {
			if db.SSLMode != mode {
				t.Errorf("SSLMode %q", db.SSLMode)
			}
		}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, tt.doc)
			checkInvariants(t, cfg)
			if tt.check == nil {
				return
			}
			db := cfg.Databases["orders"]
			tt.check(t, db, db.Roles["readonly"])
		})
	}
}

// ---------------------------------------------------------------------------
// Parse: invalid documents

func TestParseInvalid(t *testing.T) {
	const R = "databases.orders.roles.readonly"
	seventeen := []string{"creation:"}
	for i := 0; i < 17; i++ {
		seventeen = append(seventeen, "- 'CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}'")
	}
	tests := []struct {
		name string
		doc  string
		want []string // substrings the error must contain
	}{
		// YAML shape
		{"unknown role field (typo max_tll)", roleDoc("max_tll: 1h"), []string{"max_tll"}},
		{"unknown top-level field", "databasez: {}\n", []string{"databasez"}},
		{"unknown database field", dbDoc("host: h", "hots: h", "admin: {user: a, auth: rds_iam}"), []string{"hots"}},
		{"unknown admin field", dbDoc("host: h", "admin: {auth: dsn, dsn_evn: X}"), []string{"dsn_evn"}},
		{"unknown field in second database", "databases:\n  a:\n    host: h\n    admin: {user: a, auth: rds_iam}\n    roles: {r: {member_of: [g]}}\n  b:\n    host: h\n    sslmod: disable\n", []string{"sslmod"}},
		{"databases is a list", "databases: [orders]\n", []string{"line 1"}},
		{"port is not a number", dbDoc("host: h", "port: abc", "admin: {user: a, auth: rds_iam}"), []string{"line 4"}},
		{"max_leases is not a number", roleDoc("max_leases: many"), []string{"line 8"}},
		{"member_of is a string", roleDocRaw("member_of: orders_read"), []string{"line 7"}},
		{"duplicate database", "databases:\n  a: {host: h}\n  a: {host: h}\n", []string{`"a"`, "already defined"}},
		{"not YAML", "databases: {orders: [\n", []string{"config:"}},

		// databases
		{"no databases (empty map)", "databases: {}\n", []string{"databases"}},
		{"no databases (null)", "databases:\n", []string{"databases"}},
		{"no databases (empty mapping document)", "{}\n", []string{"databases"}},
		{"no databases (only allow_iam_users)", "allow_iam_users: true\n", []string{"databases"}},
		// Empty input fails, but (see the report) with "config: EOF", which
		// names no field.
		{"empty document", "", []string{"config: databases:", "empty"}},
		{"only a comment", "# nothing here\n", []string{"config:"}},
		{"database name uppercase", strings.Replace(dbDoc("host: h", "admin: {user: a, auth: rds_iam}"), "orders:", "Orders:", 1), []string{`databases."Orders"`}},
		{"database name starts with digit", strings.Replace(dbDoc("host: h", "admin: {user: a, auth: rds_iam}"), "orders:", "1orders:", 1), []string{`databases."1orders"`}},
		{"database name with dot", strings.Replace(dbDoc("host: h", "admin: {user: a, auth: rds_iam}"), "orders:", "orders.prod:", 1), []string{`databases."orders.prod"`}},
		{"database name too long", strings.Replace(dbDoc("host: h", "admin: {user: a, auth: rds_iam}"), "orders:", "a"+strings.Repeat("b", 63)+":", 1), []string{`databases."a` + strings.Repeat("b", 63) + `"`}},
		{"database name empty", "databases:\n  '':\n    host: h\n", []string{`databases.""`}},
		{"error in second database is named", "databases:\n  alpha:\n    host: h\n    admin: {user: a, auth: rds_iam}\n    roles: {r: {member_of: [g]}}\n  zeta:\n    admin: {user: a, auth: rds_iam}\n", []string{"databases.zeta.host"}},
		{"database is null", "databases:\n  orders:\n", []string{"databases.orders.host"}},
		{"missing host", dbDoc("port: 5432", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.host"}},
		{"port negative", dbDoc("host: h", "port: -1", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.port"}},
		{"port too large", dbDoc("host: h", "port: 65536", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.port", "65536"}},
		{"sslmode unknown", dbDoc("host: h", "sslmode: on", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.sslmode"}},
		{"sslmode underscore", dbDoc("host: h", "sslmode: verify_full", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.sslmode", "verify_full"}},
		{"sslmode uppercase", dbDoc("host: h", "sslmode: VERIFY-FULL", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.sslmode"}},
		{"scram_iterations negative", dbDoc("host: h", "scram_iterations: -1", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.scram_iterations"}},
		{"scram_iterations too large", dbDoc("host: h", "scram_iterations: 1000001", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.scram_iterations"}},

		// admin
		{"admin missing", dbDoc("host: h"), []string{"databases.orders.admin.auth"}},
		{"admin.auth missing", dbDoc("host: h", "admin: {user: a}"), []string{"databases.orders.admin.auth"}},
		{"admin.auth unknown", dbDoc("host: h", "admin: {user: a, auth: iam}"), []string{"databases.orders.admin.auth", `"iam"`}},
		{"admin.auth wrong case", dbDoc("host: h", "admin: {user: a, auth: DSN, dsn_env: X}"), []string{"databases.orders.admin.auth"}},
		{"admin.auth password", dbDoc("host: h", "admin: {user: a, auth: password}"), []string{"databases.orders.admin.auth"}},
		{"rds_iam without user", dbDoc("host: h", "admin: {auth: rds_iam}"), []string{"databases.orders.admin.user"}},
		{"dsn without dsn_env", dbDoc("host: h", "admin: {user: a, auth: dsn}"), []string{"databases.orders.admin.dsn_env"}},
		{"dsn_env lowercase", dbDoc("host: h", "admin: {auth: dsn, dsn_env: orders_dsn}"), []string{"databases.orders.admin.dsn_env"}},
		{"dsn_env with dash", dbDoc("host: h", "admin: {auth: dsn, dsn_env: ORDERS-DSN}"), []string{"databases.orders.admin.dsn_env"}},
		{"dsn_env starts with digit", dbDoc("host: h", "admin: {auth: dsn, dsn_env: 1DSN}"), []string{"databases.orders.admin.dsn_env"}},
		{"dsn_env holds a DSN", dbDoc("host: h", "admin: {auth: dsn, dsn_env: 'postgres://u:p@h/db'}"), []string{"databases.orders.admin.dsn_env"}},
		{"dsn_env on rds_iam", dbDoc("host: h", "admin: {user: a, auth: rds_iam, dsn_env: X}"), []string{"databases.orders.admin.dsn_env"}},

		// roles
		{"no roles (missing)", dbDocNoRoles("host: h", "admin: {user: a, auth: rds_iam}"), []string{"databases.orders.roles"}},
		{"no roles (empty)", dbDocNoRoles("host: h", "admin: {user: a, auth: rds_iam}", "roles: {}"), []string{"databases.orders.roles"}},
		{"role name uppercase", strings.Replace(roleDoc(), "readonly:", "ReadOnly:", 1), []string{"databases.orders.roles.ReadOnly"}},
		{"role name with dash", strings.Replace(roleDoc(), "readonly:", "read-only:", 1), []string{"databases.orders.roles.read-only"}},
		{"role name starts with digit", strings.Replace(roleDoc(), "readonly:", "1ro:", 1), []string{"databases.orders.roles.1ro"}},
		{"role name too long", strings.Replace(roleDoc(), "readonly:", "r"+strings.Repeat("x", 40)+":", 1), []string{"databases.orders.roles.r" + strings.Repeat("x", 40)}},
		{"role is null", roleDocRaw(), []string{R + ".member_of"}},
		{"member_of missing", roleDocRaw("default_ttl: 15m"), []string{R + ".member_of"}},
		{"member_of empty", roleDocRaw("member_of: []"), []string{R + ".member_of"}},
		{"member_of names an eph_ role", roleDocRaw("member_of: [eph_readonly_abc]"), []string{R + ".member_of[0]", "eph_readonly_abc"}},
		{"member_of names a pg_ role", roleDocRaw("member_of: [orders_read, pg_read_all_data]"), []string{R + ".member_of[1]", "pg_read_all_data"}},
		{"member_of pg_ role (pg_write_server_files)", roleDocRaw("member_of: [pg_write_server_files]"), []string{R + ".member_of[0]"}},
		{"member_of empty string", roleDocRaw("member_of: ['']"), []string{R + ".member_of[0]"}},
		{"member_of NUL byte", roleDocRaw(`member_of: ["a\0b"]`), []string{R + ".member_of[0]"}},

		// durations
		{"default_ttl no unit", roleDoc("default_ttl: 15"), []string{R + ".default_ttl"}},
		{"default_ttl garbage", roleDoc("default_ttl: soon"), []string{R + ".default_ttl", `"soon"`}},
		{"default_ttl days unit", roleDoc("default_ttl: 1d"), []string{R + ".default_ttl"}},
		{"default_ttl below 5s", roleDoc("default_ttl: 4s"), []string{R + ".default_ttl"}},
		{"default_ttl negative", roleDoc("default_ttl: -15m"), []string{R + ".default_ttl"}},
		{"default_ttl zero", roleDoc("default_ttl: 0s"), []string{R + ".default_ttl"}},
		{"default_ttl not whole seconds", roleDoc("default_ttl: 90500ms"), []string{R + ".default_ttl"}},
		{"max_ttl garbage", roleDoc("max_ttl: 1 hour"), []string{R + ".max_ttl"}},
		{"max_ttl above 7 days", roleDoc("max_ttl: 169h"), []string{R + ".max_ttl"}},
		{"max_ttl below 5s", roleDoc("default_ttl: 5s", "max_ttl: 4s"), []string{R + ".max_ttl"}},
		{"max_ttl not whole seconds", roleDoc("max_ttl: 1h0.5s"), []string{R + ".max_ttl"}},
		{"default_ttl > max_ttl", roleDoc("default_ttl: 2h", "max_ttl: 1h"), []string{R + ".default_ttl", "max_ttl"}},
		{"default_ttl > default max_ttl", roleDoc("default_ttl: 61m"), []string{R + ".default_ttl", "max_ttl"}},
		{"member_of names the admin role", roleDocRaw("member_of: [ephemera_admin]"), []string{R + ".member_of[0]", "admin role"}},
		{"member_of longer than 63 bytes", roleDocRaw("member_of: [" + strings.Repeat("g", 64) + "]"), []string{R + ".member_of[0]"}},
		{"multiple YAML documents", roleDoc() + "---\nreplay_database: nowhere\n", []string{"only one YAML document"}},

		// max_leases
		{"max_leases negative", roleDoc("max_leases: -1"), []string{R + ".max_leases"}},
		{"max_leases very negative", roleDoc("max_leases: -100000"), []string{R + ".max_leases"}},

		// creation
		{"creation unknown placeholder", roleDoc("creation: ['CREATE ROLE {{username}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}']"), []string{R + ".creation[0]", "username"}},
		{"creation bad second statement", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}}', 'ALTER ROLE {{name}} VALID UNTIL {{expires}}']"), []string{R + ".creation[1]"}},
		{"creation with two statements in one", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}; DROP ROLE x']"), []string{R + ".creation[0]"}},
		{"creation quoted placeholder", roleDoc(`creation: ["CREATE ROLE {{name}} LOGIN PASSWORD '{{password}}' VALID UNTIL {{expiration}}"]`), []string{R + ".creation[0]"}},
		{"creation unterminated placeholder", roleDoc("creation: ['CREATE ROLE {{name LOGIN']"), []string{R + ".creation[0]"}},
		{"creation empty statement", roleDoc("creation: ['']"), []string{R + ".creation[0]"}},
		{"creation never uses expiration", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}}']"), []string{R + ".creation", "{{expiration}}"}},
		{"creation list never uses expiration", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}}', 'GRANT x TO {{name}}']"), []string{R + ".creation", "{{expiration}}"}},
		{"creation expiration only in a comment", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}} -- VALID UNTIL expiration']"), []string{R + ".creation", "{{expiration}}"}},
		{"creation never uses password", roleDoc("creation: ['CREATE ROLE {{name}} LOGIN VALID UNTIL {{expiration}}']"), []string{R + ".creation", "{{password}}"}},
		{"creation never uses name", roleDoc("creation: ['CREATE ROLE fixed LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}']"), []string{R + ".creation", "{{name}}"}},
		{"creation too many statements", roleDoc(seventeen...), []string{R + ".creation", "16"}},

		// renewal
		{"renewal uses password", roleDoc("renewal: ['ALTER ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}']"), []string{R + ".renewal", "{{password}}"}},
		{"renewal uses password in second statement", roleDoc("renewal: ['ALTER ROLE {{name}} VALID UNTIL {{expiration}}', 'ALTER ROLE {{name}} PASSWORD {{password}}']"), []string{R + ".renewal", "{{password}}"}},
		{"renewal never uses expiration", roleDoc("renewal: ['ALTER ROLE {{name}} LOGIN']"), []string{R + ".renewal", "{{expiration}}"}},
		{"renewal never uses name", roleDoc("renewal: ['ALTER ROLE fixed VALID UNTIL {{expiration}}']"), []string{R + ".renewal", "{{name}}"}},
		{"renewal unknown placeholder", roleDoc("renewal: ['ALTER ROLE {{name}} VALID UNTIL {{expiry}}']"), []string{R + ".renewal[0]", "expiry"}},

		// replay_database
		{"replay_database unknown", "replay_database: payments\n" + roleDoc(), []string{"replay_database", `"payments"`}},
		{"replay_database wrong case", "replay_database: Orders\n" + roleDoc(), []string{"replay_database"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error containing %q\ndocument:\n%s", cfg, tt.want, tt.doc)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with its error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "config: ") {
				t.Errorf("error %q does not start with \"config: \"", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q\ndocument:\n%s", msg, w, tt.doc)
				}
			}
		})
	}
}

// An unset default_ttl is 15m, or max_ttl when that is shorter.
func TestParseDefaultTTLFollowsShortMaxTTL(t *testing.T) {
	cfg, err := config.Parse([]byte(roleDoc("max_ttl: 5m")))
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range cfg.Databases {
		for _, r := range db.Roles {
			if r.DefaultTTL != 5*time.Minute {
				t.Fatalf("default_ttl %s, want 5m", r.DefaultTTL)
			}
		}
	}
}

// A configuration parsed twice yields independent values (no shared
// mutable state between Parse calls).
func TestParseIndependentResults(t *testing.T) {
	data := readTestdata(t, "full.yaml")
	a, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	a.Databases["orders"].Roles["readonly"].MemberOf[0] = "changed"
	a.Databases["orders"].Port = 1
	if b.Databases["orders"].Roles["readonly"].MemberOf[0] != "orders_read" || b.Databases["orders"].Port != 5432 {
		t.Error("two Parse results share state")
	}
}

// ---------------------------------------------------------------------------
// FromEnv

type fakeEnv map[string]string

func (e fakeEnv) getenv(k string) (string, bool) { v, ok := e[k]; return v, ok }

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ephemera.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const envDoc = `databases:
  iam:
    host: iam.example
    admin: {user: ephemera_admin, auth: rds_iam}
    roles: {ro: {member_of: [g]}}
  iam-region:
    host: iam2.example
    admin: {user: ephemera_admin, auth: rds_iam, region: ap-south-1}
    roles: {ro: {member_of: [g]}}
  local:
    host: 127.0.0.1
    admin: {user: ephemera_admin, auth: dsn, dsn_env: ORDERS_ADMIN_DSN}
    roles: {ro: {member_of: [g]}}
`

const dsnOnlyDoc = `databases:
  local:
    host: 127.0.0.1
    admin: {auth: dsn, dsn_env: ORDERS_ADMIN_DSN}
    roles: {ro: {member_of: [g]}}
`

func TestFromEnv(t *testing.T) {
	full := writeConfig(t, envDoc)
	dsnOnly := writeConfig(t, dsnOnlyDoc)
	fullYAML := filepath.Join("testdata", "full.yaml")
	invalid := filepath.Join("testdata", "invalid.yaml")
	missing := filepath.Join(t.TempDir(), "does-not-exist.yaml")

	base := func(path string, kv ...string) fakeEnv {
		e := fakeEnv{
			"EPHEMERA_CONFIG":     path,
			"EPHEMERA_AUDIENCE":   "prod-orders",
			"EPHEMERA_POLICY_DIR": "/etc/ephemera/policies",
			"AWS_REGION":          "eu-west-1",
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<unset>" {
				delete(e, kv[i])
			} else {
				e[kv[i]] = kv[i+1]
			}
		}
		return e
	}

	tests := []struct {
		name    string
		env     fakeEnv
		wantErr []string
		check   func(t *testing.T, cfg *config.Config)
	}{
		{
			name: "defaults",
			env:  base(full),
			check: func(t *testing.T, cfg *config.Config) {
				if cfg.Audience != "prod-orders" || cfg.PolicyDir != "/etc/ephemera/policies" || cfg.Region != "eu-west-1" {
					t.Errorf("Audience/PolicyDir/Region = %q/%q/%q", cfg.Audience, cfg.PolicyDir, cfg.Region)
				}
				if cfg.ProofMaxAge != 5*time.Minute {
					t.Errorf("ProofMaxAge = %s, want 5m", cfg.ProofMaxAge)
				}
				// The default hosts are derived from Region by the verifier.
				if cfg.STSHosts != nil || cfg.STSEndpoint != "" || cfg.Stage != "" {
					t.Errorf("STSHosts/STSEndpoint/Stage = %q/%q/%q, want unset", cfg.STSHosts, cfg.STSEndpoint, cfg.Stage)
				}
				if cfg.ReplayDatabase != "iam" {
					t.Errorf("ReplayDatabase = %q", cfg.ReplayDatabase)
				}
			},
		},
		{
			name: "rds_iam admin region defaults to AWS_REGION",
			env:  base(full),
			check: func(t *testing.T, cfg *config.Config) {
				if got := cfg.Databases["iam"].Admin.Region; got != "eu-west-1" {
					t.Errorf("iam admin region = %q, want eu-west-1", got)
				}
				if got := cfg.Databases["iam-region"].Admin.Region; got != "ap-south-1" {
					t.Errorf("explicit admin region = %q, want ap-south-1 (kept)", got)
				}
				if got := cfg.Databases["local"].Admin.Region; got != "" {
					t.Errorf("dsn admin region = %q, want empty", got)
				}
			},
		},
		{
			name: "all variables, trimmed",
			env: base(full,
				"EPHEMERA_CONFIG", "  "+full+"\n",
				"EPHEMERA_AUDIENCE", " prod-orders ",
				"EPHEMERA_POLICY_DIR", "\t/p\t",
				"AWS_REGION", " us-east-1 ",
				"EPHEMERA_STS_ENDPOINT", " http://127.0.0.1:9000 ",
				"EPHEMERA_STS_HOSTS", "sts.amazonaws.com",
				"EPHEMERA_PROOF_MAX_AGE", " 2m ",
				"EPHEMERA_STAGE", " prod ",
			),
			check: func(t *testing.T, cfg *config.Config) {
				got := []string{cfg.Audience, cfg.PolicyDir, cfg.Region, cfg.STSEndpoint, cfg.Stage}
				want := []string{"prod-orders", "/p", "us-east-1", "http://127.0.0.1:9000", "prod"}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %q, want %q", got, want)
				}
				if cfg.ProofMaxAge != 2*time.Minute {
					t.Errorf("ProofMaxAge = %s", cfg.ProofMaxAge)
				}
				if !reflect.DeepEqual(cfg.STSHosts, []string{"sts.amazonaws.com"}) {
					t.Errorf("STSHosts = %q", cfg.STSHosts)
				}
				if cfg.Databases["iam"].Admin.Region != "us-east-1" {
					t.Errorf("iam admin region = %q", cfg.Databases["iam"].Admin.Region)
				}
			},
		},
		{
			name: "EPHEMERA_STS_HOSTS comma separated, trimmed, lowercased, empties dropped",
			env:  base(full, "EPHEMERA_STS_HOSTS", " STS.AmazonAWS.com ,, sts.eu-west-1.amazonaws.com,\tlocalhost:9000 ,"),
			check: func(t *testing.T, cfg *config.Config) {
				want := []string{"sts.amazonaws.com", "sts.eu-west-1.amazonaws.com", "localhost:9000"}
				if !reflect.DeepEqual(cfg.STSHosts, want) {
					t.Errorf("STSHosts = %q, want %q", cfg.STSHosts, want)
				}
			},
		},
		{
			name: "EPHEMERA_STS_HOSTS replaces AWS_REGION for dsn-only configs",
			env:  base(dsnOnly, "AWS_REGION", "<unset>", "EPHEMERA_STS_HOSTS", "localhost"),
			check: func(t *testing.T, cfg *config.Config) {
				if cfg.Region != "" || !reflect.DeepEqual(cfg.STSHosts, []string{"localhost"}) {
					t.Errorf("Region/STSHosts = %q/%q", cfg.Region, cfg.STSHosts)
				}
			},
		},
		{
			name: "full.yaml: explicit-region-less rds_iam gets AWS_REGION",
			env:  base(fullYAML),
			check: func(t *testing.T, cfg *config.Config) {
				if cfg.Databases["orders"].Admin.Region != "eu-west-1" || cfg.Databases["orders-local"].Admin.Region != "" {
					t.Errorf("regions %q/%q", cfg.Databases["orders"].Admin.Region, cfg.Databases["orders-local"].Admin.Region)
				}
				if cfg.ReplayDatabase != "orders-local" || !cfg.AllowIAMUsers {
					t.Errorf("ReplayDatabase/AllowIAMUsers = %q/%v", cfg.ReplayDatabase, cfg.AllowIAMUsers)
				}
			},
		},
		{name: "EPHEMERA_PROOF_MAX_AGE lower bound 10s", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "10s"), check: func(t *testing.T, cfg *config.Config) {
			if cfg.ProofMaxAge != 10*time.Second {
				t.Errorf("ProofMaxAge = %s", cfg.ProofMaxAge)
			}
		}},
		{name: "EPHEMERA_PROOF_MAX_AGE upper bound 15m", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "15m"), check: func(t *testing.T, cfg *config.Config) {
			if cfg.ProofMaxAge != 15*time.Minute {
				t.Errorf("ProofMaxAge = %s", cfg.ProofMaxAge)
			}
		}},
		{name: "EPHEMERA_PROOF_MAX_AGE empty means default", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "  "), check: func(t *testing.T, cfg *config.Config) {
			if cfg.ProofMaxAge != 5*time.Minute {
				t.Errorf("ProofMaxAge = %s", cfg.ProofMaxAge)
			}
		}},

		// errors
		{name: "EPHEMERA_CONFIG unset", env: base(full, "EPHEMERA_CONFIG", "<unset>"), wantErr: []string{"EPHEMERA_CONFIG"}},
		{name: "EPHEMERA_CONFIG blank", env: base(full, "EPHEMERA_CONFIG", "  "), wantErr: []string{"EPHEMERA_CONFIG"}},
		{name: "EPHEMERA_CONFIG names a missing file", env: base(missing), wantErr: []string{"EPHEMERA_CONFIG", "does-not-exist.yaml"}},
		{name: "EPHEMERA_CONFIG names a directory", env: base(t.TempDir()), wantErr: []string{"EPHEMERA_CONFIG"}},
		{name: "invalid file names field and path", env: base(invalid), wantErr: []string{"max_tll", invalid}},
		{name: "EPHEMERA_AUDIENCE unset", env: base(full, "EPHEMERA_AUDIENCE", "<unset>"), wantErr: []string{"EPHEMERA_AUDIENCE"}},
		{name: "EPHEMERA_AUDIENCE blank", env: base(full, "EPHEMERA_AUDIENCE", " \t"), wantErr: []string{"EPHEMERA_AUDIENCE"}},
		{name: "EPHEMERA_POLICY_DIR unset", env: base(full, "EPHEMERA_POLICY_DIR", "<unset>"), wantErr: []string{"EPHEMERA_POLICY_DIR"}},
		{name: "EPHEMERA_POLICY_DIR blank", env: base(full, "EPHEMERA_POLICY_DIR", ""), wantErr: []string{"EPHEMERA_POLICY_DIR"}},
		{name: "AWS_REGION unset without EPHEMERA_STS_HOSTS", env: base(dsnOnly, "AWS_REGION", "<unset>"), wantErr: []string{"AWS_REGION", "EPHEMERA_STS_HOSTS"}},
		{name: "AWS_REGION blank without EPHEMERA_STS_HOSTS", env: base(dsnOnly, "AWS_REGION", " "), wantErr: []string{"AWS_REGION"}},
		{name: "EPHEMERA_STS_HOSTS lists no host", env: base(full, "EPHEMERA_STS_HOSTS", " , ,"), wantErr: []string{"EPHEMERA_STS_HOSTS"}},
		{name: "rds_iam without any region", env: base(full, "AWS_REGION", "<unset>", "EPHEMERA_STS_HOSTS", "sts.amazonaws.com"), wantErr: []string{"databases.iam.admin.region", "AWS_REGION"}},
		{name: "EPHEMERA_PROOF_MAX_AGE garbage", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "5"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE", `"5"`}},
		{name: "EPHEMERA_PROOF_MAX_AGE below 10s", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "9s"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE"}},
		{name: "EPHEMERA_PROOF_MAX_AGE just below 10s", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "9999ms"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE"}},
		{name: "EPHEMERA_PROOF_MAX_AGE above 15m", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "15m1s"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE"}},
		{name: "EPHEMERA_PROOF_MAX_AGE zero", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "0"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE"}},
		{name: "EPHEMERA_PROOF_MAX_AGE negative", env: base(full, "EPHEMERA_PROOF_MAX_AGE", "-5m"), wantErr: []string{"EPHEMERA_PROOF_MAX_AGE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.FromEnv(tt.env.getenv)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("FromEnv succeeded (%+v), want error containing %q", cfg, tt.wantErr)
				}
				if cfg != nil {
					t.Error("FromEnv returned a config with its error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("FromEnv: %v", err)
			}
			checkInvariants(t, cfg)
			tt.check(t, cfg)
		})
	}
}

func TestFromEnvMissingFileWrapsNotExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := config.FromEnv(fakeEnv{"EPHEMERA_CONFIG": path, "EPHEMERA_AUDIENCE": "a", "EPHEMERA_POLICY_DIR": "p", "AWS_REGION": "r"}.getenv)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "EPHEMERA_CONFIG") {
		t.Fatalf("err = %v, want an fs.ErrNotExist naming EPHEMERA_CONFIG", err)
	}
}

// FromEnv(nil) reads the process environment.
func TestFromEnvNilUsesProcessEnvironment(t *testing.T) {
	path := writeConfig(t, dsnOnlyDoc)
	t.Setenv("EPHEMERA_CONFIG", path)
	t.Setenv("EPHEMERA_AUDIENCE", "from-process-env")
	t.Setenv("EPHEMERA_POLICY_DIR", "/policies")
	t.Setenv("AWS_REGION", "eu-central-1")
	t.Setenv("EPHEMERA_STS_HOSTS", "")
	t.Setenv("EPHEMERA_PROOF_MAX_AGE", "")
	t.Setenv("EPHEMERA_STAGE", "")
	t.Setenv("EPHEMERA_STS_ENDPOINT", "")
	cfg, err := config.FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Audience != "from-process-env" || cfg.Region != "eu-central-1" {
		t.Errorf("Audience/Region = %q/%q", cfg.Audience, cfg.Region)
	}
}

// ---------------------------------------------------------------------------
// Fuzzing

func FuzzParse(f *testing.F) {
	for _, name := range []string{"full.yaml", "minimal.yaml", "invalid.yaml"} {
		f.Add(readTestdata(f, name))
	}
	for _, s := range []string{
		envDoc,
		dsnOnlyDoc,
		roleDoc("default_ttl: 30s", "max_ttl: 168h", "max_leases: 1"),
		roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}}', 'ALTER ROLE {{name}} VALID UNTIL {{expiration}}']"),
		roleDoc("renewal: ['ALTER ROLE {{name}} VALID UNTIL {{expiration}}']"),
		roleDoc("default_ttl: 2h", "max_ttl: 1h"),
		roleDoc("creation: ['CREATE ROLE {{name}} LOGIN PASSWORD {{password}}']"),
		"replay_database: x\n" + roleDoc(),
		"",
		"{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config with its error")
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error %q lacks the config: prefix", err)
			}
			return
		}
		checkInvariants(t, cfg)
	})
}

// TestAdminPoolSizeFollowsWhereTheBrokerRuns: small in Lambda (one request
// at a time per instance), larger in a long-running server; the YAML and
// EPHEMERA_DB_POOL_SIZE override it, the environment winning.
func TestAdminPoolSizeFollowsWhereTheBrokerRuns(t *testing.T) {
	dir := t.TempDir()
	write := func(extra string) string {
		p := filepath.Join(dir, "c.yaml")
		yaml := "databases:\n  orders:\n    host: h\n    port: 5432\n    dbname: orders\n    admin: {user: ephemera_admin, auth: dsn, dsn_env: X}\n    roles:\n      readonly:\n        member_of: [orders_read]\n" + extra
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, yaml string
		env        map[string]string
		want       int
	}{
		{"lambda default", "", map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "broker"}, config.DefaultAdminPoolSize},
		{"server default", "", nil, config.DefaultServerPoolSize},
		{"yaml", "admin_pool_size: 3\n", map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "broker"}, 3},
		{"environment wins", "admin_pool_size: 3\n", map[string]string{"EPHEMERA_DB_POOL_SIZE": "1"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"EPHEMERA_CONFIG": write(c.yaml), "EPHEMERA_POLICY_DIR": dir, "EPHEMERA_AUDIENCE": "a", "AWS_REGION": "us-east-1"}
			for k, v := range c.env {
				env[k] = v
			}
			cfg, err := config.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if cfg.AdminPoolSize != c.want || cfg.DBTimeout != config.DefaultDBTimeout {
				t.Fatalf("pool %d timeout %v, want %d %v", cfg.AdminPoolSize, cfg.DBTimeout, c.want, config.DefaultDBTimeout)
			}
		})
	}
	env := map[string]string{"EPHEMERA_CONFIG": write(""), "EPHEMERA_POLICY_DIR": dir, "EPHEMERA_AUDIENCE": "a", "AWS_REGION": "us-east-1",
		"EPHEMERA_DB_TIMEOUT": "50ms"}
	if _, err := config.FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err == nil || !strings.Contains(err.Error(), "EPHEMERA_DB_TIMEOUT") {
		t.Fatalf("a 50ms deadline: %v", err)
	}
}

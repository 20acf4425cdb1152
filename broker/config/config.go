// Package config loads the broker's configuration: a YAML file naming the
// databases (host, port, dbname, sslmode, how the admin logs in), their
// roles (member_of groups, TTLs, max_leases, creation and renewal
// templates), the AWS profiles, and the admin pool's size; and the
// environment variables below. Every invalid setting fails with a message
// that names the field.
//
// Environment variables:
//
//	EPHEMERA_CONFIG         path of the YAML file (required)
//	EPHEMERA_POLICY_DIR     directory of .cedar files (required)
//	EPHEMERA_AUDIENCE       the audience proofs must carry (required)
//	EPHEMERA_STS_ENDPOINT   where verified proofs are sent; default https://<proof's allowlisted host>
//	EPHEMERA_STS_HOSTS      comma-separated hosts accepted in a proof's URL;
//	                        default sts.amazonaws.com,sts.<AWS_REGION>.amazonaws.com
//	EPHEMERA_PROOF_MAX_AGE  freshness window, default 5m
//	EPHEMERA_STAGE          context.stage for policies
//	EPHEMERA_DB_TIMEOUT     deadline of one request's database work (pool wait included), default 5s;
//	                        past it the broker answers 503 database_unavailable
//	EPHEMERA_DB_POOL_SIZE   admin connections per database and process; overrides the YAML's
//	                        admin_pool_size (default 2 in Lambda, 8 in a long-running server)
//	EPHEMERA_METRICS_NAMESPACE  CloudWatch namespace of the metrics, default "ephemera"
//	AWS_REGION              the broker's region (required unless EPHEMERA_STS_HOSTS is set)
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// Config is the whole broker configuration.
type Config struct {
	Audience    string
	Region      string
	STSEndpoint string
	STSHosts    []string
	ProofMaxAge time.Duration
	Stage       string
	PolicyDir   string
	// AllowIAMUsers accepts IAM users as principals (YAML allow_iam_users).
	AllowIAMUsers bool
	// ReplayDatabase is the database whose ephemera.nonces table records used
	// proof nonces for every request (YAML replay_database). Default: the
	// first database by name. One store for all requests, so a proof used
	// against one database cannot be replayed against another.
	ReplayDatabase string
	// Databases by name.
	Databases map[string]*Database
	// AWSProfiles by name (YAML aws_profiles): AWS sessions the broker can
	// assume for workloads (POST /v1/aws-credentials).
	AWSProfiles map[string]*AWSProfile
	// DBTimeout bounds one request's database work, the wait for a pooled
	// connection included (EPHEMERA_DB_TIMEOUT, default DefaultDBTimeout);
	// past it the broker answers 503 database_unavailable.
	DBTimeout time.Duration
	// AdminPoolSize is the number of admin connections per database and
	// broker process (YAML admin_pool_size, overridden by
	// EPHEMERA_DB_POOL_SIZE). The default is sized for where the broker
	// runs: DefaultAdminPoolSize in Lambda, which sends an instance one
	// request at a time (a request uses one connection at a time, and the
	// database's max_connections is shared by every instance: reserved
	// concurrency × pool size); DefaultServerPoolSize in a long-running
	// server.
	AdminPoolSize int
	// MetricsNamespace is the CloudWatch namespace of the broker's and the
	// reaper's metrics (EPHEMERA_METRICS_NAMESPACE; "" means the metrics
	// package's default), so two stacks in one account keep apart.
	MetricsNamespace string
}

// AWSProfile is one assumable AWS role with its limits.
type AWSProfile struct {
	Name string
	// RoleARN is the role the broker assumes.
	RoleARN string
	// SessionPolicy is an optional inline session policy (JSON): the
	// session's permissions are the intersection with the role's.
	SessionPolicy string
	// DefaultTTL and MaxTTL bound the session (STS minimum is 15 minutes).
	DefaultTTL, MaxTTL time.Duration
	// SessionTags are passed to AssumeRole.
	SessionTags map[string]string
}

// Database is one target PostgreSQL database.
type Database struct {
	Name            string
	Host            string
	Port            int
	DBName          string
	SSLMode         string
	Admin           Admin
	SCRAMIterations int
	Roles           map[string]*Role
}

// Admin says how the broker logs in as the database's admin role.
type Admin struct {
	User string
	// Auth is "rds_iam" (an IAM auth token per connection) or "dsn".
	Auth string
	// DSNEnv names the environment variable holding the DSN (auth: dsn).
	DSNEnv string
	// Region of the RDS instance for rds_iam; default the broker's region.
	Region string
}

// Role is one grantable database role.
type Role struct {
	Name       string
	MemberOf   []string
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	MaxLeases  int
	Creation   []pgrole.Template
	Renewal    []pgrole.Template
}

// Defaults.
const (
	DefaultPort      = 5432
	DefaultSSLMode   = "verify-full"
	DefaultTTL       = 15 * time.Minute
	DefaultMaxTTL    = time.Hour
	DefaultMaxLeases = 100
	DefaultProofAge  = 5 * time.Minute
	// DefaultDBTimeout is EPHEMERA_DB_TIMEOUT's default.
	DefaultDBTimeout = 5 * time.Second
	// DefaultAdminPoolSize is admin_pool_size's default: one request at a
	// time per Lambda instance needs one connection; the second is for the
	// reaper's work that a broker does on issue.
	DefaultAdminPoolSize = 2
	// DefaultServerPoolSize is the default outside Lambda, where one
	// process serves requests concurrently.
	DefaultServerPoolSize = 8
	minAllowedTTL         = 5 * time.Second // short TTLs are how rotation and reaping are tested
	maxAllowedTTL         = 7 * 24 * time.Hour
	maxTemplatesOfAKind   = 16
)

var (
	dbNameRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	roleNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)
	envNameRE  = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
	sslModes   = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true}
)

// yaml shapes (strict: unknown fields are errors)
type fileDoc struct {
	ReplayDatabase string             `yaml:"replay_database"`
	AllowIAMUsers  bool               `yaml:"allow_iam_users"`
	Databases      map[string]fileDB  `yaml:"databases"`
	AWSProfiles    map[string]fileAWS `yaml:"aws_profiles"`
	AdminPoolSize  int                `yaml:"admin_pool_size"`
}

type fileAWS struct {
	RoleARN       string            `yaml:"role_arn"`
	SessionPolicy string            `yaml:"session_policy"`
	DefaultTTL    string            `yaml:"default_ttl"`
	MaxTTL        string            `yaml:"max_ttl"`
	SessionTags   map[string]string `yaml:"session_tags"`
}

type fileDB struct {
	Host            string              `yaml:"host"`
	Port            int                 `yaml:"port"`
	DBName          string              `yaml:"dbname"`
	SSLMode         string              `yaml:"sslmode"`
	Admin           fileAdmin           `yaml:"admin"`
	SCRAMIterations int                 `yaml:"scram_iterations"`
	Roles           map[string]fileRole `yaml:"roles"`
}

type fileAdmin struct {
	User   string `yaml:"user"`
	Auth   string `yaml:"auth"`
	DSNEnv string `yaml:"dsn_env"`
	Region string `yaml:"region"`
}

type fileRole struct {
	MemberOf   []string `yaml:"member_of"`
	DefaultTTL string   `yaml:"default_ttl"`
	MaxTTL     string   `yaml:"max_ttl"`
	MaxLeases  int      `yaml:"max_leases"`
	Creation   []string `yaml:"creation"`
	Renewal    []string `yaml:"renewal"`
}

// Getenv looks up an environment variable (os.LookupEnv in production).
type Getenv func(string) (string, bool)

// FromEnv loads the configuration named by the environment.
func FromEnv(getenv Getenv) (*Config, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	get := func(k string) string { v, _ := getenv(k); return strings.TrimSpace(v) }
	path := get("EPHEMERA_CONFIG")
	if path == "" {
		return nil, errors.New("config: EPHEMERA_CONFIG is required (path of the YAML file)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: EPHEMERA_CONFIG: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	if err := cfg.applyEnv(get); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) applyEnv(get func(string) string) error {
	c.Audience = get("EPHEMERA_AUDIENCE")
	if c.Audience == "" {
		return errors.New("config: EPHEMERA_AUDIENCE is required")
	}
	c.PolicyDir = get("EPHEMERA_POLICY_DIR")
	if c.PolicyDir == "" {
		return errors.New("config: EPHEMERA_POLICY_DIR is required")
	}
	c.Region = get("AWS_REGION")
	c.STSEndpoint = get("EPHEMERA_STS_ENDPOINT")
	if hosts := get("EPHEMERA_STS_HOSTS"); hosts != "" {
		for _, h := range strings.Split(hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				c.STSHosts = append(c.STSHosts, strings.ToLower(h))
			}
		}
		if len(c.STSHosts) == 0 {
			return errors.New("config: EPHEMERA_STS_HOSTS lists no host")
		}
	} else if c.Region == "" {
		return errors.New("config: AWS_REGION is required to derive the STS hosts (or set EPHEMERA_STS_HOSTS)")
	}
	c.ProofMaxAge = DefaultProofAge
	if s := get("EPHEMERA_PROOF_MAX_AGE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 10*time.Second || d > 15*time.Minute {
			return fmt.Errorf("config: EPHEMERA_PROOF_MAX_AGE=%q must be a duration between 10s and 15m", s)
		}
		c.ProofMaxAge = d
	}
	c.Stage = get("EPHEMERA_STAGE")
	c.MetricsNamespace = get("EPHEMERA_METRICS_NAMESPACE")
	c.DBTimeout = DefaultDBTimeout
	if s := get("EPHEMERA_DB_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 100*time.Millisecond || d > time.Minute {
			return fmt.Errorf("config: EPHEMERA_DB_TIMEOUT=%q must be a duration between 100ms and 1m", s)
		}
		c.DBTimeout = d
	}
	if s := get("EPHEMERA_DB_POOL_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return fmt.Errorf("config: EPHEMERA_DB_POOL_SIZE=%q must be a number from 1 to 100", s)
		}
		c.AdminPoolSize = n
	}
	if c.AdminPoolSize == 0 {
		c.AdminPoolSize = DefaultAdminPoolSize
		if get("AWS_LAMBDA_FUNCTION_NAME") == "" {
			// A long-running server (ephemera broker serve, the local
			// stack) answers requests concurrently.
			c.AdminPoolSize = DefaultServerPoolSize
		}
	}
	for _, db := range c.Databases {
		if db.Admin.Auth == "rds_iam" && db.Admin.Region == "" {
			if c.Region == "" {
				return fmt.Errorf("config: databases.%s.admin.region: required for rds_iam when AWS_REGION is unset", db.Name)
			}
			db.Admin.Region = c.Region
		}
	}
	return nil
}

// Parse parses and validates the YAML document alone (no environment).
func Parse(data []byte) (*Config, error) {
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, errors.New("config: databases: at least one database is required (the document is empty)")
	} else if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: only one YAML document is allowed")
	}
	if len(doc.Databases) == 0 {
		return nil, errors.New("config: databases: at least one database is required")
	}
	cfg := &Config{Databases: map[string]*Database{}, AllowIAMUsers: doc.AllowIAMUsers, DBTimeout: DefaultDBTimeout}
	if doc.AdminPoolSize != 0 {
		if doc.AdminPoolSize < 1 || doc.AdminPoolSize > 100 {
			return nil, fmt.Errorf("config: admin_pool_size: %d must be from 1 to 100", doc.AdminPoolSize)
		}
		cfg.AdminPoolSize = doc.AdminPoolSize
	}
	for _, name := range sortedKeys(doc.Databases) {
		db, err := parseDB(name, doc.Databases[name])
		if err != nil {
			return nil, err
		}
		cfg.Databases[name] = db
	}
	cfg.AWSProfiles = map[string]*AWSProfile{}
	for _, name := range sortedKeys(doc.AWSProfiles) {
		p, err := parseAWSProfile(name, doc.AWSProfiles[name])
		if err != nil {
			return nil, err
		}
		cfg.AWSProfiles[name] = p
	}
	cfg.ReplayDatabase = doc.ReplayDatabase
	if cfg.ReplayDatabase == "" {
		cfg.ReplayDatabase = sortedKeys(doc.Databases)[0]
	} else if cfg.Databases[cfg.ReplayDatabase] == nil {
		return nil, fmt.Errorf("config: replay_database: %q is not a configured database", cfg.ReplayDatabase)
	}
	return cfg, nil
}

func parseDB(name string, f fileDB) (*Database, error) {
	field := func(s string) string { return "databases." + name + "." + s }
	if !dbNameRE.MatchString(name) {
		return nil, fmt.Errorf("config: databases.%q: name must match %s", name, dbNameRE)
	}
	db := &Database{Name: name, Host: f.Host, Port: f.Port, DBName: f.DBName, SSLMode: f.SSLMode, SCRAMIterations: f.SCRAMIterations, Roles: map[string]*Role{}}
	if db.Host == "" {
		return nil, fmt.Errorf("config: %s: required", field("host"))
	}
	if db.Port == 0 {
		db.Port = DefaultPort
	}
	if db.Port < 1 || db.Port > 65535 {
		return nil, fmt.Errorf("config: %s: %d is not a port", field("port"), db.Port)
	}
	if db.DBName == "" {
		db.DBName = name
	}
	if db.SSLMode == "" {
		db.SSLMode = DefaultSSLMode
	}
	if !sslModes[db.SSLMode] {
		return nil, fmt.Errorf("config: %s: %q is not a libpq sslmode", field("sslmode"), db.SSLMode)
	}
	if db.SCRAMIterations == 0 {
		db.SCRAMIterations = pgrole.DefaultSCRAMIterations
	}
	if db.SCRAMIterations < 1 || db.SCRAMIterations > 1_000_000 {
		return nil, fmt.Errorf("config: %s: must be between 1 and 1000000", field("scram_iterations"))
	}
	db.Admin = Admin{User: f.Admin.User, Auth: f.Admin.Auth, DSNEnv: f.Admin.DSNEnv, Region: f.Admin.Region}
	switch db.Admin.Auth {
	case "rds_iam":
		if db.Admin.User == "" {
			return nil, fmt.Errorf("config: %s: required for rds_iam", field("admin.user"))
		}
		if db.Admin.DSNEnv != "" {
			return nil, fmt.Errorf("config: %s: only for auth: dsn", field("admin.dsn_env"))
		}
	case "dsn":
		if !envNameRE.MatchString(db.Admin.DSNEnv) {
			return nil, fmt.Errorf("config: %s: must name an environment variable", field("admin.dsn_env"))
		}
		if db.Admin.Region != "" {
			return nil, fmt.Errorf("config: %s: only for auth: rds_iam", field("admin.region"))
		}
	case "":
		return nil, fmt.Errorf("config: %s: required (rds_iam or dsn)", field("admin.auth"))
	default:
		return nil, fmt.Errorf("config: %s: %q is not rds_iam or dsn", field("admin.auth"), db.Admin.Auth)
	}
	if len(f.Roles) == 0 {
		return nil, fmt.Errorf("config: %s: at least one role is required", field("roles"))
	}
	for _, rn := range sortedKeys(f.Roles) {
		r, err := parseRole(field("roles."+rn), rn, f.Roles[rn], db.Admin.User)
		if err != nil {
			return nil, err
		}
		db.Roles[rn] = r
	}
	return db, nil
}

func parseRole(field, name string, f fileRole, adminUser string) (*Role, error) {
	if !roleNameRE.MatchString(name) {
		return nil, fmt.Errorf("config: %s: role name must match %s", field, roleNameRE)
	}
	r := &Role{Name: name, MemberOf: f.MemberOf, MaxLeases: f.MaxLeases}
	if len(r.MemberOf) == 0 {
		return nil, fmt.Errorf("config: %s.member_of: at least one group role is required", field)
	}
	for i, g := range r.MemberOf {
		if _, err := pgrole.QuoteIdentifier(g); err != nil || len(g) > 63 || strings.HasPrefix(g, pgrole.Prefix) || strings.HasPrefix(g, "pg_") ||
			strings.HasPrefix(g, "ephemera_leased_") { // the deployment's marker group grants nothing and marks ephemeral users
			return nil, fmt.Errorf("config: %s.member_of[%d]: %q is not a usable group role name", field, i, g)
		}
		// A member of the admin role could SET ROLE to it and gain CREATEROLE.
		if adminUser != "" && g == adminUser {
			return nil, fmt.Errorf("config: %s.member_of[%d]: must not be the admin role", field, i)
		}
	}
	var err error
	if r.MaxTTL, err = parseTTL(f.MaxTTL, DefaultMaxTTL); err != nil {
		return nil, fmt.Errorf("config: %s.max_ttl: %w", field, err)
	}
	// An unset default_ttl is 15m, or max_ttl when that is shorter.
	if r.DefaultTTL, err = parseTTL(f.DefaultTTL, min(DefaultTTL, r.MaxTTL)); err != nil {
		return nil, fmt.Errorf("config: %s.default_ttl: %w", field, err)
	}
	if r.DefaultTTL > r.MaxTTL {
		return nil, fmt.Errorf("config: %s.default_ttl: %s exceeds max_ttl %s", field, r.DefaultTTL, r.MaxTTL)
	}
	if r.MaxLeases == 0 {
		r.MaxLeases = DefaultMaxLeases
	}
	if r.MaxLeases < 1 {
		return nil, fmt.Errorf("config: %s.max_leases: must be at least 1", field)
	}
	if r.Creation, err = parseTemplates(field+".creation", f.Creation, pgrole.DefaultCreation); err != nil {
		return nil, err
	}
	// No credential outlives its lease: creation must set name, password and VALID UNTIL.
	for _, ph := range []string{"name", "password", "expiration"} {
		if !anyUses(r.Creation, ph) {
			return nil, fmt.Errorf("config: %s.creation: no statement uses {{%s}}", field, ph)
		}
	}
	if r.Renewal, err = parseTemplates(field+".renewal", f.Renewal, pgrole.DefaultRenewal); err != nil {
		return nil, err
	}
	if !anyUses(r.Renewal, "expiration") || !anyUses(r.Renewal, "name") {
		return nil, fmt.Errorf("config: %s.renewal: must use {{name}} and {{expiration}}", field)
	}
	if anyUses(r.Renewal, "password") {
		return nil, fmt.Errorf("config: %s.renewal: must not use {{password}} (renewal keeps the password)", field)
	}
	return r, nil
}

func parseTTL(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 15m)", s)
	}
	if d < minAllowedTTL || d > maxAllowedTTL || d%time.Second != 0 {
		return 0, fmt.Errorf("%s must be whole seconds between %s and %s", d, minAllowedTTL, maxAllowedTTL)
	}
	return d, nil
}

func parseTemplates(field string, stmts []string, def pgrole.Template) ([]pgrole.Template, error) {
	if len(stmts) == 0 {
		return []pgrole.Template{def}, nil
	}
	if len(stmts) > maxTemplatesOfAKind {
		return nil, fmt.Errorf("config: %s: at most %d statements", field, maxTemplatesOfAKind)
	}
	out := make([]pgrole.Template, 0, len(stmts))
	for i, s := range stmts {
		t, err := pgrole.ParseTemplate(s)
		if err != nil {
			return nil, fmt.Errorf("config: %s[%d]: %w", field, i, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func anyUses(ts []pgrole.Template, ph string) bool {
	for _, t := range ts {
		if t.Uses(ph) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Database returns the named database, or nil.
func (c *Config) Database(name string) *Database { return c.Databases[name] }

// DatabaseNames returns the configured database names, sorted.
func (c *Config) DatabaseNames() []string { return sortedKeys(c.Databases) }

var (
	roleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`)
	tagKeyRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	tagValRE  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
)

// STS limits for AssumeRole sessions.
const (
	minAWSSession = 15 * time.Minute
	maxAWSSession = 12 * time.Hour
)

func parseAWSProfile(name string, f fileAWS) (*AWSProfile, error) {
	field := "aws_profiles." + name
	if !dbNameRE.MatchString(name) {
		return nil, fmt.Errorf("config: aws_profiles.%q: name must match %s", name, dbNameRE)
	}
	p := &AWSProfile{Name: name, RoleARN: f.RoleARN, SessionPolicy: strings.TrimSpace(f.SessionPolicy), SessionTags: f.SessionTags}
	if !roleARNRE.MatchString(p.RoleARN) {
		return nil, fmt.Errorf("config: %s.role_arn: %q is not an IAM role ARN", field, p.RoleARN)
	}
	if p.SessionPolicy != "" && !json.Valid([]byte(p.SessionPolicy)) {
		return nil, fmt.Errorf("config: %s.session_policy: not valid JSON", field)
	}
	parse := func(s string, def time.Duration, which string) (time.Duration, error) {
		if s == "" {
			return def, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < minAWSSession || d > maxAWSSession || d%time.Second != 0 {
			return 0, fmt.Errorf("config: %s.%s: %q must be whole seconds between 15m and 12h (STS limits)", field, which, s)
		}
		return d, nil
	}
	var err error
	if p.MaxTTL, err = parse(f.MaxTTL, time.Hour, "max_ttl"); err != nil {
		return nil, err
	}
	if p.DefaultTTL, err = parse(f.DefaultTTL, minAWSSession, "default_ttl"); err != nil {
		return nil, err
	}
	if p.DefaultTTL > p.MaxTTL {
		return nil, fmt.Errorf("config: %s.default_ttl: exceeds max_ttl", field)
	}
	if len(p.SessionTags) > 50 {
		return nil, fmt.Errorf("config: %s.session_tags: at most 50 tags", field)
	}
	for k, v := range p.SessionTags {
		if !tagKeyRE.MatchString(k) || strings.HasPrefix(strings.ToLower(k), "aws:") || !tagValRE.MatchString(v) {
			return nil, fmt.Errorf("config: %s.session_tags: %q is not a valid session tag", field, k)
		}
	}
	return p, nil
}

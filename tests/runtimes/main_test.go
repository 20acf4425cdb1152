package runtimes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// The AWS profile every function of the package uses: the broker (itself the role
// ephemera-broker) assumes reportsRole for it.
const (
	profileName = "reports"      // the function's name for it (EPHEMERA_AWS_PROFILES)
	profile     = "reports-read" // the broker's aws_profiles entry
	reportsRole = "arn:aws:iam::123456789012:role/reports-read"
	brokerRole  = "ephemera-broker"
)

// Rotating role: the broker's YAML refuses TTLs under 30 s on purpose, so the stack's
// Configure hook adds it, for many rotations in a short test.
const (
	rotatingTTL    = 6 * time.Second
	rotatingMaxTTL = 12 * time.Second
)

const awsConfigYAML = `aws_profiles:
  ` + profile + `:
    role_arn: ` + reportsRole + `
    max_ttl: 1h
`

const assumePolicy = `
@id("orders-api-assumes-reports")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"` + profile + `")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };
`

// One stack, one extension binary and one admin pool for the whole package.
var (
	st        *stack.Stack
	admin     *pgxpool.Pool // superuser pool on the stack's database
	extDir    string        // holds the extension "ephemera"
	rec       = &stack.Passwords{}
	brokerOut = &observe.Buffer{} // the broker's logs, audit lines and metrics
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "FAIL: tests/runtimes setup: "+format+"\n", args...)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ephemera-runtimes-*")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)

	built := make(chan error, 1)
	go func() {
		var err error
		extDir, _, err = stack.Binaries(ctx, filepath.Join(dir, "bin"))
		built <- err
	}()
	brokerID, err := startStack(ctx, dir)
	if err != nil {
		<-built
		return fail("stack: %v", err)
	}
	defer st.Close()
	st.STS.Add(brokerID)
	st.STS.AddRole(stsserver.Role{ARN: reportsRole, TrustedPrincipals: []string{stack.RoleARN(brokerRole)}})
	if err := <-built; err != nil {
		return fail("building the extension: %v", err)
	}
	if admin, err = pgxpool.New(ctx, st.PG.URL()); err != nil {
		return fail("admin pool: %v", err)
	}
	defer admin.Close()
	return m.Run()
}

// startStack starts the local system with the AWS profile, the rotating role and a reaper
// every second (so that expired users lose their sessions, as in AWS), and returns the
// broker's own AWS identity, to be registered with the STS emulator.
//
// The stack has no option for the broker's AWS identity yet: broker.New then loads the
// AWS SDK's default configuration, whose static credentials come from the environment
// when it loads. So the environment holds the identity's keys (and no shared config
// files) only while the stack starts.
func startStack(ctx context.Context, dir string) (stsserver.Identity, error) {
	id := stsserver.NewIdentity(stack.Account, brokerRole, "broker")
	vars := map[string]string{
		"AWS_ACCESS_KEY_ID":           id.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":       id.SecretAccessKey,
		"AWS_SESSION_TOKEN":           id.SessionToken,
		"AWS_CONFIG_FILE":             filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "no-aws-credentials"),
		"AWS_PROFILE":                 "",
		"AWS_EC2_METADATA_DISABLED":   "true",
	}
	for k, v := range vars {
		old, had := os.LookupEnv(k)
		if v == "" {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, v)
		}
		if had {
			defer os.Setenv(k, old)
		} else {
			defer os.Unsetenv(k)
		}
	}
	var err error
	st, err = stack.Start(ctx, stack.Options{
		Config:     stack.DefaultConfig + awsConfigYAML,
		Policies:   stack.DefaultPolicies + assumePolicy,
		ReapEvery:  time.Second,
		Output:     brokerOut,
		Middleware: rec.Wrap,
		Configure:  stack.ShortRole("rotating", rotatingTTL, rotatingMaxTTL),
	})
	return id, err
}

// runtimeSpec is one language's demo function.
type runtimeSpec struct {
	name string // subtest name
	dir  string // the function's folder, relative to this package
	// missing says what to install when the interpreter or the packages are absent.
	missing func() string
}

var runtimes = []runtimeSpec{
	{name: "python", dir: "../../functions/demo-python", missing: PythonMissing},
	{name: "node", dir: "../../functions/demo-node", missing: NodeMissing},
}

package invoke

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Defaults of Options and of the function's environment. They match the
// local stack: database "orders" with role "readonly", and the AWS profile
// ProfileName whose role the broker assumes for functions the policy lets.
const (
	// DefaultRole is the execution role's name: LocalPolicies let
	// orders-api-* use database orders and assume the AWS profile.
	DefaultRole = "orders-api-local"
	// ProfileName is the AWS profile (aws_profiles entry) of the local
	// broker; its role is arn:aws:iam::123456789012:role/reports-read.
	ProfileName = "reports-read"
	// DefaultCredentials is EPHEMERA_CREDENTIALS when env.json has none.
	DefaultCredentials = stack.DefaultCredentials
	// DefaultAWSProfiles is EPHEMERA_AWS_PROFILES when env.json has none.
	DefaultAWSProfiles = "reports=" + ProfileName + ":15m"
	// DefaultInitTimeout is EPHEMERA_INIT_TIMEOUT when env.json has none:
	// longer than the extension's own default (5s), because interpreters
	// and PostgreSQL share one machine here.
	DefaultInitTimeout = "20s"
	// DefaultTimeout is Options.Timeout's default, per invocation.
	DefaultTimeout = 30 * time.Second
	// DefaultSandboxInitTimeout is Options.InitTimeout's default.
	DefaultSandboxInitTimeout = 60 * time.Second
)

// LocalPolicies are the broker's Cedar policies unless Options.Policies
// says otherwise: stack.DefaultPolicies, and orders-api-* may assume the
// AWS profile ProfileName.
const LocalPolicies = stack.DefaultPolicies + `
// Functions whose execution role is orders-api-* may get sessions of the AWS profile ` + ProfileName + `.
@id("orders-api-assumes-` + ProfileName + `")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"` + ProfileName + `")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };
`

// Options say which function to run and how. Command is required; zero
// fields take the documented defaults.
type Options struct {
	// Command is the function: a directory holding an executable
	// "bootstrap" (any runtime: the Lambda custom-runtime layout), an
	// executable file (a Go binary built with -tags lambda.norpc), or a
	// command and its arguments (looked up on PATH), run in the current
	// directory, which is then its LAMBDA_TASK_ROOT.
	Command []string
	// EnvVars is the parsed env.json (nil: none).
	EnvVars *EnvVars
	// Function picks the function of EnvVars and is the Lambda function's
	// name (the STS session of its role). Default: the only function of
	// EnvVars, else the base name of Command[0].
	Function string
	// Role is the execution role's name; default DefaultRole.
	Role string
	// Policies is the broker's Cedar text; default LocalPolicies.
	Policies string
	// ExtensionsDir holds the extension as "ephemera" (for example
	// extensions/ of the layer zip). Default: built from this source tree
	// with the go command.
	ExtensionsDir string
	// Timeout bounds each invocation; default DefaultTimeout.
	Timeout time.Duration
	// InitTimeout bounds INIT (the extension's and the runtime's); default
	// DefaultSandboxInitTimeout.
	InitTimeout time.Duration
	// ReapEvery is the reaper's interval; default 5s.
	ReapEvery time.Duration
	// Logs receives what the function and the extension print, each line
	// prefixed "[runtime] " or "[ephemera] ", and this package's notices
	// ("[local] "). Default: discarded.
	Logs io.Writer
	// BrokerLogs receives the broker's JSON logs and audit lines. Default:
	// discarded.
	BrokerLogs io.Writer
}

// Function is the user's function running in an emulated Lambda sandbox
// with the ephemera extension, against a local stack. Close stops both.
type Function struct {
	// Name is the Lambda function's name.
	Name string
	// Identity is the execution role's session at the STS emulator.
	Identity stsserver.Identity
	// Stack is the local system the extension talks to.
	Stack *stack.Stack

	emu       *lambdaemu.Emulator
	logs      io.Writer
	dir       string
	closeOnce sync.Once
	closeErr  error
}

// Start starts the local stack, builds the extension (unless
// Options.ExtensionsDir), and runs INIT of the function with the extension
// attached. It returns once INIT is done, with the sandbox frozen. On error
// everything started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Function, err error) {
	logs := opts.Logs
	if logs == nil {
		logs = io.Discard
	}
	f := &Function{logs: logs}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	if f.dir, err = os.MkdirTemp("", "ephemera-invoke-*"); err != nil {
		return nil, fmt.Errorf("invoke: %w", err)
	}
	bootstrap, name, err := bootstrapOf(opts.Command, f.dir)
	if err != nil {
		return nil, err
	}
	id, env, err := opts.EnvVars.For(opts.Function)
	if err != nil {
		return nil, err
	}
	switch {
	case opts.Function != "":
		f.Name = opts.Function
	case id != "":
		f.Name = id
	default:
		f.Name = name
	}
	if !functionNameRE.MatchString(f.Name) {
		return nil, fmt.Errorf("invoke: %q is not a Lambda function name ([A-Za-z0-9_-], 2 to 64)", f.Name)
	}
	role := cmp.Or(opts.Role, DefaultRole)
	if !roleNameRE.MatchString(role) {
		return nil, fmt.Errorf("invoke: %q is not an IAM role name", role)
	}

	extDir, built := opts.ExtensionsDir, make(chan error, 1)
	if extDir == "" {
		extDir = filepath.Join(f.dir, "extensions")
		go func() {
			err := gobuild.To(ctx, filepath.Join(extDir, "ephemera"), stack.ModulePath+"/extension", gobuild.Options{Name: "ephemera"})
			if err != nil {
				err = fmt.Errorf("invoke: building the extension (run from the ephemera source tree with Go installed, "+
					"or give the directory of a built one, e.g. extensions/ of the layer zip): %w", err)
			}
			built <- err
		}()
	} else {
		built <- checkExtension(extDir)
	}
	f.Stack, err = stack.Start(ctx, stack.Options{
		Policies:    cmp.Or(opts.Policies, LocalPolicies),
		AWSProfiles: []stack.AWSProfile{{Name: ProfileName}},
		ReapEvery:   cmp.Or(opts.ReapEvery, 5*time.Second),
		Output:      opts.BrokerLogs,
	})
	if berr := <-built; berr != nil || err != nil {
		return nil, errors.Join(err, berr)
	}
	f.Identity = f.Stack.Workload(role, f.Name)
	fmt.Fprintf(logs, "[local] broker %s (audience %s), PostgreSQL 127.0.0.1:%d, STS %s\n",
		f.Stack.BrokerURL, f.Stack.Audience, f.Stack.PG.Port(), f.Stack.STS.URL())
	fmt.Fprintf(logs, "[local] function %s, execution role %s\n", f.Name, stack.RoleARN(role))

	vars := environment(env, f.Stack.BrokerURL, f.Stack.Audience, f.Stack.STS.URL(), logs)
	var cfgErr error
	err = stack.RetryPort(vars, func() error {
		var cfg lambdaemu.Config
		if cfg, cfgErr = f.Stack.LambdaConfig(f.Identity, extDir, bootstrap, vars); cfgErr != nil {
			return cfgErr
		}
		cfg.Output = logs
		cfg.Timeout = cmp.Or(opts.Timeout, DefaultTimeout)
		cfg.InitTimeout = cmp.Or(opts.InitTimeout, DefaultSandboxInitTimeout)
		var err error
		f.emu, err = lambdaemu.Start(ctx, cfg)
		return err
	})
	switch {
	case cfgErr != nil:
		return nil, cfgErr
	case err != nil:
		return nil, fmt.Errorf("invoke: INIT of %s: %w", f.Name, err)
	}
	return f, nil
}

// environment is the function's environment: the local defaults, then
// env's variables (those Lambda reserves are dropped), then the local
// broker's URL and audience, which always win.
func environment(env map[string]string, brokerURL, audience, stsURL string, logs io.Writer) map[string]string {
	vars := map[string]string{
		"EPHEMERA_CREDENTIALS":  DefaultCredentials,
		"EPHEMERA_AWS_PROFILES": DefaultAWSProfiles,
		"EPHEMERA_INIT_TIMEOUT": DefaultInitTimeout,
		"AWS_ENDPOINT_URL_STS":  stsURL,
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if reserved(k) {
			fmt.Fprintf(logs, "[local] env.json: %s is reserved by Lambda: ignored\n", k)
			continue
		}
		vars[k] = env[k]
	}
	for _, kv := range [][2]string{{"EPHEMERA_BROKER_URL", brokerURL}, {"EPHEMERA_AUDIENCE", audience}} {
		k, v := kv[0], kv[1]
		if old := vars[k]; old != "" && old != v {
			fmt.Fprintf(logs, "[local] env.json: %s=%s replaced by the local broker's %s\n", k, old, v)
		}
		vars[k] = v
	}
	// An empty value removes a variable (stack.LambdaConfig), so that
	// env.json can turn a default off.
	for k, v := range vars {
		if v == "" {
			delete(vars, k)
		}
	}
	return vars
}

// Invoke runs one invocation with event as the payload. Function errors are
// in the Result (ErrorType); the error is the emulator's own (INIT failed
// again after a crash, Close, ctx).
func (f *Function) Invoke(ctx context.Context, event []byte) (*lambdaemu.Result, error) {
	res, err := f.emu.Invoke(ctx, event)
	if err != nil {
		return nil, fmt.Errorf("invoke: %s: %w", f.Name, err)
	}
	return res, nil
}

// Close shuts the sandbox down as Lambda does (SHUTDOWN: the extension
// revokes its leases), then stops the local stack and removes the built
// extension. It is idempotent.
func (f *Function) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		if f.emu != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := f.emu.Shutdown(ctx)
			cancel()
			if err != nil && !errors.Is(err, lambdaemu.ErrClosed) {
				errs = append(errs, err)
			} else if res != nil && len(res.Killed) > 0 {
				fmt.Fprintf(f.logs, "[local] SHUTDOWN killed %s (out of time)\n", strings.Join(res.Killed, ", "))
			}
			errs = append(errs, f.emu.Close())
		}
		if f.Stack != nil {
			errs = append(errs, f.Stack.Close())
		}
		if f.dir != "" {
			errs = append(errs, os.RemoveAll(f.dir))
		}
		if err := errors.Join(errs...); err != nil {
			f.closeErr = fmt.Errorf("invoke: close: %w", err)
		}
	})
	return f.closeErr
}

var (
	functionNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{2,64}$`)
	roleNameRE     = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	unsafeNameRE   = regexp.MustCompile(`[^A-Za-z0-9_-]+`)
)

// bootstrapOf returns the bootstrap to run for command, writing a wrapper
// script into dir for a command with arguments, and a default function name.
func bootstrapOf(command []string, dir string) (bootstrap, name string, err error) {
	if len(command) == 0 || command[0] == "" {
		return "", "", fmt.Errorf("invoke: no function: give a directory with a bootstrap, an executable or a command")
	}
	path, _ := filepath.Abs(command[0])
	name = unsafeNameRE.ReplaceAllString(filepath.Base(path), "-")
	name = strings.Trim(name, "-")
	if len(name) < 2 {
		name = "function"
	}
	name = name[:min(len(name), 64)]
	fi, statErr := os.Stat(command[0])
	switch {
	case statErr == nil && fi.IsDir():
		if len(command) > 1 {
			return "", "", fmt.Errorf("invoke: %s is a directory: arguments after it (%s) are not allowed, and flags go before it",
				command[0], strings.Join(command[1:], " "))
		}
		bootstrap = filepath.Join(path, "bootstrap")
		if fi, err := os.Stat(bootstrap); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return "", "", fmt.Errorf("invoke: %s has no executable bootstrap (the custom-runtime entry point Lambda runs)", command[0])
		}
		return bootstrap, name, nil
	case statErr == nil && len(command) == 1 && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0:
		return path, name, nil
	}
	exe, err := exec.LookPath(command[0])
	if err != nil {
		return "", "", fmt.Errorf("invoke: %s is neither a directory with a bootstrap nor a command: %w", command[0], err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return "", "", fmt.Errorf("invoke: %w", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", "", fmt.Errorf("invoke: %w", err)
	}
	script := "#!/bin/sh\n# The function's command, run in the directory ephemera local was started in,\n" +
		"# which is its LAMBDA_TASK_ROOT.\ncd " + shellQuote(wd) + " || exit 1\nexport LAMBDA_TASK_ROOT=" + shellQuote(wd) +
		"\nexec " + shellQuote(exe)
	for _, a := range command[1:] {
		script += " " + shellQuote(a)
	}
	bootstrap = filepath.Join(dir, "function", "bootstrap")
	if err := os.MkdirAll(filepath.Dir(bootstrap), 0o700); err != nil {
		return "", "", fmt.Errorf("invoke: %w", err)
	}
	if err := os.WriteFile(bootstrap, []byte(script+"\n"), 0o700); err != nil {
		return "", "", fmt.Errorf("invoke: %w", err)
	}
	return bootstrap, name, nil
}

// checkExtension checks that dir holds an executable "ephemera".
func checkExtension(dir string) error {
	fi, err := os.Stat(filepath.Join(dir, "ephemera"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("invoke: %s holds no executable extension named ephemera", dir)
	}
	return nil
}

// reservedEnv are the variables Lambda sets itself and refuses in a
// function's configuration.
var reservedEnv = []string{
	"_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
	"AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
	"AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}

func reserved(k string) bool {
	return slices.Contains(reservedEnv, k) || strings.HasPrefix(k, "AWS_LAMBDA_")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

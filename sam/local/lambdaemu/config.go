package lambdaemu

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Defaults applied by Start to zero fields of Config.
const (
	DefaultFunctionName    = "function"
	DefaultRegion          = "us-east-1"
	DefaultMemoryMB        = 128
	DefaultTimeout         = 3 * time.Second
	DefaultInitTimeout     = 10 * time.Second
	DefaultShutdownTimeout = 2000 * time.Millisecond
)

// AccountID is the account every ARN the emulator hands out belongs to.
const AccountID = "123456789012"

// Handler is the value of _HANDLER and of the "handler" field of the
// register response: custom runtimes (provided.al2023) conventionally name
// their handler "bootstrap".
const Handler = "bootstrap"

// RuntimeName is the name under which the function's bootstrap process
// appears in logs ("[runtime] ..."), events and ShutdownResult.
const RuntimeName = "runtime"

// MaxPayloadSize bounds invocation requests and responses, like Lambda's
// 6 MB limit for synchronous invocations.
const MaxPayloadSize = 6 * 1024 * 1024

// maxExtensions is Lambda's limit on registered extensions per function.
const maxExtensions = 10

// runtimeShutdownShare is the part of the shutdown budget the runtime gets
// to exit after SIGTERM before it is killed; the rest goes to extensions
// (the reference implementation, aws-lambda-runtime-interface-emulator's
// rapid/shutdown.go, uses the same 30 %).
const runtimeShutdownShare = 0.3

// Config describes the function and the sandbox to emulate. Zero fields take
// the documented defaults.
type Config struct {
	// ExtensionsDir stands for /opt/extensions: every regular executable file
	// in it (symbolic links are followed) is started as an external
	// extension whose name is the file name. Empty means no extensions.
	ExtensionsDir string
	// Bootstrap is the path of the function's bootstrap executable (a
	// custom runtime, e.g. a Go binary built with -tags lambda.norpc).
	// Required. Its directory is LAMBDA_TASK_ROOT and the working directory
	// of every child.
	Bootstrap string
	// Env is extra environment for the function and the extensions (for
	// example EPHEMERA_*). It is applied last, so it can also override the
	// Lambda variables on purpose.
	Env map[string]string
	// FunctionName is the function's name; default "function".
	FunctionName string
	// Region is AWS_REGION and AWS_DEFAULT_REGION; default "us-east-1".
	Region string
	// AccessKeyID, SecretAccessKey and SessionToken are the "execution
	// role" credentials, passed in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
	// and AWS_SESSION_TOKEN. The emulator never logs them.
	AccessKeyID, SecretAccessKey, SessionToken string
	// MemoryMB is AWS_LAMBDA_FUNCTION_MEMORY_SIZE; default 128. Nothing is
	// enforced.
	MemoryMB int
	// Timeout is the per-invoke function timeout; default 3s. Each INVOKE
	// carries deadlineMs = now + Timeout as absolute Unix milliseconds.
	Timeout time.Duration
	// InitTimeout bounds the whole INIT phase; default 10s.
	InitTimeout time.Duration
	// ShutdownTimeout is the SHUTDOWN budget; default 2000ms.
	ShutdownTimeout time.Duration
	// Freeze makes the emulator SIGSTOP every child between invocations and
	// SIGCONT them when the next event arrives, as Lambda freezes the
	// sandbox. Tests should set it: code that relies on timers running
	// between invocations breaks in Lambda and should break here.
	Freeze bool
	// Output receives everything the children print on stdout and stderr,
	// line by line, each line prefixed "[name] " (name is the extension's
	// file name, or "runtime"). Nil discards it; Emulator.Logs keeps a copy
	// in memory either way.
	Output io.Writer
	// Logger receives the emulator's own protocol log at debug level. Nil
	// discards it.
	Logger *slog.Logger
}

// withDefaults returns a copy of c with defaults applied and paths made
// absolute, or an error for a configuration that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.Bootstrap == "" {
		return c, fmt.Errorf("lambdaemu: Config.Bootstrap is required")
	}
	abs, err := filepath.Abs(c.Bootstrap)
	if err != nil {
		return c, fmt.Errorf("lambdaemu: bootstrap: %w", err)
	}
	c.Bootstrap = abs
	if c.ExtensionsDir != "" {
		if c.ExtensionsDir, err = filepath.Abs(c.ExtensionsDir); err != nil {
			return c, fmt.Errorf("lambdaemu: extensions dir: %w", err)
		}
	}
	// A zero (or negative) setting takes its default: cmp.Or picks the first non-zero.
	c.FunctionName = cmp.Or(c.FunctionName, DefaultFunctionName)
	c.Region = cmp.Or(c.Region, DefaultRegion)
	c.MemoryMB = cmp.Or(max(c.MemoryMB, 0), DefaultMemoryMB)
	c.Timeout = cmp.Or(max(c.Timeout, 0), DefaultTimeout)
	c.InitTimeout = cmp.Or(max(c.InitTimeout, 0), DefaultInitTimeout)
	c.ShutdownTimeout = cmp.Or(max(c.ShutdownTimeout, 0), DefaultShutdownTimeout)
	if c.Output == nil {
		c.Output = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// functionARN is the unqualified ARN of the function.
func (c Config) functionARN() string {
	return "arn:aws:lambda:" + c.Region + ":" + AccountID + ":function:" + c.FunctionName
}

// runtimeOnlyEnv lists the variables Lambda gives the runtime process but
// not extensions ("Extensions can access the function's environment
// variables, except for the following variables that are specific to the
// runtime process", Lambda Extensions API documentation).
var runtimeOnlyEnv = map[string]bool{
	"AWS_EXECUTION_ENV":          true,
	"AWS_LAMBDA_LOG_GROUP_NAME":  true,
	"AWS_LAMBDA_LOG_STREAM_NAME": true,
	"AWS_XRAY_CONTEXT_MISSING":   true,
	"AWS_XRAY_DAEMON_ADDRESS":    true,
	"LAMBDA_RUNTIME_DIR":         true,
	"LAMBDA_TASK_ROOT":           true,
	"_AWS_XRAY_DAEMON_ADDRESS":   true,
	"_AWS_XRAY_DAEMON_PORT":      true,
	"_HANDLER":                   true,
}

// environ builds the environment of one child. The parent's environment is
// not passed through, except PATH.
func (c Config) environ(apiAddr, logStream string, runtime bool) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin:/opt/bin"
	}
	env := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          apiAddr,
		"AWS_LAMBDA_FUNCTION_NAME":        c.FunctionName,
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(c.MemoryMB),
		"AWS_LAMBDA_INITIALIZATION_TYPE":  "on-demand",
		"AWS_REGION":                      c.Region,
		"AWS_DEFAULT_REGION":              c.Region,
		"AWS_ACCESS_KEY_ID":               c.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":           c.SecretAccessKey,
		"AWS_SESSION_TOKEN":               c.SessionToken,
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/" + c.FunctionName,
		"AWS_LAMBDA_LOG_STREAM_NAME":      logStream,
		"_HANDLER":                        Handler,
		"LAMBDA_TASK_ROOT":                filepath.Dir(c.Bootstrap),
		"TZ":                              ":UTC",
		"LANG":                            "en_US.UTF-8",
		"PATH":                            path,
	}
	if !runtime {
		for k := range runtimeOnlyEnv {
			delete(env, k)
		}
	}
	for k, v := range c.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// logStreamName has the shape of a Lambda log stream name,
// "2006/01/02/[$LATEST]<32 hex>".
func logStreamName(now time.Time) string {
	return now.UTC().Format("2006/01/02") + "/[$LATEST]" + randomHex(16)
}

// listExtensions returns the names of the regular executable files in dir,
// sorted. An empty dir means no extensions.
func listExtensions(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lambdaemu: extensions dir: %w", err)
	}
	var names []string
	for _, de := range entries {
		fi, err := os.Stat(filepath.Join(dir, de.Name())) // follow symlinks
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		names = append(names, de.Name())
	}
	return names, nil
}

// randomHex returns n random bytes in lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b)
}

// newUUID returns a random (version 4) UUID string.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// uuidShape is the 8-4-4-4-12 hex shape of a UUID, in either case.
var uuidShape = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// isUUID reports whether s has the 8-4-4-4-12 hex shape of a UUID.
func isUUID(s string) bool { return uuidShape.MatchString(s) }

// newTraceID returns an X-Ray trace header value,
// "Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=1".
func newTraceID(now time.Time) string {
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=1", now.Unix(), randomHex(12), randomHex(8))
}

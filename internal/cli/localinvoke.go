package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/invoke"
)

// localFunctionHelp is the part of the help that invoke and start share.
const localFunctionHelp = `FUNCTION is a directory holding an executable "bootstrap" (the custom-runtime
layout Lambda runs: any language), an executable (a Go function built with
-tags lambda.norpc), or a command with its arguments, run in the current
directory, its LAMBDA_TASK_ROOT (after "--"). It runs under a Docker-free
Lambda emulator (Runtime and Extensions API, frozen between invocations)
with the ephemera extension attached, against a local stack: a throwaway PostgreSQL with database
"orders", the SigV4-verifying STS emulator, the broker and its reaper.

Its execution role is a role of the STS emulator (--role, default
orders-api-local, in account 123456789012), so the broker's Cedar policy
decides as it would in AWS: the default policies let orders-api-* use
database orders (roles readonly and writer) and assume the AWS profile
reports-read (--policy-dir replaces them with your .cedar files).

The environment comes from --env-vars, a file in the format of SAM's
--env-vars: {"FunctionLogicalId": {"VAR": "value"}, "Parameters": {...}}.
"Parameters" apply to every function, a function's own values win;
--function picks the function (default: the only one of the file). The
extension's EPHEMERA_BROKER_URL and EPHEMERA_AUDIENCE always point at the
local broker (values in the file are replaced, with a notice). When the
file does not set them:
  EPHEMERA_CREDENTIALS   orders=orders/readonly:15m
  EPHEMERA_AWS_PROFILES  reports=reports-read:15m
  EPHEMERA_INIT_TIMEOUT  20s
  AWS_ENDPOINT_URL_STS   the STS emulator (for the function's own STS calls)
An empty value removes a variable. EPHEMERA_PORT is a free port unless set.
Variables Lambda reserves (AWS_REGION, AWS_ACCESS_KEY_ID, ...) are ignored.

What the function and the extension print goes to stderr, prefixed
"[runtime] " and "[ephemera] "; so do the notices ("[local] "). --broker-log
keeps the broker's JSON logs and audit lines. Everything is stopped and
deleted at the end. Needs PostgreSQL's server binaries, and the Go toolchain
in this source tree to build the extension (or --extensions-dir).

Your own function, step by step:
  Python  a folder with handler.py, ephemera.py (copy it from
          functions/demo-python) and a bootstrap like demo-python's
  Node    likewise from functions/demo-node (npm ci first)
  Go      go build -tags lambda.norpc -o bin/myfn ./myfn; FUNCTION is bin/myfn
then write env.json with your EPHEMERA_CREDENTIALS and an event file. A
command gets Lambda's environment, not your shell's (no HOME, no GOPATH):
build first rather than go run.`

func localInvokeCommand() *command {
	return &command{
		name:     "local invoke",
		summary:  "invoke your own function once with the extension, against the local stack",
		synopsis: "[--env-vars env.json] [--function NAME] [--event event.json] [flags] FUNCTION [-- COMMAND ARGS...]",
		help: `The Docker-free counterpart of 'sam local invoke': starts the local stack and
your function with the ephemera extension, runs INIT, invokes it once with
--event (a JSON file, "-" for stdin, default {}), prints the function's
result on stdout, then shuts the sandbox down as Lambda does (the extension
revokes its leases). A function error prints its error document and exits 1.

` + localFunctionHelp,
		example: `ephemera local invoke --env-vars functions/demo-python/local/env.json \
    --event functions/demo-python/local/event.json functions/demo-python
ephemera local invoke --env-vars functions/demo-node/local/env.json \
    --event functions/demo-node/local/event.json functions/demo-node
go build -tags lambda.norpc -o bin/orders-go ./functions/demo
ephemera local invoke --event functions/demo-python/local/event.json bin/orders-go
cd functions/demo-node && ephemera local invoke --env-vars local/env.json \
    --event local/event.json -- node runtime.js handler.handler`,
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var lf localFunctionFlags
			lf.register(fs)
			event := fs.String("event", "", "JSON `FILE` of the event (\"-\": stdin); default {}")
			return func(ctx context.Context, args []string) error {
				payload, err := readEvent(*event)
				if err != nil {
					return err
				}
				opts, closeLog, err := lf.options(c, args)
				if err != nil {
					return err
				}
				defer closeLog()
				fn, err := invoke.Start(ctx, opts)
				if err != nil {
					return err
				}
				res, err := fn.Invoke(ctx, payload)
				if err != nil {
					return errors.Join(err, fn.Close())
				}
				fmt.Fprintf(c.Stdout, "%s\n", res.Payload)
				if err := fn.Close(); err != nil {
					return err
				}
				if res.ErrorType != "" {
					return fmt.Errorf("local invoke: the function failed: %s", res.ErrorType)
				}
				return nil
			}
		},
	}
}

func localStartCommand() *command {
	return &command{
		name:     "local start",
		summary:  "keep your own function warm behind the Lambda Invoke API, against the local stack",
		synopsis: "[--listen 127.0.0.1:3001] [--env-vars env.json] [--function NAME] [flags] FUNCTION [-- COMMAND ARGS...]",
		help: `The Docker-free counterpart of 'sam local start-lambda': starts the local
stack and your function with the ephemera extension, runs INIT, and serves
the Lambda Invoke API on --listen until interrupted (Ctrl-C), invoking the
one warm sandbox on demand, one invocation at a time:

  POST /2015-03-31/functions/NAME/invocations   (body: the event)

answers the function's result (a function error adds the header
X-Amz-Function-Error). The AWS CLI and SDKs call it with an endpoint
override. The sandbox is frozen between invocations, as in Lambda, and the
reaper runs every 5 s. On Ctrl-C the sandbox shuts down (the extension
revokes its leases) and everything is deleted.

` + localFunctionHelp,
		example: `ephemera local start --env-vars functions/demo-python/local/env.json functions/demo-python
curl -s --data @functions/demo-python/local/event.json \
    http://127.0.0.1:3001/2015-03-31/functions/OrdersPython/invocations
aws lambda invoke --endpoint-url http://127.0.0.1:3001 --function-name OrdersPython \
    --cli-binary-format raw-in-base64-out \
    --payload file://functions/demo-python/local/event.json /dev/stdout`,
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var lf localFunctionFlags
			lf.register(fs)
			listen := fs.String("listen", "127.0.0.1:3001", "`ADDR` of the Invoke API (loopback only)")
			return func(ctx context.Context, args []string) error {
				host, _, err := net.SplitHostPort(*listen)
				if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
					return usagef("", "--listen %q is not a loopback address and port", *listen)
				}
				opts, closeLog, err := lf.options(c, args)
				if err != nil {
					return err
				}
				defer closeLog()
				return c.localStart(ctx, *listen, opts)
			}
		},
	}
}

// localStart serves fn's Invoke API on addr until ctx ends.
func (c *CLI) localStart(ctx context.Context, addr string, opts invoke.Options) (err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("local start: %w", err)
	}
	defer ln.Close()
	fn, err := invoke.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fn.Close()) }()
	srv := &http.Server{Handler: fn.InvokeAPI(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	s := fn.Stack
	fmt.Fprintf(c.Stdout, `Function %s is warm, with the ephemera extension (Ctrl-C stops and deletes everything).

  invoke API  %s   (POST /2015-03-31/functions/%s/invocations)
  role        %s
  broker      %s   (reaper every 5s)
  postgres    127.0.0.1:%d  database %q  (throwaway)
  sts         %s

Invoke it:
  curl -s --data @event.json %s/2015-03-31/functions/%s/invocations
  aws lambda invoke --endpoint-url %s --function-name %s --cli-binary-format raw-in-base64-out --payload file://event.json /dev/stdout
`, fn.Name, base, fn.Name, fn.Identity.ARN, s.BrokerURL, s.PG.Port(), s.PG.Database(), s.STS.URL(), base, fn.Name, base, fn.Name)
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("local start: %w", err)
	}
	fmt.Fprintln(c.Stdout, "\nstopping…")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// localFunctionFlags are the flags invoke and start share.
type localFunctionFlags struct {
	envVars, function, role, policyDir, extDir, brokerLog *string
	timeout, initTimeout                                  *time.Duration
}

func (lf *localFunctionFlags) register(fs *flag.FlagSet) {
	lf.envVars = fs.String("env-vars", "", "environment: a `FILE` in SAM's env.json format, {\"FunctionId\": {\"VAR\": \"value\"}, \"Parameters\": {...}}")
	lf.function = fs.String("function", "", "the function (`NAME`) of --env-vars to use, and the Lambda function's name (default: the only one of the file, else FUNCTION's base name)")
	lf.role = fs.String("role", invoke.DefaultRole, "`NAME` of the execution role at the STS emulator (account 123456789012); the policy decides on it")
	lf.policyDir = fs.String("policy-dir", "", "`DIR` of .cedar files to use as the broker's policies instead of the local defaults")
	lf.extDir = fs.String("extensions-dir", "", "`DIR` holding a built extension named ephemera (default: build it from this source tree)")
	lf.brokerLog = fs.String("broker-log", "", "append the broker's JSON logs and audit lines to `FILE`")
	lf.timeout = fs.Duration("timeout", invoke.DefaultTimeout, "bound on each invocation")
	lf.initTimeout = fs.Duration("init-timeout", invoke.DefaultSandboxInitTimeout, "bound on INIT (extension and runtime)")
}

// options turns the flags and the positional FUNCTION into invoke.Options;
// the returned func closes the broker log.
func (lf *localFunctionFlags) options(c *CLI, args []string) (invoke.Options, func(), error) {
	none := func() {}
	if len(args) == 0 {
		return invoke.Options{}, none, usagef("", "no FUNCTION: give a directory with a bootstrap, an executable, or -- COMMAND ARGS")
	}
	if *lf.timeout <= 0 || *lf.initTimeout <= 0 {
		return invoke.Options{}, none, usagef("", "--timeout and --init-timeout must be positive")
	}
	opts := invoke.Options{
		Command: args, Function: *lf.function, Role: *lf.role, ExtensionsDir: *lf.extDir,
		Timeout: *lf.timeout, InitTimeout: *lf.initTimeout, Logs: c.Stderr,
	}
	if *lf.envVars != "" {
		ev, err := invoke.ReadEnvVars(*lf.envVars)
		if err != nil {
			return opts, none, err
		}
		if _, _, err := ev.For(*lf.function); err != nil {
			return opts, none, usagef("Pick one with --function NAME.", "%v", err)
		}
		opts.EnvVars = ev
	}
	if *lf.policyDir != "" {
		text, err := readPolicies(*lf.policyDir)
		if err != nil {
			return opts, none, err
		}
		opts.Policies = text
	}
	if *lf.brokerLog != "" {
		f, err := os.OpenFile(*lf.brokerLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return opts, none, fmt.Errorf("local: %w", err)
		}
		opts.BrokerLogs = f
		return opts, func() { f.Close() }, nil
	}
	return opts, none, nil
}

// readEvent reads the event file ("-": stdin; "": {}) and checks it is JSON.
func readEvent(path string) ([]byte, error) {
	var data []byte
	var err error
	switch path {
	case "":
		return []byte("{}"), nil
	case "-":
		data, err = io.ReadAll(os.Stdin)
	default:
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("local invoke: event: %w", err)
	}
	if !json.Valid(data) {
		return nil, usagef("", "--event %s is not JSON", path)
	}
	return data, nil
}

// readPolicies concatenates the .cedar files of dir.
func readPolicies(dir string) (string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.cedar"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("local: --policy-dir %s holds no .cedar file", dir)
	}
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("local: %w", err)
		}
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String(), nil
}

package stack

import (
	"context"
	"errors"
	"fmt"
	"github.com/ephemera-sh/ephemera/extension/localapi"
	"net"
	"strconv"
	"strings"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// DefaultCredentials is the EPHEMERA_CREDENTIALS Lambda gives the extension
// unless env overrides it: the demo function's "orders" credential.
const DefaultCredentials = "orders=orders/readonly:15m"

// LambdaConfig is the emulator configuration Lambda uses, for callers that
// want to adjust it (timeouts, a protocol Logger) and call lambdaemu.Start
// themselves: the demo function as bootstrap, the extensions in
// extensionsDir, id's keys as the execution role's credentials, the
// function named after id's session, Freeze on, Output the stack's Output,
// and the environment
//
//	EPHEMERA_BROKER_URL   s.BrokerURL
//	EPHEMERA_AUDIENCE     s.Audience
//	EPHEMERA_CREDENTIALS  DefaultCredentials
//	EPHEMERA_PORT         a free loopback port (so that sandboxes can run side by side)
//
// merged with env, whose values win; an empty value removes the variable.
// LocalPort reads the chosen port back.
func (s *Stack) LambdaConfig(id stsserver.Identity, extensionsDir, bootstrap string, env map[string]string) (lambdaemu.Config, error) {
	function := id.ARN[strings.LastIndexByte(id.ARN, '/')+1:]
	if function == "" || function == id.ARN {
		return lambdaemu.Config{}, fmt.Errorf("stack: identity %q is not an assumed-role session", id.ARN)
	}
	vars := map[string]string{
		"EPHEMERA_BROKER_URL":  s.BrokerURL,
		"EPHEMERA_AUDIENCE":    s.Audience,
		"EPHEMERA_CREDENTIALS": DefaultCredentials,
	}
	if _, ok := env["EPHEMERA_PORT"]; !ok {
		port, err := FreePort()
		if err != nil {
			return lambdaemu.Config{}, err
		}
		vars["EPHEMERA_PORT"] = strconv.Itoa(port)
	}
	for k, v := range env {
		if v == "" {
			delete(vars, k)
			continue
		}
		vars[k] = v
	}
	return lambdaemu.Config{
		ExtensionsDir:   extensionsDir,
		Bootstrap:       bootstrap,
		Env:             vars,
		FunctionName:    function,
		Region:          s.Region,
		AccessKeyID:     id.AccessKeyID,
		SecretAccessKey: id.SecretAccessKey,
		SessionToken:    id.SessionToken,
		Freeze:          true,
		Output:          s.out,
	}, nil
}

// Lambda starts the demo function with the extension under lambdaemu as the
// workload id (see LambdaConfig) and returns once INIT is done, with the
// sandbox frozen. A failed INIT is a *lambdaemu.InitError. When env does not
// fix EPHEMERA_PORT and another process took the chosen port meanwhile
// (Extension.ListenFailed), it tries again on another port.
func (s *Stack) Lambda(ctx context.Context, id stsserver.Identity, extensionsDir, bootstrap string, env map[string]string) (*lambdaemu.Emulator, error) {
	var emu *lambdaemu.Emulator
	err := RetryPort(env, func() error {
		cfg, err := s.LambdaConfig(id, extensionsDir, bootstrap, env)
		if err != nil {
			return err
		}
		emu, err = lambdaemu.Start(ctx, cfg)
		return err
	})
	return emu, err
}

// RetryPort calls start, which makes a configuration with LambdaConfig(…, env) and
// starts it, until it succeeds or fails other than PortTaken, three times at the
// most: another process may take the free port LambdaConfig chose before the
// extension listens on it, and the next configuration has another. When env fixes
// EPHEMERA_PORT there is no other port, and start is called once. It returns the
// last call's error.
func RetryPort(env map[string]string, start func() error) error {
	_, fixed := env["EPHEMERA_PORT"]
	for attempt := 1; ; attempt++ {
		err := start()
		if fixed || attempt == 3 || !PortTaken(err) {
			return err
		}
	}
}

// PortTaken reports whether err is a failed INIT because the extension
// could not listen on its port (init/error Extension.ListenFailed).
func PortTaken(err error) bool {
	var ie *lambdaemu.InitError
	return errors.As(err, &ie) && ie.ErrorType == "Extension.ListenFailed"
}

// LocalPort is the extension's local API port in cfg (EPHEMERA_PORT, or the
// extension's default).
func LocalPort(cfg lambdaemu.Config) int {
	if p, err := strconv.Atoi(cfg.Env["EPHEMERA_PORT"]); err == nil {
		return p
	}
	return localapi.DefaultPort
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("stack: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

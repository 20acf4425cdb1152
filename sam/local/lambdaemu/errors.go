package lambdaemu

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Invoke, Freeze and Thaw after Shutdown or Close.
var ErrClosed = errors.New("lambdaemu: emulator is shut down")

// INIT sub-phases, the values of InitError.Phase (named as in the Lambda
// Extensions API documentation).
const (
	// PhaseExtensionInit is INIT before the runtime starts: extensions are
	// started and must register.
	PhaseExtensionInit = "Extension init"
	// PhaseRuntimeInit is INIT after every extension registered: the
	// runtime runs its init code (and may register internal extensions)
	// until it and every extension call next.
	PhaseRuntimeInit = "Runtime init"
)

// Error types the emulator itself reports (others come from the children:
// the Lambda-Extension-Function-Error-Type and
// Lambda-Runtime-Function-Error-Type headers).
const (
	ErrorTypeExtensionInitTimeout = "Extension.InitTimeout" // an extension had not registered or called next in time
	ErrorTypeRuntimeInitTimeout   = "Runtime.InitTimeout"   // the runtime had not called invocation/next in time
	ErrorTypeExtensionCrash       = "Extension.Crash"       // an extension exited unexpectedly
	ErrorTypeExtensionExitError   = "Extension.ExitError"   // an extension exited after calling exit/error
	ErrorTypeExtensionLaunchError = "Extension.LaunchError" // an extension could not be started
	ErrorTypeRuntimeExit          = "Runtime.ExitError"     // the runtime exited unexpectedly
	ErrorTypeRuntimeLaunchError   = "Runtime.InvalidEntrypoint"
	ErrorTypeTimedOut             = "Sandbox.Timedout"              // the function did not respond before its deadline
	ErrorTypeResponseTooLarge     = "Function.ResponseSizeTooLarge" // the response exceeded MaxPayloadSize
	ErrorTypeUnhandled            = "Unhandled"                     // an /error without any error type
)

// InitError is returned by Start (and by Invoke when it has to re-run INIT
// after a reset) when INIT fails. The emulator has already killed every
// child when it is returned.
type InitError struct {
	// Phase is the INIT sub-phase that was under way: PhaseExtensionInit or
	// PhaseRuntimeInit.
	Phase string
	// ErrorType is the type the failing party reported (for example
	// "Extension.ConfigInvalid" from init/error), or one of the emulator's
	// ErrorType* constants (timeouts, crashes, launch failures).
	ErrorType string
	// Message is the reported errorMessage, or the emulator's explanation.
	Message string
	// Extension names the extension at fault; empty when it is the runtime
	// or nobody in particular.
	Extension string
}

// Error implements error.
func (e *InitError) Error() string {
	who := "runtime"
	if e.Extension != "" {
		who = "extension " + e.Extension
	}
	if e.Message == "" {
		return fmt.Sprintf("lambdaemu: INIT failed (%s, %s): %s", e.Phase, who, e.ErrorType)
	}
	return fmt.Sprintf("lambdaemu: INIT failed (%s, %s): %s: %s", e.Phase, who, e.ErrorType, e.Message)
}

// ErrorReport is an error an extension reported with init/error or
// exit/error.
type ErrorReport struct {
	// ErrorType is the Lambda-Extension-Function-Error-Type header.
	ErrorType string
	// Message is the body's errorMessage, if the body was the documented
	// JSON object.
	Message string
	// Body is the raw request body.
	Body []byte
}

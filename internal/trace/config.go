package trace

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-xray-sdk-go/v2/daemoncfg"
	"github.com/aws/aws-xray-sdk-go/v2/strategy/ctxmissing"
	"github.com/aws/aws-xray-sdk-go/v2/strategy/sampling"
	"github.com/aws/aws-xray-sdk-go/v2/xray"
	"github.com/aws/aws-xray-sdk-go/v2/xraylog"
)

// Environment variables read by Configure.
const (
	// EnvTracing switches tracing off when set to "off" (also "false",
	// "0" or "disabled"); any other value, or none, leaves it on.
	EnvTracing = "EPHEMERA_TRACING"
	// envDaemonAddress is the SDK's own variable; when set it wins over
	// WithDaemonAddress.
	envDaemonAddress = "AWS_XRAY_DAEMON_ADDRESS"
	// envSDKDisabled is the SDK's kill switch; "true" disables tracing too.
	envSDKDisabled = "AWS_XRAY_SDK_DISABLED"
	// envLambdaTaskRoot is set by the Lambda runtime.
	envLambdaTaskRoot = "LAMBDA_TASK_ROOT"
)

// An Option changes one setting of Configure.
type Option func(*options) error

type options struct {
	daemonAddr   string
	samplingRate float64
}

// WithDaemonAddress sends segments to the X-Ray daemon at addr
// ("host:port", or the SDK's "tcp:host:port udp:host:port" form). Default:
// the AWS_XRAY_DAEMON_ADDRESS environment variable, which also wins over
// this option when set, else the SDK default 127.0.0.1:2000.
func WithDaemonAddress(addr string) Option {
	return func(o *options) error {
		if os.Getenv(envDaemonAddress) != "" {
			return nil // the environment wins; the SDK would ignore addr
		}
		if _, err := daemoncfg.GetDaemonEndpointsFromString(addr); err != nil {
			return fmt.Errorf("trace: daemon address %q: %w", addr, err)
		}
		o.daemonAddr = addr
		return nil
	}
}

// WithSamplingRate sets the fraction (0 to 1) of root segments begun by
// BeginSegment that are sampled; when the rate is above 0 the first root
// segment of each second is sampled too. Default: 1, every root segment
// (BeginSegment serves low-volume processes: local serve, reaper runs,
// tests). In Lambda the sampling decision comes from the Lambda service in
// the trace header and this setting does not apply.
func WithSamplingRate(rate float64) Option {
	return func(o *options) error {
		if !(rate >= 0 && rate <= 1) {
			return fmt.Errorf("trace: sampling rate %v is not between 0 and 1", rate)
		}
		o.samplingRate = rate
		return nil
	}
}

var (
	configureMu   sync.Mutex
	configured    atomic.Bool
	enabled       atomic.Bool
	inLambda      atomic.Bool
	setLoggerOnce sync.Once
)

// Configure sets the SDK up once per process: daemon address from
// AWS_XRAY_DAEMON_ADDRESS (SDK default otherwise, see WithDaemonAddress),
// context-missing strategy IGNORE_ERROR by default (AWS_XRAY_CONTEXT_MISSING
// may override), recorded errors carry only their type and message (no
// stack trace, and no SQL error text, see PgxTracer), and no SDK log output
// per request: the SDK's messages below error level are discarded and its
// errors go to slog.Default, at most one a minute.
//
// It also reads EPHEMERA_TRACING (see Enabled) and whether the process runs
// in Lambda (LAMBDA_TASK_ROOT). Safe to call more than once and
// concurrently; each call re-reads the environment and applies its options,
// with the defaults for those it omits (a daemon address set earlier stays).
// Every other function of this package calls Configure() with no options
// first if it has not been called yet.
func Configure(opts ...Option) error {
	// The SDK's logger is a plain global variable: set it once, before the
	// SDK runs anything that logs.
	setLoggerOnce.Do(func() { xray.SetLogger(sdkLogger{}) })

	o := options{samplingRate: 1}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return err
		}
	}

	configureMu.Lock()
	defer configureMu.Unlock()

	ss, err := sampling.NewLocalizedStrategyFromJSONBytes(samplingManifest(o.samplingRate))
	if err != nil {
		return fmt.Errorf("trace: sampling rules: %w", err)
	}
	efs, err := newExceptionFormatter()
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	err = xray.Configure(xray.Config{
		DaemonAddr:                  o.daemonAddr,
		SamplingStrategy:            ss,
		ExceptionFormattingStrategy: efs,
		ContextMissingStrategy:      ctxmissing.NewDefaultIgnoreErrorStrategy(),
	})
	if err != nil {
		return fmt.Errorf("trace: configure X-Ray SDK: %w", err)
	}

	enabled.Store(tracingOn())
	inLambda.Store(os.Getenv(envLambdaTaskRoot) != "")
	configured.Store(true)
	return nil
}

// Enabled reports whether tracing is on. It is off when EPHEMERA_TRACING is
// "off" (or "false", "0", "disabled") or AWS_XRAY_SDK_DISABLED is "true",
// as read by the last Configure. When off, Start and BeginSegment return
// ctx unchanged, HTTPClient and PgxTracer record nothing and TraceHeader
// returns "".
func Enabled() bool {
	ensureConfigured()
	return enabled.Load()
}

func tracingOn() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(EnvTracing))) {
	case "off", "false", "0", "disabled":
		return false
	}
	return !strings.EqualFold(os.Getenv(envSDKDisabled), "true")
}

// ensureConfigured runs Configure() with defaults the first time any
// function of this package is used without it, so that the SDK never logs
// to stdout with its own default logger.
func ensureConfigured() {
	if configured.Load() {
		return
	}
	if err := Configure(); err != nil {
		// Only a malformed AWS_XRAY_DAEMON_ADDRESS gets here (the SDK itself
		// panics on that at start-up): keep tracing off.
		configureMu.Lock()
		enabled.Store(false)
		configured.Store(true)
		configureMu.Unlock()
	}
}

func samplingManifest(rate float64) []byte {
	fixed := 1
	if rate == 0 {
		fixed = 0
	}
	return fmt.Appendf(nil, `{"version":2,"default":{"fixed_target":%d,"rate":%g},"rules":[]}`, fixed, rate)
}

// sdkLogger is the SDK's logger: it drops everything below error level
// (the SDK logs every segment at debug level) and passes errors, such as a
// daemon that cannot be reached, to slog.Default at most once a minute.
type sdkLogger struct{}

var (
	// sdkLogTap, when set (by tests), sees every message the SDK logs.
	sdkLogTap     atomic.Pointer[func(level xraylog.LogLevel, msg string)]
	lastSDKErrLog atomic.Int64
)

const sdkErrorLogInterval = time.Minute

func (sdkLogger) Log(level xraylog.LogLevel, msg fmt.Stringer) {
	if tap := sdkLogTap.Load(); tap != nil {
		(*tap)(level, msg.String())
	}
	if level < xraylog.LogLevelError {
		return
	}
	now := time.Now().UnixNano()
	last := lastSDKErrLog.Load()
	if last != 0 && now-last < int64(sdkErrorLogInterval) {
		return
	}
	if !lastSDKErrLog.CompareAndSwap(last, now) {
		return
	}
	slog.Default().Error("trace: X-Ray SDK error (repeats are suppressed for a minute)", "error", msg.String())
}

var _ xraylog.Logger = sdkLogger{}

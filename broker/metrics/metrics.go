// Package metrics writes CloudWatch Embedded Metric Format (EMF) lines: JSON
// log lines that CloudWatch Logs turns into metrics, so the broker makes no
// CloudWatch API call at request time.
//
// Metrics (namespace "ephemera" unless Options.Namespace says otherwise):
//
//	Decisions           Count         dimensions [Outcome, Reason] and [Outcome]
//	IssueLatency        Milliseconds  whole issue request, allowed ones
//	VerifyLatency       Microseconds  proof verification (includes the STS call)
//	PolicyLatency       Microseconds  Cedar decision
//	LiveLeases          Count         after each reaper run    } dimensions [Database]
//	ReapLag             Seconds       expiry → revocation       } and none (the alarms
//	RevocationFailures  Count         per reaper run (alarm > 0) } watch the latter)
//	SweptRoles          Count         per reaper run            }
//
// Several deployments in one account keep their metrics (and the alarms that
// watch them) apart with their own namespace, e.g. "ephemera/<stack name>",
// or with a fixed dimension such as Stack=<stack name> added to every
// dimension set (see Options). The package reads no environment: the
// caller decides, e.g. from its configuration.
package metrics

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Namespace is the default CloudWatch namespace of every metric.
const Namespace = "ephemera"

// MaxFixedDimensions bounds Options.Dimensions: CloudWatch accepts at most
// 30 dimensions per metric, and the widest set here uses two.
const MaxFixedDimensions = 8

// ErrInvalidOptions is wrapped by every error of NewWithOptions.
var ErrInvalidOptions = errors.New("metrics: invalid options")

// Options configure an Emitter. The zero value gives what New gives.
type Options struct {
	// Namespace is the CloudWatch namespace of every metric; default
	// Namespace ("ephemera"). 1-255 characters of [A-Za-z0-9 ._/#:-], not
	// starting with "AWS/" (reserved for AWS services).
	Namespace string
	// Dimensions are fixed name → value pairs written on every line and
	// added to every dimension set (the dimensionless sets become sets of
	// just these), e.g. {"Stack": "prod-orders"}. Names are 1-255 ASCII
	// letters, digits and ._-, may not start with ':' and may not be one
	// of the names the metrics use themselves (Outcome, Reason, Event,
	// Database, or a metric's name); values are 1-1024 characters.
	Dimensions map[string]string
}

var (
	namespaceRE = regexp.MustCompile(`^[A-Za-z0-9 ._/#:-]{1,255}$`)
	dimNameRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,255}$`)
	// reserved are the property names and metric names lines already use.
	reserved = []string{"Outcome", "Reason", "Event", "Database", "_aws",
		"Decisions", "IssueLatency", "VerifyLatency", "PolicyLatency",
		"LiveLeases", "ReapLag", "RevocationFailures", "SweptRoles"}
)

// validate checks o and returns the namespace to use and the fixed
// dimension names in a stable order.
func (o Options) validate() (string, []string, error) {
	ns := o.Namespace
	if ns == "" {
		ns = Namespace
	}
	var errs []error
	if !namespaceRE.MatchString(ns) || strings.HasPrefix(ns, "AWS/") {
		errs = append(errs, fmt.Errorf("namespace %q: want 1-255 of [A-Za-z0-9 ._/#:-], not starting with AWS/", ns))
	}
	if len(o.Dimensions) > MaxFixedDimensions {
		errs = append(errs, fmt.Errorf("%d fixed dimensions, at most %d", len(o.Dimensions), MaxFixedDimensions))
	}
	names := slices.Sorted(maps.Keys(o.Dimensions))
	for _, n := range names {
		v := o.Dimensions[n]
		switch {
		case !dimNameRE.MatchString(n):
			errs = append(errs, fmt.Errorf("dimension name %q: want 1-255 of [A-Za-z0-9._-]", n))
		case slices.Contains(reserved, n):
			errs = append(errs, fmt.Errorf("dimension name %q is used by the metrics themselves", n))
		case v == "" || len(v) > 1024:
			errs = append(errs, fmt.Errorf("dimension %s: value must be 1-1024 characters", n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	return ns, names, nil
}

// Units used here (a subset of CloudWatch's).
const (
	Count        = "Count"
	Milliseconds = "Milliseconds"
	Microseconds = "Microseconds"
	Seconds      = "Seconds"
)

// Emitter writes EMF lines. A nil *Emitter discards everything. Safe for
// concurrent use.
type Emitter struct {
	mu        sync.Mutex
	out       io.Writer
	now       func() time.Time
	namespace string
	fixed     map[string]string // Options.Dimensions
	fixedKeys []string          // their names, sorted
}

// New returns an Emitter writing to out (os.Stdout in Lambda), in namespace
// "ephemera" without fixed dimensions.
func New(out io.Writer) *Emitter { return &Emitter{out: out, now: time.Now, namespace: Namespace} }

// NewWithOptions returns an Emitter writing to out with the namespace and
// fixed dimensions of opts. Its errors wrap ErrInvalidOptions.
func NewWithOptions(out io.Writer, opts Options) (*Emitter, error) {
	ns, keys, err := opts.validate()
	if err != nil {
		return nil, err
	}
	e := New(out)
	e.namespace, e.fixedKeys = ns, keys
	if len(keys) > 0 {
		e.fixed = maps.Clone(opts.Dimensions)
	}
	return e, nil
}

// Namespace returns the CloudWatch namespace e writes to ("" for a nil
// Emitter, which writes nothing).
func (e *Emitter) Namespace() string {
	if e == nil {
		return ""
	}
	return e.namespace
}

// Metric is one value with its unit.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// Emit writes one line with the metrics, the dimension sets (each a list of
// property names) and the properties (dimension values and context). The
// Emitter's fixed dimensions (Options.Dimensions) are prepended to every
// set and written as properties; a property of props with the same name
// does not override them.
func (e *Emitter) Emit(dimensions [][]string, props map[string]string, ms ...Metric) {
	if e == nil || len(ms) == 0 {
		return
	}
	if dimensions == nil {
		dimensions = [][]string{}
	}
	if len(e.fixedKeys) > 0 {
		sets := make([][]string, len(dimensions))
		for i, set := range dimensions {
			sets[i] = append(slices.Clone(e.fixedKeys), set...)
		}
		dimensions = sets
	}
	defs := make([]map[string]string, len(ms))
	doc := make(map[string]any, len(props)+len(e.fixed)+len(ms)+1)
	for k, v := range props {
		doc[k] = v
	}
	for k, v := range e.fixed {
		doc[k] = v
	}
	for i, m := range ms {
		defs[i] = map[string]string{"Name": m.Name, "Unit": m.Unit}
		doc[m.Name] = m.Value
	}
	doc["_aws"] = map[string]any{
		"Timestamp": e.now().UnixMilli(),
		"CloudWatchMetrics": []map[string]any{{
			"Namespace":  cmp.Or(e.namespace, Namespace),
			"Dimensions": dimensions,
			"Metrics":    defs,
		}},
	}
	line, err := json.Marshal(doc)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.out.Write(append(line, '\n'))
}

// Decision records one audited decision and, for allowed issues, latencies.
func (e *Emitter) Decision(event, outcome, reason string) {
	e.Emit([][]string{{"Outcome", "Reason"}, {"Outcome"}},
		map[string]string{"Outcome": outcome, "Reason": reason, "Event": event},
		Metric{"Decisions", Count, 1})
}

// IssueLatencies records the phases of one issue request.
func (e *Emitter) IssueLatencies(total, verify, policy time.Duration) {
	e.Emit([][]string{{}}, nil,
		Metric{"IssueLatency", Milliseconds, float64(total.Microseconds()) / 1000},
		Metric{"VerifyLatency", Microseconds, float64(verify.Microseconds())},
		Metric{"PolicyLatency", Microseconds, float64(policy.Microseconds())})
}

// ReapRun records one reaper run over a database.
func (e *Emitter) ReapRun(database string, failures, swept, live int, lags []time.Duration) {
	ms := []Metric{{"RevocationFailures", Count, float64(failures)}, {"SweptRoles", Count, float64(swept)}}
	if live >= 0 {
		ms = append(ms, Metric{"LiveLeases", Count, float64(live)})
	}
	// Per database, and without dimensions (what the alarms watch).
	dims := [][]string{{"Database"}, {}}
	e.Emit(dims, map[string]string{"Database": database}, ms...)
	for _, lag := range lags {
		e.Emit(dims, map[string]string{"Database": database}, Metric{"ReapLag", Seconds, lag.Seconds()})
	}
}

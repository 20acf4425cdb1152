// Package metrics writes CloudWatch Embedded Metric Format (EMF) lines: JSON
// log lines that CloudWatch Logs turns into metrics, so the broker makes no
// CloudWatch API call at request time (DESIGN §8).
//
// Metrics (namespace "ephemera"):
//
//	Decisions           Count         dimensions [Outcome, Reason] and [Outcome]
//	IssueLatency        Milliseconds  whole issue request, allowed ones
//	VerifyLatency       Microseconds  proof verification (includes the STS call)
//	PolicyLatency       Microseconds  Cedar decision
//	LiveLeases          Count         after each reaper run    } dimensions [Database]
//	ReapLag             Seconds       expiry → revocation       } and none (the alarms
//	RevocationFailures  Count         per reaper run (alarm > 0) } watch the latter)
//	SweptRoles          Count         per reaper run            }
package metrics

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every metric.
const Namespace = "ephemera"

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
	mu  sync.Mutex
	out io.Writer
	now func() time.Time
}

// New returns an Emitter writing to out (os.Stdout in Lambda).
func New(out io.Writer) *Emitter { return &Emitter{out: out, now: time.Now} }

// Metric is one value with its unit.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// Emit writes one line with the metrics, the dimension sets (each a list of
// property names) and the properties (dimension values and context).
func (e *Emitter) Emit(dimensions [][]string, props map[string]string, ms ...Metric) {
	if e == nil || len(ms) == 0 {
		return
	}
	if dimensions == nil {
		dimensions = [][]string{}
	}
	defs := make([]map[string]string, len(ms))
	doc := make(map[string]any, len(props)+len(ms)+1)
	for k, v := range props {
		doc[k] = v
	}
	for i, m := range ms {
		defs[i] = map[string]string{"Name": m.Name, "Unit": m.Unit}
		doc[m.Name] = m.Value
	}
	doc["_aws"] = map[string]any{
		"Timestamp": e.now().UnixMilli(),
		"CloudWatchMetrics": []map[string]any{{
			"Namespace":  Namespace,
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

package metrics_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/metrics"
)

var units = map[string]bool{"Seconds": true, "Microseconds": true, "Milliseconds": true, "Bytes": true, "Count": true, "None": true}

// ValidateEMF checks one line against the Embedded Metric Format
// specification: _aws.Timestamp (epoch ms), CloudWatchMetrics directives with
// Namespace, Dimensions (arrays of at most 30 names, each naming a string
// property) and Metrics (Name, Unit from CloudWatch's set), and a numeric
// top-level member for every metric name.
func ValidateEMF(t *testing.T, line []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(line, &doc); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	aws, ok := doc["_aws"].(map[string]any)
	if !ok {
		t.Fatalf("no _aws object: %s", line)
	}
	ts, ok := aws["Timestamp"].(float64)
	if !ok || ts < 1e12 || ts != float64(int64(ts)) {
		t.Fatalf("Timestamp %v is not epoch milliseconds", aws["Timestamp"])
	}
	dirs, ok := aws["CloudWatchMetrics"].([]any)
	if !ok || len(dirs) == 0 {
		t.Fatalf("CloudWatchMetrics missing: %s", line)
	}
	for _, d := range dirs {
		dir := d.(map[string]any)
		if ns, _ := dir["Namespace"].(string); ns == "" {
			t.Fatalf("Namespace missing")
		}
		dims, ok := dir["Dimensions"].([]any)
		if !ok {
			t.Fatalf("Dimensions must be an array of arrays")
		}
		for _, set := range dims {
			names, ok := set.([]any)
			if !ok || len(names) > 30 {
				t.Fatalf("dimension set %v", set)
			}
			for _, n := range names {
				if _, ok := doc[n.(string)].(string); !ok {
					t.Fatalf("dimension %v has no string property", n)
				}
			}
		}
		ms, ok := dir["Metrics"].([]any)
		if !ok || len(ms) == 0 || len(ms) > 100 {
			t.Fatalf("Metrics %v", dir["Metrics"])
		}
		for _, m := range ms {
			def := m.(map[string]any)
			name, _ := def["Name"].(string)
			if name == "" || !units[def["Unit"].(string)] {
				t.Fatalf("metric definition %v", def)
			}
			if _, ok := doc[name].(float64); !ok {
				t.Fatalf("metric %s has no numeric value", name)
			}
		}
	}
	return doc
}

func TestLinesAreValidEMF(t *testing.T) {
	var buf bytes.Buffer
	e := metrics.New(&buf)
	e.Decision("issue", "deny", "access_denied")
	e.IssueLatencies(12*time.Millisecond, 3*time.Millisecond, 40*time.Microsecond)
	e.ReapRun("orders", 1, 2, 10, []time.Duration{1500 * time.Millisecond})
	var nilEmitter *metrics.Emitter
	nilEmitter.Decision("issue", "allow", "") // must not panic
	sc := bufio.NewScanner(&buf)
	names := map[string]bool{}
	n := 0
	for sc.Scan() {
		doc := ValidateEMF(t, sc.Bytes())
		for _, d := range doc["_aws"].(map[string]any)["CloudWatchMetrics"].([]any) {
			for _, m := range d.(map[string]any)["Metrics"].([]any) {
				names[m.(map[string]any)["Name"].(string)] = true
			}
		}
		n++
	}
	if n != 4 {
		t.Fatalf("%d lines, want 4", n)
	}
	for _, want := range []string{"Decisions", "IssueLatency", "VerifyLatency", "PolicyLatency", "LiveLeases", "ReapLag", "RevocationFailures", "SweptRoles"} {
		if !names[want] {
			t.Errorf("metric %s never emitted", want)
		}
	}
}

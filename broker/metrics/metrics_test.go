package metrics_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
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

// directive returns the one CloudWatchMetrics directive of a line.
func directive(t *testing.T, doc map[string]any) map[string]any {
	t.Helper()
	dirs := doc["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)
	if len(dirs) != 1 {
		t.Fatalf("%d directives, want 1", len(dirs))
	}
	return dirs[0].(map[string]any)
}

func dimensionSets(dir map[string]any) [][]string {
	var sets [][]string
	for _, s := range dir["Dimensions"].([]any) {
		var names []string
		for _, n := range s.([]any) {
			names = append(names, n.(string))
		}
		sets = append(sets, names)
	}
	return sets
}

// New keeps the default namespace and adds no dimension.
func TestNewUsesTheDefaultNamespace(t *testing.T) {
	var buf bytes.Buffer
	e := metrics.New(&buf)
	e.Decision("issue", "allow", "")
	dir := directive(t, ValidateEMF(t, bytes.TrimSpace(buf.Bytes())))
	if dir["Namespace"] != metrics.Namespace || e.Namespace() != metrics.Namespace {
		t.Errorf("namespace %v (Namespace() %q), want %q", dir["Namespace"], e.Namespace(), metrics.Namespace)
	}
	if got := dimensionSets(dir); len(got) != 2 || len(got[0]) != 2 || len(got[1]) != 1 {
		t.Errorf("dimension sets %v, want [[Outcome Reason] [Outcome]]", got)
	}
}

// A stack's own namespace and a fixed Stack dimension reach every line and
// every dimension set, dimensionless sets included, so per-stack alarms
// can select them.
func TestOptionsNamespaceAndFixedDimensions(t *testing.T) {
	var buf bytes.Buffer
	e, err := metrics.NewWithOptions(&buf, metrics.Options{
		Namespace:  "ephemera/prod-orders",
		Dimensions: map[string]string{"Stack": "prod-orders"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Decision("issue", "deny", "access_denied")
	e.IssueLatencies(time.Millisecond, time.Millisecond, time.Microsecond)
	e.ReapRun("orders", 0, 0, 3, []time.Duration{time.Second})
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		n++
		doc := ValidateEMF(t, sc.Bytes())
		dir := directive(t, doc)
		if dir["Namespace"] != "ephemera/prod-orders" {
			t.Errorf("line %d: namespace %v", n, dir["Namespace"])
		}
		if doc["Stack"] != "prod-orders" {
			t.Errorf("line %d: Stack property %v", n, doc["Stack"])
		}
		sets := dimensionSets(dir)
		if len(sets) == 0 {
			t.Errorf("line %d: no dimension set", n)
		}
		for _, set := range sets {
			if len(set) == 0 || set[0] != "Stack" {
				t.Errorf("line %d: dimension set %v does not start with Stack", n, set)
			}
		}
	}
	if n != 4 {
		t.Fatalf("%d lines, want 4", n)
	}
}

// A property of a line cannot override a fixed dimension's value.
func TestFixedDimensionsWinOverProperties(t *testing.T) {
	var buf bytes.Buffer
	e, err := metrics.NewWithOptions(&buf, metrics.Options{Dimensions: map[string]string{"Stack": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit([][]string{{}}, map[string]string{"Stack": "b"}, metrics.Metric{Name: "X", Unit: metrics.Count, Value: 1})
	doc := ValidateEMF(t, bytes.TrimSpace(buf.Bytes()))
	if doc["Stack"] != "a" || directive(t, doc)["Namespace"] != metrics.Namespace {
		t.Errorf("Stack %v, namespace %v", doc["Stack"], directive(t, doc)["Namespace"])
	}
}

func TestInvalidOptions(t *testing.T) {
	many := map[string]string{}
	for i := range metrics.MaxFixedDimensions + 1 {
		many[string(rune('a'+i))] = "v"
	}
	for name, opts := range map[string]metrics.Options{
		"AWS namespace":       {Namespace: "AWS/Lambda"},
		"namespace too long":  {Namespace: strings.Repeat("n", 256)},
		"namespace character": {Namespace: "ephemera\n"},
		"reserved dimension":  {Dimensions: map[string]string{"Outcome": "x"}},
		"metric name":         {Dimensions: map[string]string{"Decisions": "x"}},
		"empty value":         {Dimensions: map[string]string{"Stack": ""}},
		"bad name":            {Dimensions: map[string]string{"a b": "x"}},
		"too many":            {Dimensions: many},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := metrics.NewWithOptions(io.Discard, opts)
			if !errors.Is(err, metrics.ErrInvalidOptions) || e != nil {
				t.Errorf("NewWithOptions(%+v) = %v, %v; want ErrInvalidOptions", opts, e, err)
			}
		})
	}
}

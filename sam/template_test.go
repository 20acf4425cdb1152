// Package sam_test checks the SAM application (template.yaml and the files
// around it) without AWS: the template's shape (the broker's routes and
// their authorization, in both endpoint variants; conditions; the
// connection budget; stack hygiene), the makefile builds, the broker
// configuration it renders, and the sample events.
package sam_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"go.yaml.in/yaml/v3"

	"github.com/ephemera-sh/ephemera/broker/attest"
	extconfig "github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/internal/apigw"
)

// brokerRoutes are the broker's routes, exactly (broker/api).
var brokerRoutes = []string{
	"POST /v1/credentials",
	"POST /v1/leases/{lease_id}/renew",
	"POST /v1/leases/{lease_id}/revoke",
	"POST /v1/admin/revoke",
	"GET /v1/health",
	"POST /v1/aws-credentials", // AWS sessions
}

// ------------------------------------------------------------ the template

type (
	obj = map[string]any
	arr = []any
)

// loadTemplate decodes template.yaml into plain values. CloudFormation's
// short forms become their long forms, generically: !Ref x → {"Ref": x},
// !GetAtt a.b → {"Fn::GetAtt": [a, b]}, !Name v → {"Fn::Name": v}.
func loadTemplate(t *testing.T) obj {
	t.Helper()
	data, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("template.yaml: %v", err)
	}
	v, err := plain(&doc)
	if err != nil {
		t.Fatalf("template.yaml: %v", err)
	}
	tpl, ok := v.(obj)
	if !ok {
		t.Fatal("template.yaml is not a mapping")
	}
	return tpl
}

func plain(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, errors.New("want exactly one document")
		}
		return plain(n.Content[0])
	case yaml.AliasNode:
		return plain(n.Alias)
	}
	var v any
	custom := strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!")
	switch n.Kind {
	case yaml.MappingNode:
		m := obj{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := m[k]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", n.Content[i].Line, k)
			}
			val, err := plain(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k] = val
		}
		v = m
	case yaml.SequenceNode:
		l := arr{}
		for _, c := range n.Content {
			val, err := plain(c)
			if err != nil {
				return nil, err
			}
			l = append(l, val)
		}
		v = l
	case yaml.ScalarNode:
		if custom {
			v = n.Value
		} else if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
	}
	if !custom {
		return v, nil
	}
	name := n.Tag[1:]
	switch name {
	case "Ref", "Condition":
		return obj{name: v}, nil
	case "GetAtt":
		if s, ok := v.(string); ok {
			return obj{"Fn::GetAtt": arr{strings.SplitN(s, ".", 2)[0], strings.SplitN(s, ".", 2)[1]}}, nil
		}
	}
	return obj{"Fn::" + name: v}, nil
}

// get walks keys through nested mappings; nil when a key is missing.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(obj)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func resources(t *testing.T, tpl obj, typ string) map[string]obj {
	t.Helper()
	out := map[string]obj{}
	for id, r := range get(tpl, "Resources").(obj) {
		if str(get(r, "Type")) == typ {
			out[id] = r.(obj)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s in template.yaml", typ)
	}
	return out
}

func resource(t *testing.T, tpl obj, id string) obj {
	t.Helper()
	r, ok := get(tpl, "Resources", id).(obj)
	if !ok {
		t.Fatalf("template.yaml has no resource %s", id)
	}
	return r
}

// refTo reports whether v is {"Ref": id}.
func refTo(v any, id string) bool { return str(get(v, "Ref")) == id }

func TestTemplateIsSAM(t *testing.T) {
	tpl := loadTemplate(t)
	if got := str(tpl["Transform"]); got != "AWS::Serverless-2016-10-31" {
		t.Errorf("Transform %q", got)
	}
}

// Every function and layer builds from a directory that exists, and a
// makefile build finds its build-<LogicalId> target.
func TestCodeDirectoriesAndMakefiles(t *testing.T) {
	tpl := loadTemplate(t)
	n := 0
	for id, r := range get(tpl, "Resources").(obj) {
		var dir string
		switch str(get(r, "Type")) {
		case "AWS::Serverless::Function":
			dir = str(get(r, "Properties", "CodeUri"))
		case "AWS::Serverless::LayerVersion":
			dir = str(get(r, "Properties", "ContentUri"))
		default:
			continue
		}
		n++
		if dir == "" {
			t.Errorf("%s: no CodeUri/ContentUri directory", id)
			continue
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("%s: %s is not a directory of sam/", id, dir)
			continue
		}
		if m := str(get(r, "Metadata", "BuildMethod")); m != "makefile" {
			t.Errorf("%s: BuildMethod %q, want makefile", id, m)
			continue
		}
		mk, err := os.ReadFile(filepath.Join(dir, "Makefile"))
		if err != nil {
			t.Errorf("%s: %v", id, err)
			continue
		}
		if !regexp.MustCompile(`(?m)^build-` + regexp.QuoteMeta(id) + `:`).Match(mk) {
			t.Errorf("%s: %s has no target build-%s", id, filepath.Join(dir, "Makefile"), id)
		}
	}
	if n < 5 {
		t.Errorf("found %d functions and layers, want 3 functions and 2 layers", n)
	}
}

func TestGlobals(t *testing.T) {
	tpl := loadTemplate(t)
	g := get(tpl, "Globals", "Function")
	for k, want := range map[string]string{"Runtime": "provided.al2023", "Handler": "bootstrap", "Tracing": "Active"} {
		if got := str(get(g, k)); got != want {
			t.Errorf("Globals.Function.%s = %q, want %q", k, got, want)
		}
	}
	if a, _ := get(g, "Architectures").(arr); len(a) != 1 || a[0] != "arm64" {
		t.Errorf("Globals.Function.Architectures = %v, want [arm64]", get(g, "Architectures"))
	}
	// No function opts out (the Makefiles build for arm64).
	for id, r := range resources(t, tpl, "AWS::Serverless::Function") {
		for _, k := range []string{"Runtime", "Handler", "Tracing", "Architectures"} {
			if v := get(r, "Properties", k); v != nil {
				t.Errorf("%s overrides Globals %s with %v", id, k, v)
			}
		}
	}
}

// requiredExtensionVars asks the extension which EPHEMERA_* variables it
// cannot do without: those Parse reports missing in an empty environment.
func requiredExtensionVars(t *testing.T) []string {
	t.Helper()
	_, err := extconfig.Parse(func(string) string { return "" })
	if err == nil {
		t.Fatal("the extension accepts an empty environment")
	}
	set := map[string]bool{}
	for _, m := range regexp.MustCompile(`EPHEMERA_[A-Z_]+`).FindAllString(err.Error(), -1) {
		set[m] = true
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range []string{"EPHEMERA_BROKER_URL", "EPHEMERA_AUDIENCE", "EPHEMERA_CREDENTIALS"} {
		if !set[n] {
			t.Errorf("the extension no longer requires %s: update this test", n)
		}
	}
	return names
}

func TestReaperSchedule(t *testing.T) {
	tpl := loadTemplate(t)
	evs, _ := get(resource(t, tpl, "ReaperFunction"), "Properties", "Events").(obj)
	found := false
	for name, e := range evs {
		if str(get(e, "Type")) != "Schedule" {
			continue
		}
		if s := str(get(e, "Properties", "Schedule")); s != "rate(1 minute)" {
			t.Errorf("%s: Schedule %q, want rate(1 minute)", name, s)
		}
		if st := get(e, "Properties", "State"); st != nil && st != "ENABLED" {
			t.Errorf("%s: State %v", name, st)
		}
		if en := get(e, "Properties", "Enabled"); en == false {
			t.Errorf("%s: disabled", name)
		}
		found = true
	}
	if !found {
		t.Error("ReaperFunction has no Schedule event")
	}
}

func TestLogGroups(t *testing.T) {
	tpl := loadTemplate(t)
	groups := resources(t, tpl, "AWS::Logs::LogGroup")
	for id, g := range groups {
		if get(g, "Properties", "RetentionInDays") == nil {
			t.Errorf("%s: no RetentionInDays", id)
		}
	}
	for id, fn := range resources(t, tpl, "AWS::Serverless::Function") {
		name := str(get(fn, "Properties", "FunctionName", "Fn::Sub"))
		ref := str(get(fn, "Properties", "LoggingConfig", "LogGroup", "Ref"))
		g, ok := groups[ref]
		if name == "" || !ok {
			t.Errorf("%s: want a FunctionName and LoggingConfig.LogGroup naming one of the log groups (have %q, %q)", id, name, ref)
			continue
		}
		if got := str(get(g, "Properties", "LogGroupName", "Fn::Sub")); got != "/aws/lambda/"+name {
			t.Errorf("%s: log group %s is %q, want /aws/lambda/%s", id, ref, got, name)
		}
	}
}

// Each layer holds one binary, so it must claim exactly the architecture
// it is built for; together they cover both.
func TestLayers(t *testing.T) {
	tpl := loadTemplate(t)
	covered := map[string]string{}
	for id, l := range resources(t, tpl, "AWS::Serverless::LayerVersion") {
		archs, _ := get(l, "Properties", "CompatibleArchitectures").(arr)
		build := str(get(l, "Metadata", "BuildArchitecture"))
		if len(archs) != 1 || archs[0] != build {
			t.Errorf("%s: CompatibleArchitectures %v with BuildArchitecture %q: a layer must claim exactly the architecture it is built for", id, archs, build)
			continue
		}
		if other, dup := covered[build]; dup {
			t.Errorf("%s and %s are both %s", id, other, build)
		}
		covered[build] = id
		want := map[string]string{"arm64": "-arch arm64", "x86_64": "-arch x86_64"}[build]
		mk, _ := os.ReadFile(filepath.Join(str(get(l, "Properties", "ContentUri")), "Makefile"))
		target := regexp.MustCompile(`(?m)^build-` + id + `:\n\t(.*)$`).FindSubmatch(mk)
		if target == nil || !strings.Contains(string(target[1]), want) {
			t.Errorf("%s: its make target does not build %s", id, want)
		}
	}
	for _, a := range []string{"arm64", "x86_64"} {
		if covered[a] == "" {
			t.Errorf("no layer for %s", a)
		}
	}
}

func TestRDSIAMConnect(t *testing.T) {
	tpl := loadTemplate(t)
	want := "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${DbResourceId}/${AdminUser}"
	for _, id := range []string{"BrokerFunction", "ReaperFunction"} {
		ok := false
		for _, p := range get(resource(t, tpl, id), "Properties", "Policies").(arr) {
			sts, _ := get(p, "Statement").(arr)
			for _, st := range sts {
				if str(get(st, "Effect")) == "Allow" && str(get(st, "Action")) == "rds-db:connect" && str(get(st, "Resource", "Fn::Sub")) == want {
					ok = true
				}
			}
		}
		if !ok {
			t.Errorf("%s: no rds-db:connect on %s", id, want)
		}
	}
	for _, p := range []string{"DbResourceId", "AdminUser"} {
		if get(tpl, "Parameters", p) == nil {
			t.Errorf("no parameter %s", p)
		}
	}
}

// sam local invoke --env-vars silently ignores variables the template does
// not declare, so env.json may only set declared ones.
func TestEnvJSON(t *testing.T) {
	tpl := loadTemplate(t)
	data, err := os.ReadFile("env.json")
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]map[string]string
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("env.json: %v", err)
	}
	fns := resources(t, tpl, "AWS::Serverless::Function")
	for fn, vars := range env {
		r, ok := fns[fn]
		if !ok {
			t.Errorf("env.json: %s is not a function of the template", fn)
			continue
		}
		declared, _ := get(r, "Properties", "Environment", "Variables").(obj)
		for k := range vars {
			if _, ok := declared[k]; !ok {
				t.Errorf("env.json: %s.%s is not declared in the template, so SAM ignores it", fn, k)
			}
		}
	}
	for fn := range fns {
		if env[fn] == nil {
			t.Errorf("env.json: no entry for %s", fn)
		}
	}
}

func TestSamconfig(t *testing.T) {
	tpl := loadTemplate(t)
	data, err := os.ReadFile("samconfig.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{"version = 0.1", `capabilities = "CAPABILITY_IAM"`, "resolve_s3 = true", "[default.deploy.parameters]"} {
		if !strings.Contains(s, want) {
			t.Errorf("samconfig.toml lacks %s", want)
		}
	}
	m := regexp.MustCompile(`(?m)^parameter_overrides = "(.*)"$`).FindStringSubmatch(s)
	if m == nil {
		t.Fatal("samconfig.toml: no parameter_overrides")
	}
	for _, kv := range regexp.MustCompile(`(\w+)=\\"([^\\]*)\\"`).FindAllStringSubmatch(m[1], -1) {
		p := get(tpl, "Parameters", kv[1])
		if p == nil {
			t.Errorf("parameter_overrides: %s is not a parameter", kv[1])
		} else if pat := str(get(p, "AllowedPattern")); pat != "" && !regexp.MustCompile(pat).MatchString(kv[2]) {
			t.Errorf("parameter_overrides: %s=%q does not match %s", kv[1], kv[2], pat)
		}
	}
}

// ------------------------------------------------------------------ events

func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("%s: trailing data", path)
	}
}

func TestIssueEvent(t *testing.T) {
	var ev events.APIGatewayV2HTTPRequest
	decodeStrict(t, "events/issue.json", &ev)
	if ev.Version != "2.0" || ev.RouteKey != "POST /v1/credentials" || ev.RequestContext.RouteKey != ev.RouteKey ||
		ev.RawPath != "/v1/credentials" || ev.RequestContext.HTTP.Method != http.MethodPost || ev.RequestContext.Stage != "$default" {
		t.Errorf("not a POST /v1/credentials payload v2 event on $default: %q %q %q", ev.RouteKey, ev.RawPath, ev.RequestContext.HTTP.Method)
	}
	if !slices.Contains(brokerRoutes, ev.RouteKey) {
		t.Errorf("route %q is not a broker route", ev.RouteKey)
	}
	if iam := ev.RequestContext.Authorizer; iam == nil || iam.IAM == nil || !strings.Contains(iam.IAM.UserARN, ":assumed-role/") {
		t.Error("no IAM authorizer context (the route uses AWS_IAM)")
	}

	// What the broker's handler receives.
	r, err := apigw.Request(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/v1/credentials" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Errorf("content-length %s for a %d-byte body", cl, len(body))
	}
	var req struct {
		Identity   *attest.Proof `json:"identity"`
		Database   string        `json:"database"`
		Role       string        `json:"role"`
		TTLSeconds *int64        `json:"ttl_seconds"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		t.Fatalf("body: %v", err)
	}
	if req.Identity == nil || req.Database != "orders" || req.Role != "readonly" || req.TTLSeconds == nil || *req.TTLSeconds != 900 {
		t.Fatalf("body %s", body)
	}

	// The placeholder proof is well-formed: at its own X-Amz-Date it passes
	// the proof checks 1 to 8 and fails only when sent to STS (which would
	// reject its placeholder signature).
	date, err := time.Parse("20060102T150405Z", req.Identity.Headers["X-Amz-Date"][0])
	if err != nil {
		t.Fatal(err)
	}
	sts := 0
	v, err := attest.NewVerifier(attest.Config{
		Audience: "prod-orders", Region: "eu-west-1", Nonces: nonces{},
		Now: func() time.Time { return date },
		HTTPClient: &http.Client{Transport: roundTrip(func(*http.Request) (*http.Response, error) {
			sts++
			return nil, errors.New("no STS in tests")
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), req.Identity)
	var ae *attest.Error
	if !errors.As(err, &ae) || ae.Check != 9 || sts != 1 {
		t.Errorf("the placeholder proof should fail only at check 9 (STS), got %v (STS calls: %d)", err, sts)
	}
}

type nonces struct{}

func (nonces) UseNonce(context.Context, string, time.Time) (bool, error) { return true, nil }

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestScheduleEvent(t *testing.T) {
	var ev events.EventBridgeEvent
	decodeStrict(t, "events/schedule.json", &ev)
	if ev.DetailType != "Scheduled Event" || ev.Source != "aws.events" || ev.Time.IsZero() || len(ev.Resources) != 1 ||
		!strings.HasPrefix(ev.Resources[0], "arn:aws:events:") {
		t.Errorf("not an EventBridge scheduled event: %+v", ev)
	}
	if string(ev.Detail) != "{}" {
		t.Errorf("detail %s, want {}", ev.Detail)
	}
}

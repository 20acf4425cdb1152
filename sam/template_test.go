// Package sam_test checks the SAM application (template.yaml and the files
// around it) without AWS: the template's shape against DESIGN §4 and §9,
// the makefile builds, the broker configuration it renders, and the sample
// events.
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
	brokerconfig "github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/policy"
	extconfig "github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/internal/apigw"
	"github.com/ephemera-sh/ephemera/sam/internal/render"
)

// brokerRoutes are DESIGN §4's routes, exactly.
var brokerRoutes = []string{
	"POST /v1/credentials",
	"POST /v1/leases/{lease_id}/renew",
	"POST /v1/leases/{lease_id}/revoke",
	"POST /v1/admin/revoke",
	"GET /v1/health",
	"POST /v1/aws-credentials", // issue 8: AWS sessions
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

// httpAPIEvents returns "METHOD /path" → event properties of fn's HttpApi
// events on the API api.
func httpAPIEvents(fn obj, api string) map[string]obj {
	out := map[string]obj{}
	evs, _ := get(fn, "Properties", "Events").(obj)
	for _, e := range evs {
		if str(get(e, "Type")) != "HttpApi" || !refTo(get(e, "Properties", "ApiId"), api) {
			continue
		}
		p := get(e, "Properties").(obj)
		out[str(p["Method"])+" "+str(p["Path"])] = p
	}
	return out
}

func TestBrokerRoutesNeedIAM(t *testing.T) {
	tpl := loadTemplate(t)
	api := resource(t, tpl, "BrokerApi")
	if str(get(api, "Type")) != "AWS::Serverless::HttpApi" {
		t.Fatalf("BrokerApi is %v", get(api, "Type"))
	}
	if get(api, "Properties", "Auth", "EnableIamAuthorizer") != true {
		t.Error("BrokerApi: Auth.EnableIamAuthorizer is not true")
	}
	if got := str(get(api, "Properties", "Auth", "DefaultAuthorizer")); got != "AWS_IAM" {
		t.Errorf("BrokerApi: Auth.DefaultAuthorizer %q, want AWS_IAM", got)
	}
	// The broker sees rawPath as is: a named stage would prefix every path.
	if s := get(api, "Properties", "StageName"); s != nil {
		t.Errorf("BrokerApi: StageName %v; the broker needs the $default stage", s)
	}

	routes := httpAPIEvents(resource(t, tpl, "BrokerFunction"), "BrokerApi")
	var got []string
	for r, p := range routes {
		got = append(got, r)
		if a := str(get(p, "Auth", "Authorizer")); a != "AWS_IAM" {
			t.Errorf("%s: Auth.Authorizer %q, want AWS_IAM", r, a)
		}
	}
	sort.Strings(got)
	want := slices.Clone(brokerRoutes)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("BrokerApi routes\n got %q\nwant %q", got, want)
	}
	// Nothing else is routed through the broker's API.
	for id, fn := range resources(t, tpl, "AWS::Serverless::Function") {
		if id != "BrokerFunction" && len(httpAPIEvents(fn, "BrokerApi")) > 0 {
			t.Errorf("%s has routes on BrokerApi", id)
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
			t.Errorf("the extension no longer requires %s (DESIGN §9): update this test", n)
		}
	}
	return names
}

func TestDemoFunction(t *testing.T) {
	tpl := loadTemplate(t)
	demo := resource(t, tpl, "DemoFunction")
	env, _ := get(demo, "Properties", "Environment", "Variables").(obj)
	for _, name := range requiredExtensionVars(t) {
		if env[name] == nil {
			t.Errorf("DemoFunction: %s is required by the extension but not set", name)
		}
	}
	if got := str(env["EPHEMERA_CREDENTIALS"]); got != "orders=orders/readonly:15m" {
		t.Errorf("EPHEMERA_CREDENTIALS = %q", got)
	}
	if sub := str(get(env["EPHEMERA_BROKER_URL"], "Fn::Sub")); !strings.Contains(sub, "${BrokerApi}") {
		t.Errorf("EPHEMERA_BROKER_URL %v does not name BrokerApi", env["EPHEMERA_BROKER_URL"])
	}
	if !refTo(env["EPHEMERA_AUDIENCE"], "Audience") || !refTo(get(resource(t, tpl, "BrokerFunction"), "Properties", "Environment", "Variables", "EPHEMERA_AUDIENCE"), "Audience") {
		t.Error("the demo and the broker must both take EPHEMERA_AUDIENCE from the Audience parameter")
	}

	// The environment as deployed satisfies the extension.
	vals := map[string]string{
		"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
		"AWS_SESSION_TOKEN": "token", "AWS_REGION": "eu-west-1",
	}
	for k, v := range env {
		vals[k] = resolve(t, tpl, v)
	}
	cfg, err := extconfig.Parse(func(k string) string { return vals[k] })
	if err != nil {
		t.Fatalf("the extension refuses the demo's environment: %v", err)
	}
	if len(cfg.Credentials) != 1 || cfg.Credentials[0].Database != "orders" || cfg.Credentials[0].Role != "readonly" || cfg.Credentials[0].TTL != 15*time.Minute {
		t.Errorf("credentials %+v", cfg.Credentials)
	}

	// The layer it uses is built for its architecture.
	layers, _ := get(demo, "Properties", "Layers").(arr)
	if len(layers) != 1 || !refTo(layers[0], "EphemeraLayerArm64") {
		t.Errorf("DemoFunction.Layers = %v, want [!Ref EphemeraLayerArm64]", layers)
	}

	// Its own route, behind IAM.
	routes := httpAPIEvents(demo, "DemoApi")
	if p, ok := routes["GET /orders"]; !ok || len(routes) != 1 {
		t.Errorf("DemoFunction routes %v, want GET /orders on DemoApi", routes)
	} else if a := str(get(p, "Auth", "Authorizer")); a != "AWS_IAM" {
		t.Errorf("GET /orders: Authorizer %q", a)
	}

	// Its role may call the broker's issue, renew and revoke routes (not
	// admin revoke).
	if !str2(get(demo, "Properties", "Role", "Fn::GetAtt"), "DemoRole", "Arn") {
		t.Errorf("DemoFunction.Role = %v, want !GetAtt DemoRole.Arn", get(demo, "Properties", "Role"))
	}
	pol := resource(t, tpl, "DemoInvokeBrokerPolicy")
	if roles, _ := get(pol, "Properties", "Roles").(arr); len(roles) != 1 || !refTo(roles[0], "DemoRole") {
		t.Errorf("DemoInvokeBrokerPolicy.Roles = %v", roles)
	}
	var arns []string
	for _, st := range get(pol, "Properties", "PolicyDocument", "Statement").(arr) {
		if str(get(st, "Action")) != "execute-api:Invoke" || str(get(st, "Effect")) != "Allow" {
			continue
		}
		for _, r := range get(st, "Resource").(arr) {
			arns = append(arns, str(get(r, "Fn::Sub")))
		}
	}
	prefix := "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${BrokerApi}/*/"
	for _, route := range []string{"POST/v1/credentials", "POST/v1/leases/*/renew", "POST/v1/leases/*/revoke"} {
		if !slices.Contains(arns, prefix+route) {
			t.Errorf("DemoRole cannot invoke %s (has %q)", route, arns)
		}
	}
	for _, a := range arns {
		if strings.Contains(a, "admin") {
			t.Errorf("DemoRole may invoke %s", a)
		}
	}
}

func str2(v any, a, b string) bool {
	l, _ := v.(arr)
	return len(l) == 2 && l[0] == a && l[1] == b
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

func TestSTSEndpoint(t *testing.T) {
	tpl := loadTemplate(t)
	eps := resources(t, tpl, "AWS::EC2::VPCEndpoint")
	ep, ok := eps["StsEndpoint"]
	if !ok {
		t.Fatalf("no StsEndpoint (have %v)", eps)
	}
	if got := str(get(ep, "Properties", "ServiceName", "Fn::Sub")); got != "com.amazonaws.${AWS::Region}.sts" {
		t.Errorf("ServiceName %q", got)
	}
	if get(ep, "Properties", "PrivateDnsEnabled") != true || str(get(ep, "Properties", "VpcEndpointType")) != "Interface" {
		t.Error("want an Interface endpoint with PrivateDnsEnabled: true")
	}
	cond := str(get(ep, "Condition"))
	eq, _ := get(tpl, "Conditions", cond, "Fn::Equals").(arr)
	if len(eq) != 2 || !refTo(eq[0], "CreateStsEndpoint") {
		t.Errorf("StsEndpoint's condition %q does not test CreateStsEndpoint: %v", cond, eq)
	}
}

func TestOutputs(t *testing.T) {
	tpl := loadTemplate(t)
	for _, o := range []string{"BrokerApiUrl", "LayerArnArm64", "LayerArnX8664", "DemoUrl"} {
		if get(tpl, "Outputs", o, "Value") == nil {
			t.Errorf("no output %s", o)
		}
	}
}

// --------------------------------------------- the configuration it renders

// samples stand in for what CloudFormation knows only at deploy time.
var samples = map[string]string{
	"AWS::AccountId": "123456789012", "AWS::Region": "eu-west-1", "AWS::Partition": "aws",
	"AWS::StackName": "ephemera", "AWS::URLSuffix": "amazonaws.com",
	"BrokerApi": "abc123defg", "DemoApi": "hij456klmn", "DemoRole": "ephemera-DemoRole-EXAMPLE12345",
	"DbEndpoint":          "orders.cluster-abc.eu-west-1.rds.amazonaws.com",
	"DbResourceId":        "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY1",
	"ReportsReadRole.Arn": "arn:aws:iam::123456789012:role/ephemera-profiles/ephemera-ReportsReadRole-EXAMPLE",
}

// resolve evaluates a literal, !Ref or !Sub as CloudFormation would, with
// parameter defaults and samples.
func resolve(t *testing.T, tpl obj, v any) string {
	t.Helper()
	lookup := func(name string) string {
		if p := get(tpl, "Parameters", name); p != nil {
			val, ok := samples[name]
			if d := get(p, "Default"); d != nil {
				val, ok = fmt.Sprint(d), true
			}
			if !ok {
				t.Fatalf("parameter %s: no default and no sample value", name)
			}
			if pat := str(get(p, "AllowedPattern")); pat != "" && !regexp.MustCompile(pat).MatchString(val) {
				t.Errorf("parameter %s: %q does not match its AllowedPattern %s", name, val, pat)
			}
			return val
		}
		if val, ok := samples[name]; ok {
			return val
		}
		t.Fatalf("cannot resolve %s", name)
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case obj:
		if r, ok := x["Ref"].(string); ok {
			return lookup(r)
		}
		if ga, ok := x["Fn::GetAtt"].([]any); ok && len(ga) == 2 {
			return lookup(fmt.Sprint(ga[0]) + "." + fmt.Sprint(ga[1]))
		}
		if s, ok := x["Fn::Sub"].(string); ok {
			return regexp.MustCompile(`\$\{([^}]+)\}`).ReplaceAllStringFunc(s, func(m string) string { return lookup(m[2 : len(m)-1]) })
		}
	}
	t.Fatalf("cannot resolve %v", v)
	return ""
}

func functionEnv(t *testing.T, tpl obj, id string) map[string]string {
	t.Helper()
	env := map[string]string{}
	vars, _ := get(resource(t, tpl, id), "Properties", "Environment", "Variables").(obj)
	for k, v := range vars {
		env[k] = resolve(t, tpl, v)
	}
	return env
}

// The broker's and the reaper's environments, as deployed, render the
// shipped templates into a configuration the broker accepts.
func TestBrokerConfigurationRenders(t *testing.T) {
	tpl := loadTemplate(t)
	for _, id := range []string{"BrokerFunction", "ReaperFunction"} {
		t.Run(id, func(t *testing.T) {
			env := functionEnv(t, tpl, id)
			for _, k := range []string{"EPHEMERA_CONFIG_TEMPLATE", "EPHEMERA_CONFIG", "EPHEMERA_POLICY_DIR", "EPHEMERA_AUDIENCE", "EPHEMERA_STAGE", "PGSSLROOTCERT"} {
				if env[k] == "" {
					t.Errorf("%s is not set", k)
				}
			}
			if env["EPHEMERA_CONFIG_TEMPLATE"] != "/var/task/ephemera.yaml" || !strings.HasPrefix(env["EPHEMERA_CONFIG"], "/tmp/") {
				t.Errorf("config %s → %s: want /var/task/ephemera.yaml → /tmp/...", env["EPHEMERA_CONFIG_TEMPLATE"], env["EPHEMERA_CONFIG"])
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "ephemera.yaml")
			if err := render.File("broker/ephemera.yaml", cfgPath, lookup); err != nil {
				t.Fatal(err)
			}
			polDir := filepath.Join(dir, "policies")
			if id == "BrokerFunction" {
				if env["EPHEMERA_POLICY_TEMPLATE_DIR"] != "/var/task/policies" {
					t.Errorf("EPHEMERA_POLICY_TEMPLATE_DIR = %q", env["EPHEMERA_POLICY_TEMPLATE_DIR"])
				}
				if err := render.Dir("broker/policies", polDir, lookup); err != nil {
					t.Fatal(err)
				}
				set, err := policy.LoadDir(polDir)
				if err != nil {
					t.Fatal(err)
				}
				if set.Len() == 0 {
					t.Error("no policy")
				}
			}
			cfg, err := brokerconfig.FromEnv(func(k string) (string, bool) {
				switch k {
				case "EPHEMERA_CONFIG":
					return cfgPath, true
				case "EPHEMERA_POLICY_DIR":
					return polDir, true
				case "AWS_REGION":
					return "eu-west-1", true
				}
				return lookup(k)
			})
			if err != nil {
				t.Fatal(err)
			}
			db := cfg.Database("orders")
			if db == nil {
				t.Fatalf("no database orders (the demo asks for orders/readonly): %v", cfg.DatabaseNames())
			}
			if db.Host != env["EPHEMERA_DB_HOST"] || strconv.Itoa(db.Port) != env["EPHEMERA_DB_PORT"] || db.DBName != env["EPHEMERA_DB_NAME"] ||
				db.Admin.User != env["EPHEMERA_DB_ADMIN_USER"] || db.Admin.Auth != "rds_iam" || db.SSLMode != env["EPHEMERA_DB_SSLMODE"] {
				t.Errorf("orders = %+v from %v", db, env)
			}
			if db.Roles["readonly"] == nil {
				t.Error("no role orders/readonly")
			}
		})
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
	// DESIGN §3 checks 1 to 8 and fails only when sent to STS (which would
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

package sam_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	brokerconfig "github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/broker/policy"
	"github.com/ephemera-sh/ephemera/sam/internal/render"
)

// demoResources are the resources only the demo uses.
var demoResources = []string{
	"DemoFunction", "DemoApi", "DemoApiInvokesDemo", "DemoRole", "DemoInvokeBrokerPolicy",
	"DemoLogGroup", "DemoApiLogGroup", "ReportsReadRole",
}

// The demo and everything only it uses exist only with DeployDemo=true,
// which is not the default; without them the broker's environment names no
// role a policy could match or the broker could assume.
func TestDemoIsOptional(t *testing.T) {
	tpl := loadTemplate(t)
	if def := str(get(tpl, "Parameters", "DeployDemo", "Default")); def != "false" {
		t.Errorf("DeployDemo defaults to %q, want false", def)
	}
	for _, id := range demoResources {
		if c := str(get(resource(t, tpl, id), "Condition")); c != "WithDemo" {
			t.Errorf("%s: Condition %q, want WithDemo", id, c)
		}
	}
	if eq, _ := get(tpl, "Conditions", "WithDemo", "Fn::Equals").(arr); len(eq) != 2 || !refTo(eq[0], "DeployDemo") || eq[1] != "true" {
		t.Errorf("WithDemo = %v, want DeployDemo == true", get(tpl, "Conditions", "WithDemo"))
	}
	d := deploy(t, tpl, withSubnets(nil))
	live := d.live()
	for _, id := range demoResources {
		if _, ok := live[id]; ok {
			t.Errorf("%s is deployed without DeployDemo", id)
		}
	}
	if c := str(get(tpl, "Outputs", "DemoUrl", "Condition")); c != "WithDemo" {
		t.Errorf("output DemoUrl: Condition %q, want WithDemo", c)
	}
	env := d.env("BrokerFunction")
	if role := env["EPHEMERA_DEMO_ROLE"]; !strings.Contains(role, ":") {
		t.Errorf("EPHEMERA_DEMO_ROLE %q without the demo: want a value that is no IAM role name (contains ':')", role)
	}
	for _, fn := range []string{"BrokerFunction", "ReaperFunction"} {
		if arn := d.env(fn)["EPHEMERA_REPORTS_ROLE_ARN"]; strings.Contains(arn, ":role/ephemera-profiles/") {
			t.Errorf("%s: EPHEMERA_REPORTS_ROLE_ARN %q without the demo is a role the broker may assume", fn, arn)
		}
	}
}

// Every API throttles with the stack's parameters and writes an access log
// to a log group with a retention.
func TestAPIThrottlingAndAccessLogs(t *testing.T) {
	tpl := loadTemplate(t)
	groups := resources(t, tpl, "AWS::Logs::LogGroup")
	apis := map[string]obj{}
	for _, typ := range []string{"AWS::Serverless::Api", "AWS::Serverless::HttpApi"} {
		for id, r := range resources(t, tpl, typ) {
			apis[id] = r
		}
	}
	if len(apis) != 3 {
		t.Errorf("%d APIs, want BrokerRestApi, BrokerHttpApi and DemoApi", len(apis))
	}
	for id, api := range apis {
		p := get(api, "Properties")
		var burst, rate, dest, format any
		if str(get(api, "Type")) == "AWS::Serverless::Api" {
			ms, _ := get(p, "MethodSettings").(arr)
			if len(ms) != 1 || str(get(ms[0], "ResourcePath")) != "/*" || str(get(ms[0], "HttpMethod")) != "*" {
				t.Errorf("%s: MethodSettings %v, want one for every method (/*, *)", id, ms)
				continue
			}
			burst, rate = get(ms[0], "ThrottlingBurstLimit"), get(ms[0], "ThrottlingRateLimit")
			dest, format = get(p, "AccessLogSetting", "DestinationArn"), get(p, "AccessLogSetting", "Format")
		} else {
			burst, rate = get(p, "DefaultRouteSettings", "ThrottlingBurstLimit"), get(p, "DefaultRouteSettings", "ThrottlingRateLimit")
			dest, format = get(p, "AccessLogSettings", "DestinationArn"), get(p, "AccessLogSettings", "Format")
		}
		if !refTo(burst, "ApiThrottlingBurstLimit") || !refTo(rate, "ApiThrottlingRateLimit") {
			t.Errorf("%s: throttling %v/%v, want the ApiThrottling* parameters", id, burst, rate)
		}
		ga, _ := get(dest, "Fn::GetAtt").(arr)
		if len(ga) != 2 || ga[1] != "Arn" || groups[str(ga[0])] == nil {
			t.Errorf("%s: access log destination %v is not a log group of the stack", id, dest)
		} else if g := groups[str(ga[0])]; !refTo(get(g, "Properties", "RetentionInDays"), "LogRetentionDays") || (g["Condition"] != nil && str(g["Condition"]) != str(api["Condition"])) {
			t.Errorf("%s: log group %s: retention %v, condition %v (want LogRetentionDays, %v)", id, ga[0], get(g, "Properties", "RetentionInDays"), g["Condition"], api["Condition"])
		}
		// The format is one JSON object per request.
		// $context.error.messageString is a quoted JSON string already.
		line := strings.ReplaceAll(str(format), "$context.error.messageString", `"x"`)
		line = regexp.MustCompile(`\$context\.[A-Za-z.]+`).ReplaceAllString(line, "x")
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil || v["requestId"] == nil || v["status"] == nil || v["caller"] == nil {
			t.Errorf("%s: access log format is not a JSON object with requestId, status and caller: %v\n%s", id, err, line)
		}
	}
	for _, p := range []string{"ApiThrottlingBurstLimit", "ApiThrottlingRateLimit"} {
		if n, ok := get(tpl, "Parameters", p, "Default").(int); !ok || n < 1 {
			t.Errorf("%s: default %v", p, get(tpl, "Parameters", p, "Default"))
		}
	}
}

// The layers' ARNs and the broker URL are SSM parameters under
// <SsmParameterPrefix>/<stack>/, and the layer outputs are not exported
// (a new layer version would then fail every update while imported).
func TestSSMParameters(t *testing.T) {
	tpl := loadTemplate(t)
	for _, v := range variants[:2] {
		d := deploy(t, tpl, v.params)
		live := d.live()
		for id, want := range map[string][2]string{
			"LayerArnArm64Parameter": {"/ephemera/ephemera/layer-arn/arm64", physical["EphemeraLayerArm64"]},
			"LayerArnX8664Parameter": {"/ephemera/ephemera/layer-arn/x86_64", physical["EphemeraLayerX8664"]},
			"BrokerUrlParameter":     {"/ephemera/ephemera/broker-url", v.url},
		} {
			p, ok := live[id]
			if !ok || str(get(p, "Type")) != "AWS::SSM::Parameter" {
				t.Errorf("%s: no SSM parameter", id)
				continue
			}
			if got := str(get(p, "Properties", "Name")); got != want[0] {
				t.Errorf("%s: name %q, want %q", id, got, want[0])
			}
			if got := str(get(p, "Properties", "Value")); got != want[1] || str(get(p, "Properties", "Type")) != "String" {
				t.Errorf("%s: value %q, want %q (String)", id, got, want[1])
			}
			if !strings.HasPrefix(str(get(resource(t, tpl, id), "Properties", "Name", "Fn::Sub")), "${SsmParameterPrefix}/${AWS::StackName}/") {
				t.Errorf("%s: name is not under ${SsmParameterPrefix}/${AWS::StackName}/", id)
			}
		}
	}
	for _, o := range []string{"LayerArnArm64", "LayerArnX8664"} {
		if get(tpl, "Outputs", o, "Value") == nil {
			t.Errorf("no output %s", o)
		}
		if get(tpl, "Outputs", o, "Export") != nil {
			t.Errorf("output %s is exported", o)
		}
	}
}

// The connection budget: the broker's reserved concurrency and pool size
// and the reaper's reserved concurrency of 1 and pool size, from
// parameters with the documented defaults.
func TestConnectionBudget(t *testing.T) {
	tpl := loadTemplate(t)
	d := deploy(t, tpl, nil)
	live := d.live()
	if got := get(resource(t, tpl, "BrokerFunction"), "Properties", "ReservedConcurrentExecutions"); !refTo(got, "BrokerReservedConcurrency") {
		t.Errorf("BrokerFunction.ReservedConcurrentExecutions = %v, want !Ref BrokerReservedConcurrency", got)
	}
	if got := get(live["ReaperFunction"], "Properties", "ReservedConcurrentExecutions"); got != 1 {
		t.Errorf("ReaperFunction.ReservedConcurrentExecutions = %v, want 1", got)
	}
	for p, want := range map[string]int{"BrokerReservedConcurrency": 10, "BrokerDbPoolSize": 1, "ReaperDbPoolSize": 2} {
		if got := get(tpl, "Parameters", p, "Default"); got != want {
			t.Errorf("%s defaults to %v, want %d", p, got, want)
		}
	}
	broker, reaper := d.env("BrokerFunction"), d.env("ReaperFunction")
	if broker["EPHEMERA_DB_POOL_SIZE"] != "1" || reaper["EPHEMERA_DB_POOL_SIZE"] != "2" {
		t.Errorf("EPHEMERA_DB_POOL_SIZE broker %q, reaper %q; want 1 and 2", broker["EPHEMERA_DB_POOL_SIZE"], reaper["EPHEMERA_DB_POOL_SIZE"])
	}
	for _, env := range []map[string]string{broker, reaper} {
		if dur, err := time.ParseDuration(env["EPHEMERA_DB_TIMEOUT"]); err != nil || dur != 5*time.Second {
			t.Errorf("EPHEMERA_DB_TIMEOUT %q, want 5s", env["EPHEMERA_DB_TIMEOUT"])
		}
	}
	// Every value DbTimeout's pattern admits is a Go duration.
	pat := regexp.MustCompile(str(get(tpl, "Parameters", "DbTimeout", "AllowedPattern")))
	for _, s := range []string{"500ms", "5s", "2m", "999999s"} {
		if _, err := time.ParseDuration(s); !pat.MatchString(s) || err != nil {
			t.Errorf("DbTimeout %q: pattern %v, ParseDuration %v", s, pat.MatchString(s), err)
		}
	}
	if pat.MatchString("5") || pat.MatchString("1h") {
		t.Error("DbTimeout admits a value without a unit or in hours")
	}
}

// The broker, the reaper and every alarm on their metrics use the same
// namespace: ephemera/<stack> by default, or MetricsNamespace; and the
// metrics package accepts it.
func TestMetricsNamespace(t *testing.T) {
	tpl := loadTemplate(t)
	for params, want := range map[string]string{"": "ephemera/ephemera", "team/ephemera-prod": "team/ephemera-prod"} {
		d := deploy(t, tpl, map[string]string{"MetricsNamespace": params})
		for _, fn := range []string{"BrokerFunction", "ReaperFunction"} {
			if got := d.env(fn)["EPHEMERA_METRICS_NAMESPACE"]; got != want {
				t.Errorf("%s: EPHEMERA_METRICS_NAMESPACE %q, want %q", fn, got, want)
			}
		}
		if _, err := metrics.NewWithOptions(&bytes.Buffer{}, metrics.Options{Namespace: want}); err != nil {
			t.Errorf("metrics refuses %q: %v", want, err)
		}
		n := 0
		for id, a := range d.live() {
			if str(get(a, "Type")) != "AWS::CloudWatch::Alarm" {
				continue
			}
			var namespaces []string
			if ns := get(a, "Properties", "Namespace"); ns != nil {
				namespaces = append(namespaces, str(ns))
			}
			ms, _ := get(a, "Properties", "Metrics").(arr)
			for _, m := range ms {
				if ns := get(m, "MetricStat", "Metric", "Namespace"); ns != nil && !strings.HasPrefix(str(ns), "AWS/") {
					namespaces = append(namespaces, str(ns))
				}
			}
			for _, ns := range namespaces {
				n++
				if ns != want {
					t.Errorf("%s watches namespace %q, want %q", id, ns, want)
				}
			}
		}
		if n < 4 {
			t.Errorf("%d alarm metrics in ephemera's namespace, want at least 4", n)
		}
	}
}

// renderAndLoad renders the shipped templates with env as sam/rendercfg
// does at cold start and loads the result with the broker's own loaders.
func renderAndLoad(t *testing.T, env map[string]string, policies bool) *brokerconfig.Config {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "ephemera.yaml")
	if err := render.File("broker/ephemera.yaml", cfgPath, lookup); err != nil {
		t.Fatal(err)
	}
	polDir := filepath.Join(dir, "policies")
	if policies {
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
	return cfg
}

// The broker's and the reaper's environments, as deployed with and
// without the demo, render the shipped templates into a configuration the
// broker accepts, naming the database the parameters describe.
func TestBrokerConfigurationRenders(t *testing.T) {
	tpl := loadTemplate(t)
	for _, params := range []map[string]string{nil, withDemo(nil)} {
		d := deploy(t, tpl, params)
		for _, id := range []string{"BrokerFunction", "ReaperFunction"} {
			t.Run(id+" "+params["DeployDemo"], func(t *testing.T) {
				env := d.env(id)
				for _, k := range []string{"EPHEMERA_CONFIG_TEMPLATE", "EPHEMERA_CONFIG", "EPHEMERA_POLICY_DIR", "EPHEMERA_AUDIENCE", "EPHEMERA_STAGE", "PGSSLROOTCERT"} {
					if env[k] == "" {
						t.Errorf("%s is not set", k)
					}
				}
				if env["EPHEMERA_CONFIG_TEMPLATE"] != "/var/task/ephemera.yaml" || !strings.HasPrefix(env["EPHEMERA_CONFIG"], "/tmp/") {
					t.Errorf("config %s → %s: want /var/task/ephemera.yaml → /tmp/...", env["EPHEMERA_CONFIG_TEMPLATE"], env["EPHEMERA_CONFIG"])
				}
				policies := id == "BrokerFunction"
				if policies && env["EPHEMERA_POLICY_TEMPLATE_DIR"] != "/var/task/policies" {
					t.Errorf("EPHEMERA_POLICY_TEMPLATE_DIR = %q", env["EPHEMERA_POLICY_TEMPLATE_DIR"])
				}
				cfg := renderAndLoad(t, env, policies)
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
}

// placeholders returns the ${...} names the files need.
func placeholders(t *testing.T, files ...string) []string {
	t.Helper()
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, err = render.Expand(string(data), func(k string) (string, bool) {
			if !slices.Contains(names, k) {
				names = append(names, k)
			}
			return "x", true
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	slices.Sort(names)
	return names
}

// Every placeholder of the configuration a function renders (its YAML, and
// the policies for the broker) has a value in env.json and in the
// template's environment of that function; and env.json's values render a
// configuration the broker accepts, as `sam local invoke` would.
func TestEnvJSONRendersConfig(t *testing.T) {
	tpl := loadTemplate(t)
	data, err := os.ReadFile("env.json")
	if err != nil {
		t.Fatal(err)
	}
	var envs map[string]map[string]string
	if err := json.Unmarshal(data, &envs); err != nil {
		t.Fatal(err)
	}
	policyFiles, _ := filepath.Glob("broker/policies/*.cedar")
	if len(policyFiles) == 0 {
		t.Fatal("no broker/policies/*.cedar")
	}
	d := deploy(t, tpl, withDemo(nil))
	n := 0
	for id, fn := range resources(t, tpl, "AWS::Serverless::Function") {
		declared, _ := get(fn, "Properties", "Environment", "Variables").(obj)
		if declared["EPHEMERA_CONFIG_TEMPLATE"] == nil {
			continue
		}
		n++
		files := []string{"broker/ephemera.yaml"}
		withPolicies := declared["EPHEMERA_POLICY_TEMPLATE_DIR"] != nil
		if withPolicies {
			files = append(files, policyFiles...)
		}
		env := envs[id]
		for _, name := range placeholders(t, files...) {
			if env[name] == "" {
				t.Errorf("env.json: %s lacks %s, which %v need", id, name, files)
			}
			if declared[name] == nil {
				t.Errorf("template.yaml: %s does not set %s, which %v need", id, name, files)
			}
		}
		// env.json gives only what SAM cannot know; the paths come from
		// the template.
		full := d.env(id)
		for k, v := range env {
			full[k] = v
		}
		t.Run(id, func(t *testing.T) { renderAndLoad(t, full, withPolicies) })
	}
	if n != 2 {
		t.Errorf("%d functions render the configuration, want the broker and the reaper", n)
	}
}

// sam/README.md documents every parameter, every output and every route.
func TestREADMEMatchesTemplate(t *testing.T) {
	tpl := loadTemplate(t)
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, section := range []string{"Parameters", "Outputs"} {
		for name := range get(tpl, section).(obj) {
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("README.md does not mention %s `%s`", strings.ToLower(section[:len(section)-1]), name)
			}
		}
	}
	for _, r := range brokerRoutes {
		if !strings.Contains(doc, "`"+r+"`") {
			t.Errorf("README.md does not list the route `%s`", r)
		}
	}
	for _, s := range []string{"max_connections", "Retry-After", "503", "execute-api:Invoke"} {
		if !strings.Contains(doc, s) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
}

// events/issue-rest.json is what the private REST API gives the broker
// function for POST /v1/credentials (payload format 1.0): the path without
// the stage, the stage in the request context, the same body as the HTTP
// API's issue.json.
func TestIssueRESTEvent(t *testing.T) {
	var ev events.APIGatewayProxyRequest
	decodeStrict(t, "events/issue-rest.json", &ev)
	var v2 events.APIGatewayV2HTTPRequest
	decodeStrict(t, "events/issue.json", &v2)
	if ev.HTTPMethod != "POST" || ev.Path != "/v1/credentials" || ev.Resource != "/v1/credentials" ||
		ev.RequestContext.Stage != "prod" || ev.RequestContext.Path != "/prod/v1/credentials" {
		t.Errorf("not a POST /v1/credentials REST event on stage prod: %s %s %s %s", ev.HTTPMethod, ev.Path, ev.RequestContext.Stage, ev.RequestContext.Path)
	}
	if !slices.Contains(brokerRoutes, ev.HTTPMethod+" "+ev.Resource) {
		t.Errorf("%s %s is not a broker route", ev.HTTPMethod, ev.Resource)
	}
	if ev.Body != v2.Body || ev.IsBase64Encoded {
		t.Error("the REST event's body differs from events/issue.json's")
	}
	if ev.Headers["Content-Length"] != strconv.Itoa(len(ev.Body)) {
		t.Errorf("Content-Length %s for a %d-byte body", ev.Headers["Content-Length"], len(ev.Body))
	}
	for k, v := range ev.Headers {
		if mv := ev.MultiValueHeaders[k]; len(mv) != 1 || mv[0] != v {
			t.Errorf("header %s: %q vs multi-value %q", k, v, mv)
		}
	}
	if !strings.Contains(ev.RequestContext.Identity.UserArn, ":assumed-role/") || ev.RequestContext.Identity.SourceIP == "" {
		t.Error("no IAM caller or source IP in the request context (the route uses AWS_IAM)")
	}
	if !strings.Contains(ev.Headers["Host"], "-vpce-") || ev.Headers["x-amzn-vpce-id"] == "" {
		t.Error("not a call through the execute-api VPC endpoint")
	}
}

// Every parameter is in exactly one group of the console's form.
func TestParameterGroups(t *testing.T) {
	tpl := loadTemplate(t)
	seen := map[string]int{}
	for _, g := range get(tpl, "Metadata", "AWS::CloudFormation::Interface", "ParameterGroups").(arr) {
		for _, p := range get(g, "Parameters").(arr) {
			if get(tpl, "Parameters", str(p)) == nil {
				t.Errorf("group %v names no parameter %v", get(g, "Label", "default"), p)
			}
			seen[str(p)]++
		}
	}
	for p := range get(tpl, "Parameters").(obj) {
		if seen[p] != 1 {
			t.Errorf("parameter %s is in %d groups, want 1", p, seen[p])
		}
	}
}

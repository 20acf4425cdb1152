package sam_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	extconfig "github.com/ephemera-sh/ephemera/extension/config"
)

// variant is one way to deploy the stack, and what it must give.
type variant struct {
	name    string
	params  map[string]string
	private bool   // BrokerRestApi (true) or BrokerHttpApi
	vpce    string // the endpoint the private API admits
	created bool   // the stack creates the execute-api endpoint
	url     string // output BrokerApiUrl
}

const existingVpce = "vpce-0123456789abcdef0"

var variants = []variant{
	{name: "no subnets, auto: public", params: map[string]string{},
		url: "https://http456def.execute-api.eu-west-1.amazonaws.com"},
	{name: "subnets, auto: private with a new endpoint", params: withSubnets(nil),
		private: true, vpce: "vpce-0aaaaaaaaaaaaaaa1", created: true,
		url: "https://rest123abc-vpce-0aaaaaaaaaaaaaaa1.execute-api.eu-west-1.amazonaws.com/prod"},
	{name: "subnets, public", params: withSubnets(map[string]string{"EndpointType": "public"}),
		url: "https://http456def.execute-api.eu-west-1.amazonaws.com"},
	{name: "subnets, private with an existing endpoint", params: withSubnets(map[string]string{"ExecuteApiEndpointId": existingVpce}),
		private: true, vpce: existingVpce,
		url: "https://rest123abc-" + existingVpce + ".execute-api.eu-west-1.amazonaws.com/prod"},
	{name: "no subnets, private with an existing endpoint", params: map[string]string{"EndpointType": "private", "ExecuteApiEndpointId": existingVpce},
		private: true, vpce: existingVpce,
		url: "https://rest123abc-" + existingVpce + ".execute-api.eu-west-1.amazonaws.com/prod"},
}

func withSubnets(p map[string]string) map[string]string {
	out := map[string]string{
		"VpcId": "vpc-0123456789abcdef0", "SubnetIds": "subnet-0aaaaaaaaaaaaaaa1,subnet-0bbbbbbbbbbbbbbb2",
		"SecurityGroupIds": "sg-0fffffffffffffff1",
	}
	for k, v := range p {
		out[k] = v
	}
	return out
}

// withDemo returns p with DeployDemo=true.
func withDemo(p map[string]string) map[string]string {
	out := map[string]string{"DeployDemo": "true"}
	for k, v := range p {
		out[k] = v
	}
	return out
}

// Every variant, with and without the demo, deploys: every reference of
// every resource and output it creates names a resource it creates, and
// exactly one broker API exists, of the right kind, whose URL is output.
func TestEndpointVariants(t *testing.T) {
	tpl := loadTemplate(t)
	for _, v := range variants {
		for _, demo := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, demo %v", v.name, demo), func(t *testing.T) {
				params := v.params
				if demo {
					params = withDemo(params)
				}
				d := deploy(t, tpl, params)
				live := d.live()
				out := d.outputs()
				_, rest := live["BrokerRestApi"]
				_, http := live["BrokerHttpApi"]
				if rest != v.private || http == v.private {
					t.Fatalf("BrokerRestApi %v, BrokerHttpApi %v; want private=%v", rest, http, v.private)
				}
				if _, ok := live["ExecuteApiEndpoint"]; ok != v.created {
					t.Errorf("ExecuteApiEndpoint created: %v, want %v", ok, v.created)
				}
				if out["BrokerApiUrl"] != v.url {
					t.Errorf("BrokerApiUrl %q, want %q", out["BrokerApiUrl"], v.url)
				}
				if want := map[bool]string{true: "private", false: "public"}[v.private]; out["BrokerEndpointType"] != want {
					t.Errorf("BrokerEndpointType %q, want %q", out["BrokerEndpointType"], want)
				}
				if v.private && out["ExecuteApiEndpointIdOut"] != v.vpce {
					t.Errorf("ExecuteApiEndpointIdOut %q, want %q", out["ExecuteApiEndpointIdOut"], v.vpce)
				}
				// The URL satisfies the extension (https, no query).
				if _, err := extconfig.Parse(func(k string) string {
					return map[string]string{"EPHEMERA_BROKER_URL": out["BrokerApiUrl"], "EPHEMERA_AUDIENCE": "a",
						"EPHEMERA_CREDENTIALS": "o=orders/readonly", "AWS_REGION": "eu-west-1",
						"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}[k]
				}); err != nil {
					t.Errorf("the extension refuses BrokerApiUrl: %v", err)
				}
				// Functions run in the VPC exactly when subnets are given.
				for _, fn := range []string{"BrokerFunction", "ReaperFunction", "DemoFunction"} {
					if r, ok := live[fn]; ok {
						if got := get(r, "Properties", "VpcConfig") != nil; got != (params["SubnetIds"] != "") {
							t.Errorf("%s: VpcConfig present %v with SubnetIds %q", fn, got, params["SubnetIds"])
						}
					}
				}
			})
		}
	}
}

// apiRoutes returns "METHOD /path" → operation of an API's DefinitionBody.
func apiRoutes(t *testing.T, api any) map[string]obj {
	t.Helper()
	paths, ok := get(api, "Properties", "DefinitionBody", "paths").(obj)
	if !ok {
		t.Fatal("no DefinitionBody.paths")
	}
	out := map[string]obj{}
	for p, ops := range paths {
		for m, op := range ops.(obj) {
			out[strings.ToUpper(m)+" "+p] = op.(obj)
		}
	}
	return out
}

// Both broker APIs route exactly the broker's routes to BrokerFunction,
// every one behind SigV4 (AWS_IAM), with the payload format the variant
// gives; each has its own invoke permission, under the same condition.
func TestBrokerAPIRoutes(t *testing.T) {
	tpl := loadTemplate(t)
	want := slices.Sorted(slices.Values(brokerRoutes))
	for _, c := range []struct {
		api, typ, cond, permission, payload string
	}{
		{"BrokerRestApi", "AWS::Serverless::Api", "PrivateApi", "BrokerRestApiInvokesBroker", ""},
		{"BrokerHttpApi", "AWS::Serverless::HttpApi", "PublicApi", "BrokerHttpApiInvokesBroker", "2.0"},
	} {
		t.Run(c.api, func(t *testing.T) {
			api := resource(t, tpl, c.api)
			if str(api["Type"]) != c.typ || str(api["Condition"]) != c.cond {
				t.Fatalf("%s is %v under %v, want %s under %s", c.api, api["Type"], api["Condition"], c.typ, c.cond)
			}
			routes := apiRoutes(t, api)
			got := slices.Sorted(func(yield func(string) bool) {
				for r := range routes {
					if !yield(r) {
						return
					}
				}
			})
			if !slices.Equal(got, want) {
				t.Errorf("routes\n got %q\nwant %q", got, want)
			}
			scheme := get(api, "Properties", "DefinitionBody", "components", "securitySchemes", "sigv4")
			if str(get(scheme, "x-amazon-apigateway-authtype")) != "awsSigv4" || str(get(scheme, "type")) != "apiKey" || str(get(scheme, "name")) != "Authorization" {
				t.Errorf("securitySchemes.sigv4 = %v, want the awsSigv4 (AWS_IAM) scheme", scheme)
			}
			for r, op := range routes {
				sec, _ := op["security"].(arr)
				if len(sec) != 1 || len(sec[0].(obj)) != 1 || get(sec[0], "sigv4") == nil {
					t.Errorf("%s: security %v, want exactly [{sigv4: []}] (AWS_IAM)", r, sec)
				}
				in := get(op, "x-amazon-apigateway-integration")
				if str(get(in, "type")) != "aws_proxy" || str(get(in, "httpMethod")) != "POST" {
					t.Errorf("%s: integration %v, want a POST aws_proxy", r, in)
				}
				if got := fmt.Sprint(get(in, "payloadFormatVersion")); c.payload != "" && got != c.payload {
					t.Errorf("%s: payloadFormatVersion %s, want %s", r, got, c.payload)
				}
				uri := fmt.Sprint(get(in, "uri"))
				if !strings.Contains(uri, "BrokerFunction") {
					t.Errorf("%s: integration uri %s does not name BrokerFunction", r, uri)
				}
			}
			perm := resource(t, tpl, c.permission)
			if str(perm["Condition"]) != c.cond || !refTo(get(perm, "Properties", "FunctionName"), "BrokerFunction") ||
				str(get(perm, "Properties", "Principal")) != "apigateway.amazonaws.com" ||
				!strings.Contains(str(get(perm, "Properties", "SourceArn", "Fn::Sub")), "${"+c.api+"}/") {
				t.Errorf("%s = %v", c.permission, perm)
			}
		})
	}
	// Nothing else invokes the broker, and no function has API events on
	// a conditional API (SAM would create its permission unconditionally).
	for id, fn := range resources(t, tpl, "AWS::Serverless::Function") {
		evs, _ := get(fn, "Properties", "Events").(obj)
		for name, e := range evs {
			if typ := str(get(e, "Type")); typ == "Api" || typ == "HttpApi" {
				t.Errorf("%s.%s: a %s event; routes belong in the API's DefinitionBody", id, name, typ)
			}
		}
	}
}

// policyRequest is what API Gateway knows of a call when it evaluates the
// resource policy.
type policyRequest struct {
	account, org, vpce string
}

// decide evaluates a resource policy's statements for req as IAM does with
// StringEquals / StringNotEquals: "deny" (an explicit deny), "allow" (an
// allow, no deny) or "" (neither: for a caller of the API's own account,
// its IAM policy decides).
func decide(t *testing.T, statements arr, req policyRequest) string {
	t.Helper()
	keys := map[string]string{"aws:PrincipalAccount": req.account, "aws:PrincipalOrgID": req.org, "aws:SourceVpce": req.vpce}
	matches := func(cond obj) bool {
		for op, kv := range cond {
			for key, want := range kv.(obj) {
				got, ok := keys[key]
				if !ok {
					t.Fatalf("condition key %s not modelled", key)
				}
				var values []string
				switch w := want.(type) {
				case string:
					values = []string{w}
				case arr:
					for _, x := range w {
						values = append(values, str(x))
					}
				}
				in := got != "" && slices.Contains(values, got) // a missing key equals nothing
				switch op {
				case "StringEquals":
					if !in {
						return false
					}
				case "StringNotEquals":
					if in {
						return false
					}
				default:
					t.Fatalf("operator %s not modelled", op)
				}
			}
		}
		return true
	}
	decision := ""
	for _, s := range statements {
		if str(get(s, "Principal")) != "*" || str(get(s, "Action")) != "execute-api:Invoke" || str(get(s, "Resource")) != "execute-api:/*" {
			t.Fatalf("statement %v: want Principal *, execute-api:Invoke on execute-api:/*", s)
		}
		cond, _ := get(s, "Condition").(obj)
		if !matches(cond) {
			continue
		}
		switch str(get(s, "Effect")) {
		case "Deny":
			return "deny"
		case "Allow":
			decision = "allow"
		}
	}
	return decision
}

// The private API's resource policy admits calls only through its VPC
// endpoint and only from the configured accounts or organization; and it
// never allows the stack's own account by itself, so a same-account role
// still needs execute-api:Invoke on the route in its IAM policy.
func TestPrivateAPIResourcePolicy(t *testing.T) {
	tpl := loadTemplate(t)
	const own, other, stranger, org = "123456789012", "210987654321", "999999999999", "o-abcdefghij12"
	for _, v := range variants {
		if !v.private {
			continue
		}
		for _, admit := range []map[string]string{
			{},
			{"AllowedAccountIds": other},
			{"AllowedOrgId": org},
		} {
			params := map[string]string{}
			for k, x := range v.params {
				params[k] = x
			}
			for k, x := range admit {
				params[k] = x
			}
			t.Run(fmt.Sprintf("%s %v", v.name, admit), func(t *testing.T) {
				d := deploy(t, tpl, params)
				api := d.live()["BrokerRestApi"]
				if got := str(get(api, "Properties", "EndpointConfiguration", "Type")); got != "PRIVATE" {
					t.Errorf("EndpointConfiguration.Type %q, want PRIVATE", got)
				}
				if ids := d.strings(get(api, "Properties", "EndpointConfiguration", "VPCEndpointIds")); !slices.Equal(ids, []string{v.vpce}) {
					t.Errorf("VPCEndpointIds %v, want [%s]", ids, v.vpce)
				}
				statements, _ := get(api, "Properties", "DefinitionBody", "x-amazon-apigateway-policy", "Statement").(arr)
				if len(statements) == 0 {
					t.Fatal("no resource policy")
				}
				for _, c := range []struct {
					req  policyRequest
					want string
				}{
					{policyRequest{own, org, v.vpce}, ""}, // IAM decides
					{policyRequest{own, "", v.vpce}, ""},
					{policyRequest{own, org, "vpce-0ffffffffffffff99"}, "deny"},
					{policyRequest{own, org, ""}, "deny"}, // not through an endpoint
					{policyRequest{other, "", v.vpce}, map[bool]string{true: "allow", false: "deny"}[admit["AllowedAccountIds"] != ""]},
					{policyRequest{other, "", ""}, "deny"},
					{policyRequest{stranger, org, v.vpce}, map[bool]string{true: "allow", false: "deny"}[admit["AllowedOrgId"] != ""]},
					{policyRequest{stranger, org, "vpce-0ffffffffffffff99"}, "deny"},
					{policyRequest{stranger, "o-otherorg123", v.vpce}, "deny"},
					{policyRequest{stranger, "", v.vpce}, "deny"},
				} {
					if got := decide(t, statements, c.req); got != c.want {
						t.Errorf("%+v: %q, want %q", c.req, got, c.want)
					}
				}
			})
		}
	}
}

// The stack's execute-api endpoint: an interface endpoint without private
// DNS (which would cut the whole VPC off from public execute-api names),
// admitting HTTPS from the client security group the demo carries.
func TestExecuteApiEndpoint(t *testing.T) {
	tpl := loadTemplate(t)
	d := deploy(t, tpl, withDemo(withSubnets(nil)))
	live := d.live()
	ep := live["ExecuteApiEndpoint"]
	if got := str(get(ep, "Properties", "ServiceName")); got != "com.amazonaws.eu-west-1.execute-api" {
		t.Errorf("ServiceName %q", got)
	}
	if str(get(ep, "Properties", "VpcEndpointType")) != "Interface" || get(ep, "Properties", "PrivateDnsEnabled") != false {
		t.Error("want an Interface endpoint with PrivateDnsEnabled: false")
	}
	if subnets := d.strings(get(ep, "Properties", "SubnetIds")); len(subnets) != 2 {
		t.Errorf("SubnetIds %v", subnets)
	}
	ingress, _ := get(live["ExecuteApiEndpointSecurityGroup"], "Properties", "SecurityGroupIngress").(arr)
	if len(ingress) != 1 || get(ingress[0], "FromPort") != 443 || get(ingress[0], "ToPort") != 443 ||
		str(get(ingress[0], "SourceSecurityGroupId")) != physical["BrokerClientSecurityGroup"] {
		t.Errorf("endpoint ingress %v, want 443 from BrokerClientSecurityGroup", ingress)
	}
	sgs := d.strings(get(live["DemoFunction"], "Properties", "VpcConfig", "SecurityGroupIds"))
	if !slices.Contains(sgs, physical["BrokerClientSecurityGroup"]) || !slices.Contains(sgs, "sg-0fffffffffffffff1") {
		t.Errorf("DemoFunction security groups %v, want the client group and SecurityGroupIds", sgs)
	}
	if d.outputs()["BrokerClientSecurityGroupId"] != physical["BrokerClientSecurityGroup"] {
		t.Error("no output BrokerClientSecurityGroupId")
	}
}

// The demo, in each variant: the environment the extension requires, the
// broker URL of the deployed variant, the arm64 layer, its own IAM-only
// route, and execute-api:Invoke on exactly issue, renew and revoke of the
// deployed API, in that API's ARN format.
func TestDemoFunction(t *testing.T) {
	tpl := loadTemplate(t)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d := deploy(t, tpl, withDemo(v.params))
			live := d.live()
			env := d.env("DemoFunction")
			for _, name := range requiredExtensionVars(t) {
				if env[name] == "" {
					t.Errorf("DemoFunction: %s is required by the extension but not set", name)
				}
			}
			if env["EPHEMERA_BROKER_URL"] != v.url {
				t.Errorf("EPHEMERA_BROKER_URL %q, want %q", env["EPHEMERA_BROKER_URL"], v.url)
			}
			if env["EPHEMERA_AUDIENCE"] != d.env("BrokerFunction")["EPHEMERA_AUDIENCE"] {
				t.Error("the demo and the broker disagree on EPHEMERA_AUDIENCE")
			}
			vals := map[string]string{"AWS_ACCESS_KEY_ID": "ASIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token", "AWS_REGION": "eu-west-1"}
			for k, x := range env {
				vals[k] = x
			}
			cfg, err := extconfig.Parse(func(k string) string { return vals[k] })
			if err != nil {
				t.Fatalf("the extension refuses the demo's environment: %v", err)
			}
			if len(cfg.Credentials) != 1 || cfg.Credentials[0].Database != "orders" || cfg.Credentials[0].Role != "readonly" || cfg.Credentials[0].TTL != 15*time.Minute {
				t.Errorf("credentials %+v", cfg.Credentials)
			}
			demo := resource(t, tpl, "DemoFunction")
			if layers, _ := get(demo, "Properties", "Layers").(arr); len(layers) != 1 || !refTo(layers[0], "EphemeraLayerArm64") {
				t.Errorf("DemoFunction.Layers = %v, want [!Ref EphemeraLayerArm64]", layers)
			}
			if got := get(live["DemoFunction"], "Properties", "Role"); got != physical["DemoRole.Arn"] {
				t.Errorf("DemoFunction.Role = %v, want DemoRole's ARN", got)
			}
			routes := apiRoutes(t, resource(t, tpl, "DemoApi"))
			if op, ok := routes["GET /orders"]; !ok || len(routes) != 1 {
				t.Errorf("DemoApi routes %v, want GET /orders", routes)
			} else if sec, _ := op["security"].(arr); len(sec) != 1 || get(sec[0], "sigv4") == nil {
				t.Errorf("GET /orders: security %v, want sigv4", sec)
			}

			var arns []string
			pol := live["DemoInvokeBrokerPolicy"]
			if roles := d.strings(get(pol, "Properties", "Roles")); !slices.Equal(roles, []string{physical["DemoRole"]}) {
				t.Errorf("DemoInvokeBrokerPolicy.Roles = %v", roles)
			}
			for _, st := range get(pol, "Properties", "PolicyDocument", "Statement").(arr) {
				if str(get(st, "Action")) == "execute-api:Invoke" && str(get(st, "Effect")) == "Allow" {
					arns = append(arns, d.strings(get(st, "Resource"))...)
				}
			}
			prefix := "arn:aws:execute-api:eu-west-1:123456789012:http456def/*/"
			if v.private {
				prefix = "arn:aws:execute-api:eu-west-1:123456789012:rest123abc/prod/"
			}
			want := []string{prefix + "POST/v1/credentials", prefix + "POST/v1/leases/*/renew", prefix + "POST/v1/leases/*/revoke"}
			sort.Strings(arns)
			sort.Strings(want)
			if !slices.Equal(arns, want) {
				t.Errorf("DemoRole may invoke\n %q\nwant exactly\n %q", arns, want)
			}
			if out := d.outputs()["BrokerInvokeArnPrefix"]; out != prefix {
				t.Errorf("BrokerInvokeArnPrefix %q, want %q", out, prefix)
			}
		})
	}
}

func TestSTSEndpoint(t *testing.T) {
	tpl := loadTemplate(t)
	for _, c := range []struct {
		params map[string]string
		want   bool
	}{
		{withSubnets(nil), true},
		{withSubnets(map[string]string{"CreateStsEndpoint": "false"}), false},
		{map[string]string{}, false}, // outside a VPC the broker reaches STS directly
	} {
		d := deploy(t, tpl, c.params)
		live := d.live()
		ep, ok := live["StsEndpoint"]
		if ok != c.want {
			t.Errorf("%v: StsEndpoint created %v, want %v", c.params, ok, c.want)
			continue
		}
		if !ok {
			continue
		}
		if got := str(get(ep, "Properties", "ServiceName")); got != "com.amazonaws.eu-west-1.sts" {
			t.Errorf("ServiceName %q", got)
		}
		if get(ep, "Properties", "PrivateDnsEnabled") != true || str(get(ep, "Properties", "VpcEndpointType")) != "Interface" {
			t.Error("want an Interface endpoint with PrivateDnsEnabled: true")
		}
		if sgs := d.strings(get(live["BrokerFunction"], "Properties", "VpcConfig", "SecurityGroupIds")); !slices.Contains(sgs, physical["BrokerSecurityGroup"]) {
			t.Errorf("the broker's security groups %v lack BrokerSecurityGroup (admitted by the STS endpoint)", sgs)
		}
	}
}

package sam_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// deployment evaluates template.yaml as CloudFormation would for one set of
// parameter values: conditions, and the intrinsic functions the template
// uses (Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Split, Fn::Equals,
// Fn::Not, Fn::And, Fn::Or, AWS::NoValue). A Ref or GetAtt of a resource
// that the deployment does not create is an error of the test: that is the
// template failing to deploy with these parameters.
type deployment struct {
	t      *testing.T
	tpl    obj
	params map[string]string // overrides of the parameters' defaults
}

// noValue is what AWS::NoValue evaluates to; eval drops it from mappings
// and lists.
type noValueT struct{}

var noValue = noValueT{}

// pseudo are the pseudo parameters of the sample deployment.
var pseudo = map[string]string{
	"AWS::AccountId": "123456789012", "AWS::Region": "eu-west-1", "AWS::Partition": "aws",
	"AWS::StackName": "ephemera", "AWS::URLSuffix": "amazonaws.com",
}

// required are sample values of the parameters without a default.
var required = map[string]string{
	"DbEndpoint":   "orders.cluster-abc.eu-west-1.rds.amazonaws.com",
	"DbResourceId": "cluster-ABCDEFGHIJKLMNOPQRSTUVWXY1",
}

// physical are sample physical ids and attributes of resources, as Ref
// and Fn::GetAtt would give them; other resources get "<id>-EXAMPLE".
var physical = map[string]string{
	"BrokerRestApi":                   "rest123abc",
	"BrokerHttpApi":                   "http456def",
	"DemoApi":                         "demo789ghi",
	"DemoRole":                        "ephemera-DemoRole-EXAMPLE12345",
	"DemoRole.Arn":                    "arn:aws:iam::123456789012:role/ephemera-DemoRole-EXAMPLE12345",
	"ExecuteApiEndpoint":              "vpce-0aaaaaaaaaaaaaaa1",
	"BrokerClientSecurityGroup":       "sg-0bbbbbbbbbbbbbbb1",
	"BrokerSecurityGroup":             "sg-0ccccccccccccccc1",
	"ReportsReadRole.Arn":             "arn:aws:iam::123456789012:role/ephemera-profiles/ephemera-ReportsReadRole-EXAMPLE",
	"BrokerFunctionRole.Arn":          "arn:aws:iam::123456789012:role/ephemera-BrokerFunctionRole-EXAMPLE",
	"EphemeraLayerArm64":              "arn:aws:lambda:eu-west-1:123456789012:layer:ephemera-ephemera-arm64:7",
	"EphemeraLayerX8664":              "arn:aws:lambda:eu-west-1:123456789012:layer:ephemera-ephemera-x86_64:7",
	"BrokerFunction.Arn":              "arn:aws:lambda:eu-west-1:123456789012:function:ephemera-broker",
	"DemoFunction.Arn":                "arn:aws:lambda:eu-west-1:123456789012:function:ephemera-demo",
	"BrokerApiLogGroup.Arn":           "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/apigateway/ephemera-broker:*",
	"DemoApiLogGroup.Arn":             "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/apigateway/ephemera-demo:*",
	"ApiGatewayLogRole.Arn":           "arn:aws:iam::123456789012:role/ephemera-ApiGatewayLogRole-EXAMPLE",
	"ExecuteApiEndpointSecurityGroup": "sg-0ddddddddddddddd1",
	"StsEndpointSecurityGroup":        "sg-0eeeeeeeeeeeeeee1",
}

// SAM's implicit resources, which exist whenever their function does.
var implicit = map[string]string{"BrokerFunctionRole": "BrokerFunction", "ReaperFunctionRole": "ReaperFunction"}

func deploy(t *testing.T, tpl obj, params map[string]string) *deployment {
	t.Helper()
	for k := range params {
		if get(tpl, "Parameters", k) == nil {
			t.Fatalf("no parameter %s", k)
		}
	}
	return &deployment{t: t, tpl: tpl, params: params}
}

// param is the value of a parameter: a string, or a list (arr).
func (d *deployment) param(name string) any {
	p := get(d.tpl, "Parameters", name)
	if p == nil {
		d.t.Fatalf("no parameter %s", name)
	}
	val, ok := d.params[name]
	if !ok {
		if def := get(p, "Default"); def != nil {
			val, ok = fmt.Sprint(def), true
		}
	}
	if !ok {
		val, ok = required[name]
	}
	if !ok {
		d.t.Fatalf("parameter %s: no default and no sample value", name)
	}
	if pat := str(get(p, "AllowedPattern")); pat != "" && !regexp.MustCompile(pat).MatchString(val) {
		d.t.Errorf("parameter %s: %q does not match its AllowedPattern %s", name, val, pat)
	}
	if allowed, ok := get(p, "AllowedValues").(arr); ok && !slices.ContainsFunc(allowed, func(a any) bool { return fmt.Sprint(a) == val }) {
		d.t.Errorf("parameter %s: %q is not one of %v", name, val, allowed)
	}
	if strings.HasPrefix(str(get(p, "Type")), "CommaDelimitedList") || strings.HasPrefix(str(get(p, "Type")), "List<") {
		return toArr(strings.Split(val, ","))
	}
	return val
}

// cond evaluates the named condition.
func (d *deployment) cond(name string) bool {
	c := get(d.tpl, "Conditions", name)
	if c == nil {
		d.t.Fatalf("no condition %s", name)
	}
	b, ok := d.eval(c).(bool)
	if !ok {
		d.t.Fatalf("condition %s is not a boolean", name)
	}
	return b
}

// exists reports whether the deployment creates resource id.
func (d *deployment) exists(id string) bool {
	if fn, ok := implicit[id]; ok {
		id = fn
	}
	r, ok := get(d.tpl, "Resources", id).(obj)
	if !ok {
		return false
	}
	c := str(r["Condition"])
	return c == "" || d.cond(c)
}

// resourceValue is Ref (attr "") or Fn::GetAtt of a resource.
func (d *deployment) resourceValue(id, attr string) string {
	if !d.exists(id) {
		d.t.Errorf("refers to %s, which this deployment does not create (%v)", id, d.params)
		return "MISSING-" + id
	}
	key := id
	if attr != "" {
		key += "." + attr
	}
	if attr == "Value" { // AWS::SSM::Parameter
		return str(d.eval(get(d.tpl, "Resources", id, "Properties", "Value")))
	}
	if v, ok := physical[key]; ok {
		return v
	}
	return key + "-EXAMPLE"
}

func (d *deployment) ref(name string) any {
	if name == "AWS::NoValue" {
		return noValue
	}
	if v, ok := pseudo[name]; ok {
		return v
	}
	if get(d.tpl, "Parameters", name) != nil {
		return d.param(name)
	}
	return d.resourceValue(name, "")
}

var subVarRE = regexp.MustCompile(`\$\{([^}!][^}]*)\}`)

func (d *deployment) sub(s string, vars obj) string {
	return subVarRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		if v, ok := vars[name]; ok {
			return d.text(v)
		}
		if id, attr, ok := strings.Cut(name, "."); ok {
			return d.resourceValue(id, attr)
		}
		return d.text(d.ref(name))
	})
}

// text evaluates v to a string; a number or a one-element list is accepted.
func (d *deployment) text(v any) string {
	switch x := d.eval(v).(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case arr:
		if len(x) == 1 {
			return d.text(x[0])
		}
	case nil:
		return ""
	}
	d.t.Errorf("%v does not evaluate to a string", v)
	return ""
}

func toArr(l []string) arr {
	out := make(arr, len(l))
	for i, s := range l {
		out[i] = s
	}
	return out
}

func (d *deployment) strings(v any) []string {
	switch x := d.eval(v).(type) {
	case arr:
		var out []string
		for _, e := range x {
			out = append(out, d.text(e))
		}
		return out
	case string:
		return []string{x}
	}
	d.t.Errorf("%v does not evaluate to a list", v)
	return nil
}

// eval evaluates every intrinsic function in v.
func (d *deployment) eval(v any) any {
	switch x := v.(type) {
	case arr:
		out := arr{}
		for _, e := range x {
			if ev := d.eval(e); ev != noValue {
				out = append(out, ev)
			}
		}
		return out
	case obj:
		if len(x) == 1 {
			for k, a := range x {
				if r, ok := d.intrinsic(k, a); ok {
					return r
				}
			}
		}
		out := obj{}
		for k, e := range x {
			if ev := d.eval(e); ev != noValue {
				out[k] = ev
			}
		}
		return out
	}
	return v
}

func (d *deployment) intrinsic(fn string, a any) (any, bool) {
	args, _ := a.(arr)
	switch fn {
	case "Ref":
		return d.ref(str(a)), true
	case "Condition":
		return d.cond(str(a)), true
	case "Fn::GetAtt":
		return d.resourceValue(str(args[0]), str(args[1])), true
	case "Fn::Sub":
		if s, ok := a.(string); ok {
			return d.sub(s, nil), true
		}
		vars, _ := args[1].(obj)
		return d.sub(str(args[0]), vars), true
	case "Fn::If":
		if d.cond(str(args[0])) {
			return d.eval(args[1]), true
		}
		return d.eval(args[2]), true
	case "Fn::Join":
		return strings.Join(d.strings(args[1]), str(args[0])), true
	case "Fn::Split":
		return toArr(strings.Split(d.text(args[1]), str(args[0]))), true
	case "Fn::Equals":
		return d.text(args[0]) == d.text(args[1]), true
	case "Fn::Not":
		return !d.eval(args[0]).(bool), true
	case "Fn::And", "Fn::Or":
		and := fn == "Fn::And"
		for _, c := range args {
			if d.eval(c).(bool) != and {
				return !and, true
			}
		}
		return and, true
	}
	return nil, false
}

// live returns the resources this deployment creates, each evaluated (which
// checks every reference in it).
func (d *deployment) live() map[string]obj {
	out := map[string]obj{}
	for id, r := range get(d.tpl, "Resources").(obj) {
		if !d.exists(id) {
			continue
		}
		ev := obj{"Type": get(r, "Type")}
		for _, k := range []string{"Properties", "Metadata", "DependsOn"} {
			if v := get(r, k); v != nil {
				ev[k] = d.eval(v)
			}
		}
		if dep := str(get(r, "DependsOn")); dep != "" && !d.exists(dep) {
			d.t.Errorf("%s depends on %s, which this deployment does not create", id, dep)
		}
		out[id] = ev
	}
	return out
}

// outputs returns the outputs this deployment has, evaluated.
func (d *deployment) outputs() map[string]string {
	out := map[string]string{}
	for name, o := range get(d.tpl, "Outputs").(obj) {
		if c := str(get(o, "Condition")); c != "" && !d.cond(c) {
			continue
		}
		out[name] = d.text(get(o, "Value"))
		if e := get(o, "Export", "Name"); e != nil {
			d.text(e)
		}
	}
	return out
}

// env is a function's environment in this deployment.
func (d *deployment) env(id string) map[string]string {
	d.t.Helper()
	if !d.exists(id) {
		d.t.Fatalf("%s is not deployed", id)
	}
	out := map[string]string{}
	vars, _ := get(d.tpl, "Resources", id, "Properties", "Environment", "Variables").(obj)
	for k, v := range vars {
		out[k] = d.text(v)
	}
	return out
}

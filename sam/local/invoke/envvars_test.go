package invoke

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// TestParseEnvVars: SAM's env.json format — functions by logical id and "Parameters" —
// with strings, numbers and booleans as values; anything else fails with ErrEnvVars and
// names the place.
func TestParseEnvVars(t *testing.T) {
	ev, err := ParseEnvVars([]byte(`{
		"OrdersFunction": {"EPHEMERA_CREDENTIALS": "orders=orders/readonly:15m", "RETRIES": 3, "DEBUG": true, "RATIO": 0.5},
		"Parameters": {"LOG_LEVEL": "info", "EMPTY": ""}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"EPHEMERA_CREDENTIALS": "orders=orders/readonly:15m", "RETRIES": "3", "DEBUG": "true", "RATIO": "0.5"}
	if !maps.Equal(ev.Functions["OrdersFunction"], want) || len(ev.Functions) != 1 {
		t.Errorf("functions: %v", ev.Functions)
	}
	if !maps.Equal(ev.Parameters, map[string]string{"LOG_LEVEL": "info", "EMPTY": ""}) {
		t.Errorf("parameters: %v", ev.Parameters)
	}
	for name, tc := range map[string]struct{ text, want string }{
		"not JSON":       {`{"A":`, "not a JSON object"},
		"array":          {`[]`, "not a JSON object"},
		"null":           {`null`, "not a JSON object"},
		"function array": {`{"A": ["X"]}`, `"A" is not an object of variables`},
		"nested value":   {`{"A": {"X": {"Y": "1"}}}`, `"A": the value of X is not`},
		"null value":     {`{"Parameters": {"X": null}}`, `"Parameters": the value of X is not`},
		"bad name":       {`{"A": {"X=Y": "1"}}`, `"X=Y" is not a variable name`},
		"NUL in value":   {`{"A": {"X": "a\u0000b"}}`, `the value of X is not`},
	} {
		_, err := ParseEnvVars([]byte(tc.text))
		if !errors.Is(err, ErrEnvVars) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "invoke: env.json") {
			t.Errorf("%s: err = %v, want ErrEnvVars with %q", name, err, tc.want)
		}
	}
}

// TestEnvVarsFor: the variables of a function are Parameters overlaid with its own; an
// empty id picks the only function; a file of several functions needs an id, and an id the
// file does not name is an error; a file of Parameters only, or none, takes any name.
func TestEnvVarsFor(t *testing.T) {
	two, _ := ParseEnvVars([]byte(`{"A": {"X": "a", "Y": "a"}, "B": {"X": "b"}, "Parameters": {"X": "p", "Z": "p"}}`))
	id, env, err := two.For("A")
	if err != nil || id != "A" || !maps.Equal(env, map[string]string{"X": "a", "Y": "a", "Z": "p"}) {
		t.Errorf("For(A) = %q %v %v", id, env, err)
	}
	if _, _, err := two.For(""); !errors.Is(err, ErrEnvVars) || !strings.Contains(err.Error(), "several functions (A, B)") {
		t.Errorf("For(\"\") of two functions: %v", err)
	}
	if _, _, err := two.For("C"); !errors.Is(err, ErrEnvVars) || !strings.Contains(err.Error(), `no function "C" (it has A, B)`) {
		t.Errorf("For(C): %v", err)
	}
	one, _ := ParseEnvVars([]byte(`{"Only": {"X": "o"}}`))
	if id, env, err := one.For(""); err != nil || id != "Only" || env["X"] != "o" {
		t.Errorf("For(\"\") of one function = %q %v %v", id, env, err)
	}
	params, _ := ParseEnvVars([]byte(`{"Parameters": {"X": "p"}}`))
	if id, env, err := params.For("anything"); err != nil || id != "anything" || env["X"] != "p" {
		t.Errorf("Parameters only: %q %v %v", id, env, err)
	}
	var none *EnvVars
	if id, env, err := none.For(""); err != nil || id != "" || len(env) != 0 {
		t.Errorf("nil EnvVars: %q %v %v", id, env, err)
	}
}

// TestEnvironment: the local defaults apply where env.json is silent, env.json wins over
// them, an empty value removes a variable, Lambda's reserved variables are dropped with a
// notice, and the broker URL and audience are always the local broker's (a different value
// in env.json is replaced, with a notice).
func TestEnvironment(t *testing.T) {
	var logs strings.Builder
	got := environment(map[string]string{
		"EPHEMERA_CREDENTIALS":     "db=orders/writer:5m",
		"EPHEMERA_AWS_PROFILES":    "",
		"EPHEMERA_BROKER_URL":      "https://abc.execute-api.eu-west-1.amazonaws.com",
		"AWS_REGION":               "eu-west-1",
		"AWS_LAMBDA_FUNCTION_NAME": "x",
		"APP":                      "1",
	}, "http://127.0.0.1:1", "local-orders", "http://127.0.0.1:2", &logs)
	want := map[string]string{
		"EPHEMERA_CREDENTIALS":  "db=orders/writer:5m",
		"EPHEMERA_INIT_TIMEOUT": DefaultInitTimeout,
		"AWS_ENDPOINT_URL_STS":  "http://127.0.0.1:2",
		"EPHEMERA_BROKER_URL":   "http://127.0.0.1:1",
		"EPHEMERA_AUDIENCE":     "local-orders",
		"APP":                   "1",
	}
	if !maps.Equal(got, want) {
		t.Errorf("environment:\n got %v\nwant %v", got, want)
	}
	for _, notice := range []string{
		"[local] env.json: AWS_REGION is reserved by Lambda: ignored",
		"[local] env.json: AWS_LAMBDA_FUNCTION_NAME is reserved by Lambda: ignored",
		"[local] env.json: EPHEMERA_BROKER_URL=https://abc.execute-api.eu-west-1.amazonaws.com replaced by the local broker's http://127.0.0.1:1",
	} {
		if !strings.Contains(logs.String(), notice+"\n") {
			t.Errorf("no notice %q in:\n%s", notice, logs.String())
		}
	}
	if strings.Contains(logs.String(), "EPHEMERA_AUDIENCE") {
		t.Errorf("a notice about an audience env.json did not set:\n%s", logs.String())
	}
	defaults := environment(nil, "b", "a", "s", &logs)
	if defaults["EPHEMERA_CREDENTIALS"] != DefaultCredentials || defaults["EPHEMERA_AWS_PROFILES"] != DefaultAWSProfiles {
		t.Errorf("defaults: %v", defaults)
	}
}

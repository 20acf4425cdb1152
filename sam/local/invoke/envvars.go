package invoke

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ParametersKey is the key of env.json whose variables apply to every
// function (SAM's "Parameters").
const ParametersKey = "Parameters"

// ErrEnvVars is wrapped by every error about an env.json file: its syntax,
// or a function it does not name.
var ErrEnvVars = errors.New("env.json")

// EnvVars is a file in the format of `sam local invoke --env-vars`: one
// object per function, keyed by the function's logical id, and "Parameters"
// for every function:
//
//	{
//	  "OrdersFunction": {"EPHEMERA_CREDENTIALS": "orders=orders/readonly:15m"},
//	  "Parameters":     {"LOG_LEVEL": "debug"}
//	}
//
// Values may be strings, numbers or booleans (written as their JSON text,
// as SAM does); a function's own value wins over Parameters'.
type EnvVars struct {
	// Functions maps a logical id to its variables.
	Functions map[string]map[string]string
	// Parameters apply to every function.
	Parameters map[string]string
}

// ReadEnvVars reads and parses an env.json file.
func ReadEnvVars(path string) (*EnvVars, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("invoke: %w: %w", ErrEnvVars, err)
	}
	ev, err := ParseEnvVars(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return ev, nil
}

// ParseEnvVars parses the text of an env.json file.
func ParseEnvVars(data []byte) (*EnvVars, error) {
	fail := func(format string, args ...any) (*EnvVars, error) {
		return nil, fmt.Errorf("invoke: %w: "+format, append([]any{ErrEnvVars}, args...)...)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return fail("not a JSON object of functions (%v)", errText(err))
	}
	ev := &EnvVars{Functions: map[string]map[string]string{}, Parameters: map[string]string{}}
	for id, raw := range top {
		var vars map[string]json.RawMessage
		if err := json.Unmarshal(raw, &vars); err != nil || vars == nil {
			return fail("%q is not an object of variables", id)
		}
		env := map[string]string{}
		for k, v := range vars {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return fail("%q: %q is not a variable name", id, k)
			}
			s, ok := scalar(v)
			if !ok {
				return fail("%q: the value of %s is not a string, number or boolean", id, k)
			}
			env[k] = s
		}
		if id == ParametersKey {
			ev.Parameters = env
		} else {
			ev.Functions[id] = env
		}
	}
	return ev, nil
}

// scalar returns a JSON string's value, or a number's or boolean's text.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil && len(raw) > 0 && raw[0] == '"' {
		return s, !strings.ContainsRune(s, 0)
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return "", false
	}
	switch v := v.(type) {
	case json.Number:
		return v.String(), true
	case bool:
		return fmt.Sprint(v), true
	}
	return "", false
}

func errText(err error) string {
	if err == nil {
		return "null"
	}
	return err.Error()
}

// IDs returns the logical ids of the functions, sorted.
func (ev *EnvVars) IDs() []string {
	ids := make([]string, 0, len(ev.Functions))
	for id := range ev.Functions {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// For returns the variables of function id (Parameters, then the
// function's own) and the id it chose. An empty id picks the only function
// of the file; a file with no function gives Parameters and id "". A
// nil EnvVars gives no variables. It fails when id is not in a file that
// names functions, or when id is empty and the file names several.
func (ev *EnvVars) For(id string) (string, map[string]string, error) {
	env := map[string]string{}
	if ev == nil {
		return id, env, nil
	}
	ids := ev.IDs()
	switch {
	case id == "" && len(ids) == 1:
		id = ids[0]
	case id == "" && len(ids) > 1:
		return "", nil, fmt.Errorf("invoke: %w names several functions (%s): pick one", ErrEnvVars, strings.Join(ids, ", "))
	case id != "" && len(ids) > 0 && ev.Functions[id] == nil:
		return "", nil, fmt.Errorf("invoke: %w has no function %q (it has %s)", ErrEnvVars, id, strings.Join(ids, ", "))
	}
	for k, v := range ev.Parameters {
		env[k] = v
	}
	for k, v := range ev.Functions[id] {
		env[k] = v
	}
	return id, env, nil
}

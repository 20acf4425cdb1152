package localapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/localapi"
)

// The documents have exactly the documented fields, and decode strictly.
func TestDocuments(t *testing.T) {
	for _, tc := range []struct {
		v    any
		keys []string
	}{
		{localapi.Credential{Name: "orders", Password: "p", ExpiresAt: time.Date(2026, 11, 22, 8, 15, 0, 0, time.UTC)},
			[]string{"dbname", "dsn", "expires_at", "host", "lease_id", "name", "password", "port", "sslmode", "username"}},
		{localapi.AWSCredentials{AccessKeyID: "ASIA"}, []string{"AccessKeyId", "Expiration", "SecretAccessKey", "Token"}},
		{localapi.Health{Ready: true}, []string{"ready"}},
		{localapi.ErrorDocument{Error: localapi.ErrorBody{Code: localapi.CodeNotReady, Message: "m"}}, []string{"error"}},
	} {
		data, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := api.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, tc.keys) {
			t.Errorf("%T has keys %v, want %v", tc.v, keys, tc.keys)
		}
	}
	var c localapi.Credential
	if err := api.UnmarshalAnswer([]byte(`{"name":"a","name":"b"}`), &c); err == nil {
		t.Error("a duplicate key decoded")
	}
}

func TestPrintingHidesSecrets(t *testing.T) {
	c := localapi.Credential{Name: "orders", Username: "eph_u", Password: "hunter2", DSN: "password='hunter2'"}
	a := localapi.AWSCredentials{AccessKeyID: "ASIAVISIBLE", SecretAccessKey: "hunter2", Token: "hunter2-token"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "c", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), buf.String(),
		fmt.Sprint(a), fmt.Sprintf("%+v", &a), fmt.Sprintf("%#v", a)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("a secret printed: %s", s)
		}
	}
}

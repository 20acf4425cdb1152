package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

const secret = "s3cret-Pa55word-never-print"

func testCredential() Credential {
	return Credential{
		Name: "orders", Username: "eph_readonly_abc", Password: secret, Host: "db.example", Port: 5432,
		DBName: "orders", SSLMode: "verify-full",
		DSN:       "postgres://eph_readonly_abc:" + secret + "@db.example:5432/orders?sslmode=verify-full",
		LeaseID:   "6f1c1f8e-0000-4000-8000-000000000001",
		ExpiresAt: time.Date(2026, 11, 17, 3, 0, 0, 0, time.UTC),
	}
}

func TestCredentialNeverPrintsSecrets(t *testing.T) {
	c := testCredential()
	s := Static{Credential: c}
	var outputs = map[string]string{
		"String":   c.String(),
		"GoString": c.GoString(),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3v"} {
		outputs["value "+verb] = fmt.Sprintf(verb, c)
		outputs["pointer "+verb] = fmt.Sprintf(verb, &c)
		outputs["static "+verb] = fmt.Sprintf(verb, s)
		outputs["in struct "+verb] = fmt.Sprintf(verb, struct{ C *Credential }{&c})
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "cred", c, "ptr", &c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "cred", c, "ptr", &c)
	outputs["slog"] = buf.String()
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)

	for name, out := range outputs {
		if strings.Contains(out, secret) {
			t.Errorf("%s shows the password: %s", name, out)
		}
		if !strings.Contains(out, "eph_readonly_abc") {
			t.Errorf("%s lost the username: %s", name, out)
		}
	}
	if !strings.Contains(outputs["value %+v"], "Password:[REDACTED]") {
		t.Errorf("%%+v = %s, want Password:[REDACTED]", outputs["value %+v"])
	}
	if !strings.HasPrefix(outputs["value %#v"], "client.Credential{") {
		t.Errorf("%%#v = %s", outputs["value %#v"])
	}
	if strings.Contains(outputs["slog"], "password") {
		t.Errorf("slog output has a password key: %s", outputs["slog"])
	}
}

func TestStatic(t *testing.T) {
	ctx := context.Background()
	s := Static{Credential: testCredential()}
	got, err := s.Credentials(ctx, "orders")
	if err != nil || got.Password != secret {
		t.Fatalf("Credentials = %v, %v", got, err)
	}
	got.Password = "changed" // a copy
	if again, _ := s.Refresh(ctx, "orders"); again.Password != secret {
		t.Error("Static handed out its own credential, not a copy")
	}
	_, err = s.Credentials(ctx, "billing")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("other name: err = %v, want ErrNotFound", err)
	}
	if _, err := (Static{}).Credentials(ctx, "anything"); err != nil {
		t.Errorf("unnamed Static: %v", err)
	}
}

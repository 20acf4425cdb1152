package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

func TestPrepare(t *testing.T) {
	dir := t.TempDir()
	task := filepath.Join(dir, "task")
	write(t, filepath.Join(task, "ephemera.yaml"), "host: \"${EPHEMERA_DB_HOST}\"\nport: ${EPHEMERA_DB_PORT}\n")
	write(t, filepath.Join(task, "policies", "a.cedar"), `principal.account == "${EPHEMERA_ACCOUNT_ID}"`)
	write(t, filepath.Join(task, "policies", "README"), "${NOT_RENDERED")
	env := map[string]string{
		"EPHEMERA_CONFIG_TEMPLATE":     filepath.Join(task, "ephemera.yaml"),
		"EPHEMERA_CONFIG":              filepath.Join(dir, "tmp", "ephemera.yaml"),
		"EPHEMERA_POLICY_TEMPLATE_DIR": filepath.Join(task, "policies"),
		"EPHEMERA_POLICY_DIR":          filepath.Join(dir, "tmp", "policies"),
		"EPHEMERA_DB_HOST":             "db.example.com",
		"EPHEMERA_DB_PORT":             "5432",
		"EPHEMERA_ACCOUNT_ID":          "123456789012",
		"EPHEMERA_EXEC":                "/opt/fn",
	}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	target, err := prepare(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if target != "/opt/fn" {
		t.Errorf("target %s", target)
	}
	if got := read(t, env["EPHEMERA_CONFIG"]); got != "host: \"db.example.com\"\nport: 5432\n" {
		t.Errorf("config %q", got)
	}
	if got := read(t, filepath.Join(env["EPHEMERA_POLICY_DIR"], "a.cedar")); got != `principal.account == "123456789012"` {
		t.Errorf("policy %q", got)
	}
	if _, err := os.Stat(filepath.Join(env["EPHEMERA_POLICY_DIR"], "README")); err == nil {
		t.Error("a non-.cedar file was rendered")
	}
	if fi, err := os.Stat(env["EPHEMERA_CONFIG"]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v %v, want 0600", fi.Mode(), err)
	}

	// A missing variable or a value that could break out of a string.
	delete(env, "EPHEMERA_DB_PORT")
	if _, err := prepare(getenv); err == nil || !strings.Contains(err.Error(), "EPHEMERA_DB_PORT is not set") {
		t.Errorf("missing variable: %v", err)
	}
	env["EPHEMERA_DB_PORT"] = "5432\nadmin: {auth: dsn}"
	if _, err := prepare(getenv); err == nil || strings.Contains(err.Error(), "admin") {
		t.Errorf("injected value: %v (the error must not repeat the value)", err)
	}
	delete(env, "EPHEMERA_CONFIG")
	if _, err := prepare(getenv); err == nil {
		t.Error("no EPHEMERA_CONFIG accepted")
	}
}

// TestExec runs the real binary: it renders, then becomes EPHEMERA_EXEC
// with the same environment.
func TestExec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("execve")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bootstrap")
	if err := gobuild.To(context.Background(), bin, ".", gobuild.Options{}); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ephemera.yaml"), "host: ${EPHEMERA_DB_HOST}\n")
	fn := filepath.Join(dir, "function")
	write(t, fn, "#!/bin/sh\necho \"args=$# config=$EPHEMERA_CONFIG\"\ncat \"$EPHEMERA_CONFIG\"\n")
	if err := os.Chmod(fn, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cfg := filepath.Join(dir, "tmp", "ephemera.yaml")
	cmd.Env = append(os.Environ(), "EPHEMERA_CONFIG_TEMPLATE="+filepath.Join(dir, "ephemera.yaml"),
		"EPHEMERA_CONFIG="+cfg, "EPHEMERA_DB_HOST=db.example.com", "EPHEMERA_EXEC=", "EPHEMERA_POLICY_TEMPLATE_DIR=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if want := "args=0 config=" + cfg + "\nhost: db.example.com\n"; string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}

	cmd = exec.Command(bin)
	cmd.Env = append(os.Environ(), "EPHEMERA_CONFIG_TEMPLATE="+filepath.Join(dir, "ephemera.yaml"), "EPHEMERA_CONFIG="+cfg, "EPHEMERA_DB_HOST=")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "rendercfg:") {
		t.Errorf("an unset variable did not fail: %v %s", err, out)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

package invoke

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBootstrapOf: a directory runs its executable bootstrap, an executable runs itself, and
// a command with arguments runs through a wrapper bootstrap that changes to the current
// directory, makes it LAMBDA_TASK_ROOT, and passes the arguments unchanged (spaces and
// quotes included). A directory without a bootstrap, a directory with arguments, and an
// unknown command are errors that say what is expected. The default function name is the
// base name, made a Lambda name.
func TestBootstrapOf(t *testing.T) {
	dir := t.TempDir()
	fnDir := filepath.Join(dir, "my fn.py")
	if err := os.Mkdir(fnDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bootstrapOf([]string{fnDir}, dir); err == nil || !strings.Contains(err.Error(), "has no executable bootstrap") {
		t.Errorf("directory without bootstrap: %v", err)
	}
	boot := filepath.Join(fnDir, "bootstrap")
	if err := os.WriteFile(boot, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, name, err := bootstrapOf([]string{fnDir}, dir); err != nil || got != boot || name != "my-fn-py" {
		t.Errorf("directory: %q %q %v", got, name, err)
	}
	if _, _, err := bootstrapOf([]string{fnDir, "--event", "e.json"}, dir); err == nil || !strings.Contains(err.Error(), "flags go before it") {
		t.Errorf("directory with arguments: %v", err)
	}
	if got, name, err := bootstrapOf([]string{boot}, dir); err != nil || got != boot || name != "bootstrap" {
		t.Errorf("executable: %q %q %v", got, name, err)
	}
	if _, _, err := bootstrapOf([]string{"no-such-command-ephemera"}, dir); err == nil || !strings.Contains(err.Error(), "neither a directory with a bootstrap nor a command") {
		t.Errorf("unknown command: %v", err)
	}
	if _, _, err := bootstrapOf(nil, dir); err == nil {
		t.Error("no command accepted")
	}

	wrapped, name, err := bootstrapOf([]string{"sh", "-c", `pwd; echo "$LAMBDA_TASK_ROOT"; printf '%s|' "$@"`, "x", "a b", "it's"}, filepath.Join(dir, "work"))
	if err != nil || name != "sh" {
		t.Fatalf("command: %q %v", name, err)
	}
	cmd := exec.Command(wrapped)
	cmd.Dir = t.TempDir() // the wrapper goes back to where ephemera local was started
	out, err := cmd.CombinedOutput()
	wd, _ := os.Getwd()
	if err != nil || string(out) != wd+"\n"+wd+"\na b|it's|" {
		t.Errorf("the wrapper printed %q (%v), want %q", out, err, wd+"\n"+wd+"\na b|it's|")
	}
}

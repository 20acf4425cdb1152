// Command rendercfg is the Lambda bootstrap of the broker and reaper
// functions of the SAM application (sam/template.yaml). It writes the
// broker's configuration from templates shipped in the function package,
// filling ${EPHEMERA_*} placeholders from the function's environment
// (package sam/internal/render), and then replaces itself (execve) with the
// real function binary, which finds the files through EPHEMERA_CONFIG and
// EPHEMERA_POLICY_DIR as usual.
//
//	EPHEMERA_CONFIG_TEMPLATE      YAML template, rendered to EPHEMERA_CONFIG
//	EPHEMERA_POLICY_TEMPLATE_DIR  directory of .cedar templates, rendered into
//	                              EPHEMERA_POLICY_DIR (optional: the reaper
//	                              needs no policies)
//	EPHEMERA_EXEC                 the function binary; default "function"
//	                              next to this executable
//
// Any failure is printed to stderr and exits 1, so Lambda reports an INIT
// error naming the problem.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ephemera-sh/ephemera/sam/internal/render"
)

func main() {
	target, err := prepare(os.LookupEnv)
	if err == nil {
		err = syscall.Exec(target, []string{target}, os.Environ())
		err = fmt.Errorf("exec %s: %w", target, err)
	}
	fmt.Fprintln(os.Stderr, "rendercfg:", err)
	os.Exit(1)
}

// prepare renders the files and returns the binary to run.
func prepare(getenv func(string) (string, bool)) (string, error) {
	get := func(k string) string { v, _ := getenv(k); return v }
	tmpl, cfg := get("EPHEMERA_CONFIG_TEMPLATE"), get("EPHEMERA_CONFIG")
	if tmpl == "" || cfg == "" {
		return "", errors.New("EPHEMERA_CONFIG_TEMPLATE and EPHEMERA_CONFIG are required")
	}
	if err := render.File(tmpl, cfg, getenv); err != nil {
		return "", err
	}
	if dir := get("EPHEMERA_POLICY_TEMPLATE_DIR"); dir != "" {
		out := get("EPHEMERA_POLICY_DIR")
		if out == "" {
			return "", errors.New("EPHEMERA_POLICY_DIR is required with EPHEMERA_POLICY_TEMPLATE_DIR")
		}
		if err := render.Dir(dir, out, getenv); err != nil {
			return "", err
		}
	}
	target := get("EPHEMERA_EXEC")
	if target == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		target = filepath.Join(filepath.Dir(self), "function")
	}
	return target, nil
}

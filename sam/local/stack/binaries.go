package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// ModulePath is the Go module Binaries builds from.
const ModulePath = "github.com/ephemera-sh/ephemera"

// Binaries builds the extension as dir/extensions/ephemera (the layer's
// /opt/extensions/ephemera) and the demo function as dir/function/bootstrap
// (a provided.al2023 custom runtime, -tags lambda.norpc), both with
// CGO_ENABLED=0 for the host's OS and architecture, and returns
// dir/extensions and the bootstrap's path. It runs "go build" in the
// module's root, found above the working directory or, failing that, next
// to this package's source; Go's build cache keeps repeated calls cheap.
func Binaries(ctx context.Context, dir string) (extensionsDir, bootstrap string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("stack: the go command is needed to build the binaries: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", fmt.Errorf("stack: %w", err)
	}
	extensionsDir = filepath.Join(dir, "extensions")
	bootstrap = filepath.Join(dir, "function", "bootstrap")
	builds := []struct {
		out  string
		args []string
	}{
		{filepath.Join(extensionsDir, "ephemera"), []string{"./extension"}},
		{bootstrap, []string{"-tags", "lambda.norpc", "./functions/demo"}},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		if err := os.MkdirAll(filepath.Dir(b.out), 0o755); err != nil {
			return "", "", fmt.Errorf("stack: %w", err)
		}
		wg.Go(func() {
			args := append([]string{"build", "-o", b.out}, b.args...)
			cmd := exec.CommandContext(ctx, goBin, args...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Errorf("stack: go %s: %w\n%s", strings.Join(args, " "), err, out.String())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", "", err
	}
	return extensionsDir, bootstrap, nil
}

// moduleRoot finds the directory of ModulePath's go.mod: above the working
// directory, else above this source file (when built without -trimpath).
func moduleRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if isModuleRoot(d) {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", fmt.Errorf("stack: cannot find the %s module (run from inside its source tree)", ModulePath)
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == ModulePath
		}
	}
	return false
}

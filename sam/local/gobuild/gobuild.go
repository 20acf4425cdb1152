// Package gobuild compiles the Go programs that tests and the local system
// run as processes of their own: the extension, the demo function, and the
// test functions and probes under testdata/. It is the one place that runs
// "go build" for them, so that they are all built the same way: static
// (CGO_ENABLED=0) for the host's OS and architecture, from the module's root.
//
// A test asks for a binary where it needs it; the first call in the process
// builds it and later calls (from any test, in any order) reuse it:
//
//	fn := gobuild.BinaryTB(t, "./testdata/fn", gobuild.Options{Tags: []string{"lambda.norpc"}})
//
// A TestMain that builds ahead, while something else starts, calls Binary
// and removes the process's binaries when the tests are done:
//
//	func run(m *testing.M) int {
//		defer gobuild.Clean()
//		...
//	}
//
// Binaries live in a directory of the process under os.TempDir(). One left
// behind by a process that died before Clean is removed by the first build
// of a later process.
package gobuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ModulePath is the module whose packages Binary builds.
const ModulePath = "github.com/ephemera-sh/ephemera"

// NoRPC is the build tag of a Lambda custom runtime built with aws-lambda-go
// (a provided.al2023 bootstrap, as the sandbox runs it).
const NoRPC = "lambda.norpc"

// Options say how to build one program. The zero value builds it without
// tags, named after its package.
type Options struct {
	// Tags are build tags, for example NoRPC.
	Tags []string
	// Name is the binary's file name; default the last element of the
	// package path. The binary is alone in its directory, so a Name of
	// "ephemera" makes that directory an extensions directory as Lambda
	// lays it out (/opt/extensions/ephemera).
	Name string
}

func (o Options) name(pkg string) string {
	if o.Name != "" {
		return o.Name
	}
	return filepath.Base(strings.TrimRight(pkg, "/"))
}

// entry is one cached build; done is closed when path or err is set.
type entry struct {
	done chan struct{}
	path string
	err  error
}

var cache struct {
	mu      sync.Mutex
	dir     string
	entries map[string]*entry
}

// Binary builds the main package pkg once per process and options, and
// returns the binary's path. pkg is an import path
// ("github.com/ephemera-sh/ephemera/extension") or a directory relative to
// the working directory ("./testdata/fn", as a test names a package next
// to it). Concurrent calls for the same binary wait for one build. A failed
// build is not cached: the next call tries again.
func Binary(ctx context.Context, pkg string, opts Options) (string, error) {
	target, err := resolve(pkg)
	if err != nil {
		return "", err
	}
	key := target + "\x00" + strings.Join(opts.Tags, ",") + "\x00" + opts.name(pkg)
	cache.mu.Lock()
	if e, ok := cache.entries[key]; ok {
		cache.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return "", fmt.Errorf("gobuild: %s: %w", pkg, ctx.Err())
		}
		if e.err == nil {
			return e.path, nil
		}
		return Binary(ctx, pkg, opts) // the failed build was dropped; try again
	}
	dir, err := cacheDir()
	if err != nil {
		cache.mu.Unlock()
		return "", err
	}
	e := &entry{done: make(chan struct{})}
	if cache.entries == nil {
		cache.entries = map[string]*entry{}
	}
	cache.entries[key] = e
	n := len(cache.entries)
	cache.mu.Unlock()

	e.path = filepath.Join(dir, strconv.Itoa(n), opts.name(pkg))
	if e.err = To(ctx, e.path, pkg, opts); e.err != nil {
		cache.mu.Lock()
		delete(cache.entries, key)
		cache.mu.Unlock()
	}
	close(e.done)
	return e.path, e.err
}

// TB is the part of testing.TB that BinaryTB uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// BinaryTB is Binary for tests: it fails tb (never skips) if the program
// does not build.
func BinaryTB(tb TB, pkg string, opts Options) string {
	tb.Helper()
	path, err := Binary(context.Background(), pkg, opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return path
}

// To builds the main package pkg (as Binary names it) into the file out,
// without caching: for a caller that keeps the binary in a directory of its
// own. It runs "go build" in the module's root with CGO_ENABLED=0.
func To(ctx context.Context, out, pkg string, opts Options) error {
	target, err := resolve(pkg)
	if err != nil {
		return err
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("gobuild: the go command is needed to build %s: %w", pkg, err)
	}
	if out, err = filepath.Abs(out); err != nil {
		return fmt.Errorf("gobuild: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("gobuild: %w", err)
	}
	args := []string{"build", "-o", out}
	if len(opts.Tags) > 0 {
		args = append(args, "-tags", strings.Join(opts.Tags, ","))
	}
	args = append(args, target)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var msg bytes.Buffer
	cmd.Stdout, cmd.Stderr = &msg, &msg
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gobuild: go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(msg.String()))
	}
	return nil
}

// Clean removes the binaries Binary built in this process; later calls
// build again. It is safe to call when nothing was built.
func Clean() error {
	cache.mu.Lock()
	defer cache.mu.Unlock()
	dir := cache.dir
	cache.dir, cache.entries = "", nil
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("gobuild: %w", err)
	}
	return nil
}

// dirPrefix starts the name of every process's binary directory; the
// process id follows.
const dirPrefix = "ephemera-bin-"

// cacheDir returns the process's binary directory, creating it (and
// removing those of dead processes) on first use. cache.mu is held.
func cacheDir() (string, error) {
	if cache.dir != "" {
		return cache.dir, nil
	}
	removeOrphans()
	dir, err := os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return "", fmt.Errorf("gobuild: %w", err)
	}
	cache.dir = dir
	return dir, nil
}

// removeOrphans removes the binary directories of processes that no longer
// exist.
func removeOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), dirPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// resolve turns a relative package directory into an absolute one (go
// build runs in the module's root); an import path stays as it is.
func resolve(pkg string) (string, error) {
	if pkg == "." || pkg == ".." || strings.HasPrefix(pkg, "./") || strings.HasPrefix(pkg, "../") {
		abs, err := filepath.Abs(pkg)
		if err != nil {
			return "", fmt.Errorf("gobuild: %w", err)
		}
		return abs, nil
	}
	if pkg == "" {
		return "", errors.New("gobuild: no package to build")
	}
	return pkg, nil
}

// ModuleRoot finds the directory of ModulePath's go.mod: above the working
// directory, else above this source file (when built without -trimpath).
func ModuleRoot() (string, error) {
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
	return "", fmt.Errorf("gobuild: cannot find the %s module (run from inside its source tree)", ModulePath)
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == ModulePath
		}
	}
	return false
}

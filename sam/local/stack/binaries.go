package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

// ModulePath is the Go module the binaries are built from.
const ModulePath = gobuild.ModulePath

// The programs a sandbox of the local system runs, as gobuild builds them:
// the extension named as the layer installs it (/opt/extensions/ephemera),
// and the demo function as a provided.al2023 custom runtime.
var (
	extensionPkg  = ModulePath + "/extension"
	extensionOpts = gobuild.Options{Name: "ephemera"}
	demoPkg       = ModulePath + "/functions/demo"
	demoOpts      = gobuild.Options{Tags: []string{gobuild.NoRPC}, Name: "bootstrap"}
)

// Extension builds the extension once per process (gobuild.Binary) and
// returns the extensions directory that holds it as "ephemera", for
// lambdaemu.Config.ExtensionsDir. A TestMain that uses it calls
// gobuild.Clean when its tests are done.
func Extension(ctx context.Context) (extensionsDir string, err error) {
	bin, err := gobuild.Binary(ctx, extensionPkg, extensionOpts)
	if err != nil {
		return "", err
	}
	return filepath.Dir(bin), nil
}

// DemoFunction builds functions/demo once per process (gobuild.Binary) and
// returns its bootstrap, for lambdaemu.Config.Bootstrap.
func DemoFunction(ctx context.Context) (bootstrap string, err error) {
	return gobuild.Binary(ctx, demoPkg, demoOpts)
}

// Binaries builds the extension as dir/extensions/ephemera and the demo
// function as dir/function/bootstrap, both at once, and returns
// dir/extensions and the bootstrap's path: for a caller that keeps its
// binaries in a directory of its own (the demo). Tests use Extension and
// DemoFunction, which build once per process.
func Binaries(ctx context.Context, dir string) (extensionsDir, bootstrap string, err error) {
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", fmt.Errorf("stack: %w", err)
	}
	extensionsDir = filepath.Join(dir, "extensions")
	bootstrap = filepath.Join(dir, "function", "bootstrap")
	var extErr, demoErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		extErr = gobuild.To(ctx, filepath.Join(extensionsDir, "ephemera"), extensionPkg, extensionOpts)
	})
	wg.Go(func() { demoErr = gobuild.To(ctx, bootstrap, demoPkg, demoOpts) })
	wg.Wait()
	if err := errors.Join(extErr, demoErr); err != nil {
		return "", "", err
	}
	return extensionsDir, bootstrap, nil
}

// Command mklayer builds the ephemera Lambda layer zips (package layer).
// Run it from the module root:
//
//	go run ./layer/cmd/mklayer -out layer/dist
//
// writes layer/dist/ephemera-x86_64.zip and layer/dist/ephemera-arm64.zip,
// each holding exactly extensions/ and extensions/ephemera (mode 0755).
// SOURCE_DATE_EPOCH, when set, is the entries' modification time (default
// 1980-01-01). With -tree DIR it writes the unzipped layer
// (DIR/extensions/ephemera) for one architecture instead, which is what a
// `sam build` makefile target puts in $(ARTIFACTS_DIR).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/ephemera-sh/ephemera/layer"
)

func main() {
	out := flag.String("out", "layer/dist", "directory for the zips")
	arches := flag.String("arch", "x86_64,arm64", "comma-separated architectures (x86_64, arm64)")
	pkg := flag.String("pkg", layer.DefaultPackage, "main package of the extension")
	tags := flag.String("tags", "", "build tags")
	tree := flag.String("tree", "", "write DIR/extensions/ephemera (one -arch) instead of zips")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./layer/cmd/mklayer [-out DIR] [-arch x86_64,arm64] [-tree DIR]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, *arches, *pkg, *tags, *tree); err != nil {
		fmt.Fprintln(os.Stderr, "mklayer:", err)
		os.Exit(1)
	}
}

func run(out, arches, pkg, tags, tree string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var list []layer.Arch
	for _, name := range strings.Split(arches, ",") {
		a, err := layer.ArchByName(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		list = append(list, a)
	}
	opts := layer.BuildOptions{Package: pkg, Tags: tags}
	if tree != "" {
		if len(list) != 1 {
			return fmt.Errorf("-tree needs exactly one -arch, got %q", arches)
		}
		path, err := layer.BuildTree(ctx, opts, list[0], tree)
		if err != nil {
			return err
		}
		fmt.Printf("%s (%s)\n", path, list[0].Name)
		return nil
	}
	mtime, err := layer.ModTime(os.Getenv)
	if err != nil {
		return err
	}
	for _, a := range list {
		path, err := layer.BuildZip(ctx, opts, a, out, mtime)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Printf("%s  %d bytes  sha256:%x\n", path, len(data), sha256.Sum256(data))
	}
	return nil
}

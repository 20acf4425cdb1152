package gobuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = Clean()
	os.Exit(code)
}

func output(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestBinaryBuildsOnceWithTagsAndName: a relative package builds with its
// tags under the chosen name, alone in its directory; asking again returns
// the same file without building; other tags make another binary.
func TestBinaryBuildsOnceWithTagsAndName(t *testing.T) {
	tagged := BinaryTB(t, "./testdata/hello", Options{Tags: []string{"gobuild_test_tag"}, Name: "bootstrap"})
	if filepath.Base(tagged) != "bootstrap" {
		t.Fatalf("binary %s, want one named bootstrap", tagged)
	}
	if got := output(t, tagged); got != "hello with the tag" {
		t.Fatalf("tagged binary says %q", got)
	}
	entries, err := os.ReadDir(filepath.Dir(tagged))
	if err != nil || len(entries) != 1 {
		t.Fatalf("the binary's directory holds %d entries (%v), want only the binary", len(entries), err)
	}
	st, err := os.Stat(tagged)
	if err != nil {
		t.Fatal(err)
	}
	again := BinaryTB(t, "./testdata/hello", Options{Tags: []string{"gobuild_test_tag"}, Name: "bootstrap"})
	st2, err := os.Stat(again)
	if err != nil || again != tagged || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("second call: %s (%v), want the cached %s untouched", again, err, tagged)
	}
	plain := BinaryTB(t, "./testdata/hello", Options{})
	if plain == tagged || filepath.Base(plain) != "hello" || output(t, plain) != "hello without the tag" {
		t.Fatalf("untagged build %s says %q", plain, output(t, plain))
	}
}

// TestBinaryFailureIsReportedAndNotCached: a package that does not exist
// fails with go's message, every time.
func TestBinaryFailureIsReportedAndNotCached(t *testing.T) {
	for range 2 {
		_, err := Binary(context.Background(), "./testdata/missing", Options{})
		if err == nil || !strings.Contains(err.Error(), "gobuild: go build") || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("err = %v", err)
		}
	}
}

// TestCleanRemovesAndRebuilds: Clean removes the process's binaries, and
// the next call builds again.
func TestCleanRemovesAndRebuilds(t *testing.T) {
	bin := BinaryTB(t, "./testdata/hello", Options{Name: "clean-test"})
	if err := Clean(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Fatalf("%s still there after Clean: %v", bin, err)
	}
	bin = BinaryTB(t, "./testdata/hello", Options{Name: "clean-test"})
	if output(t, bin) != "hello without the tag" {
		t.Fatal("rebuilt binary does not run")
	}
}

// TestOrphansOfDeadProcessesAreRemoved: the first build of a process
// removes the directory a dead process left, and keeps a live one's.
func TestOrphansOfDeadProcessesAreRemoved(t *testing.T) {
	if err := Clean(); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	orphan, err := os.MkdirTemp("", dirPrefix+strconv.Itoa(dead.Process.Pid)+"-*")
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getppid())+"-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(orphan); os.RemoveAll(live) })
	BinaryTB(t, "./testdata/hello", Options{Name: "orphan-test"})
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the dead process's directory is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live process's directory was removed: %v", err)
	}
}

// TestModuleRoot: the root holds go.mod of ModulePath.
func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if !isModuleRoot(root) || !strings.HasSuffix(filepath.ToSlash(mustRel(t, root)), "sam/local/gobuild") {
		t.Fatalf("ModuleRoot = %s", root)
	}
}

func mustRel(t *testing.T, root string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(root, wd)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

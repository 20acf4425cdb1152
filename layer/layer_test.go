package layer_test

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/layer"
)

// MaxZipSize is the size budget of one layer zip.
const MaxZipSize = 6 << 20

// moduleRoot is where `go build` runs: the tests run in layer/.
const moduleRoot = ".."

// built caches the zips of one package, built twice (for the reproducibility
// check) into directories of their own.
type built struct {
	once   sync.Once
	dirs   [2]string
	err    error
	during time.Duration
}

var (
	extension = &built{} // ./extension: the real layer
	hello     = &built{} // ./layer/testdata/hello: tests the zipper on its own
	scratch   string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ephemera-layer-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// zips builds pkg for every architecture, twice, exactly as `make layer`
// does, and returns the two output directories.
func (b *built) zips(t *testing.T, pkg string) [2]string {
	t.Helper()
	b.once.Do(func() {
		start := time.Now()
		for i := range b.dirs {
			b.dirs[i] = filepath.Join(scratch, fmt.Sprintf("%s-%d", filepath.Base(pkg), i))
			for _, a := range layer.Arches {
				var stderr bytes.Buffer
				opts := layer.BuildOptions{Dir: moduleRoot, Package: pkg, Stderr: &stderr}
				if _, err := layer.BuildZip(context.Background(), opts, a, b.dirs[i], layer.Epoch); err != nil {
					b.err = fmt.Errorf("building the %s layer from %s failed: %v\n%s", a.Name, pkg, err, stderr.String())
					return
				}
			}
		}
		b.during = time.Since(start)
	})
	if b.err != nil {
		if pkg == layer.DefaultPackage {
			t.Fatalf("%v\n(the layer is `go build %s`: the extension must build as a static linux binary)", b.err, pkg)
		}
		t.Fatal(b.err)
	}
	return b.dirs
}

func TestExtensionLayer(t *testing.T) {
	dirs := extension.zips(t, layer.DefaultPackage)
	t.Logf("built 2×%d zips in %s", len(layer.Arches), extension.during.Round(time.Millisecond))
	checkZips(t, dirs)
}

// TestZipperOnTinyProgram runs every check on a trivial program, so a
// zipper regression shows up apart from the extension's own problems.
func TestZipperOnTinyProgram(t *testing.T) {
	checkZips(t, hello.zips(t, "./layer/testdata/hello"))
}

func checkZips(t *testing.T, dirs [2]string) {
	for _, a := range layer.Arches {
		t.Run(a.Name, func(t *testing.T) {
			path := filepath.Join(dirs[0], a.ZipName())
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Run("entries", func(t *testing.T) { checkEntries(t, data) })
			t.Run("elf", func(t *testing.T) { checkELF(t, data, a) })
			t.Run("budget", func(t *testing.T) {
				t.Logf("%s: %d bytes (%.2f MiB of %d MiB)", a.ZipName(), len(data), float64(len(data))/(1<<20), MaxZipSize>>20)
				if len(data) > MaxZipSize {
					t.Errorf("%s is %d bytes, over the %d-byte (6 MiB) budget", a.ZipName(), len(data), MaxZipSize)
				}
			})
			t.Run("reproducible", func(t *testing.T) {
				again, err := os.ReadFile(filepath.Join(dirs[1], a.ZipName()))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(data, again) {
					// The first part of a Go build ID hashes the main package's
					// inputs: if it differs, the sources changed between builds.
					id1, id2 := goBuildID(readEntry(t, data, layer.BinaryEntry)), goBuildID(readEntry(t, again, layer.BinaryEntry))
					in1, _, _ := strings.Cut(id1, "/")
					in2, _, _ := strings.Cut(id2, "/")
					if in1 != in2 {
						t.Errorf("two builds of %s differ, and so do their inputs (Go build IDs %q, %q): were sources edited during the test?", a.ZipName(), id1, id2)
					} else {
						t.Errorf("two builds of %s from the same inputs differ (%d vs %d bytes; Go build IDs %q, %q)", a.ZipName(), len(data), len(again), id1, id2)
					}
				}
			})
		})
	}
}

func checkEntries(t *testing.T, data []byte) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Comment != "" {
		t.Errorf("zip comment %q, want none", zr.Comment)
	}
	want := []struct {
		name string
		mode fs.FileMode
	}{{layer.DirEntry, fs.ModeDir | 0o755}, {layer.BinaryEntry, 0o755}}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if len(zr.File) != len(want) {
		t.Fatalf("entries %q, want exactly %q and %q", names, want[0].name, want[1].name)
	}
	for i, f := range zr.File {
		if f.Name != want[i].name {
			t.Errorf("entry %d is %q, want %q (entries %q)", i, f.Name, want[i].name, names)
		}
		if f.Mode() != want[i].mode {
			t.Errorf("%s: mode %v, want %v", f.Name, f.Mode(), want[i].mode)
		}
		if f.CreatorVersion>>8 != 3 {
			t.Errorf("%s: creator system %d, want 3 (Unix, so the mode is honoured)", f.Name, f.CreatorVersion>>8)
		}
		if len(f.Extra) != 0 {
			t.Errorf("%s: %d bytes of extra fields, want none", f.Name, len(f.Extra))
		}
		if f.Flags&0x8 != 0 {
			t.Errorf("%s: has a data descriptor", f.Name)
		}
		if !f.Modified.Equal(layer.Epoch) {
			t.Errorf("%s: modified %s, want %s", f.Name, f.Modified, layer.Epoch)
		}
	}
	if f := zr.File[1]; f.UncompressedSize64 == 0 {
		t.Errorf("%s is empty", f.Name)
	}
}

func checkELF(t *testing.T, data []byte, a layer.Arch) {
	t.Helper()
	bin := readEntry(t, data, layer.BinaryEntry)
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s is not ELF: %v", layer.BinaryEntry, err)
	}
	defer f.Close()
	if f.Machine != a.Machine {
		t.Errorf("ELF machine %v in the %s zip, want %v", f.Machine, a.Name, a.Machine)
	}
	if f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		t.Errorf("ELF %v %v, want ELFCLASS64 ET_EXEC", f.Class, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: not statically linked", p.Type)
		}
	}
	if f.Section(".dynamic") != nil || f.Section(".interp") != nil {
		t.Error("has a .dynamic or .interp section: not statically linked")
	}
	// With no dynamic section there can be no DT_NEEDED; ask anyway, in
	// case a future linker emits one elsewhere.
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("DT_NEEDED %q: not statically linked", libs)
	}
	if err := layer.CheckBinary(bin, a); err != nil {
		t.Error(err)
	}
}

// goBuildID returns the Go build ID note of an ELF binary ("" if none).
func goBuildID(bin []byte) string {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return ""
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return ""
	}
	note, err := s.Data()
	if err != nil || len(note) < 16 {
		return ""
	}
	// namesz, descsz, type, then "Go\x00\x00" and the ID.
	return string(bytes.TrimRight(note[16:], "\x00"))
}

func readEntry(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := zr.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc) // also verifies the CRC
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckBinaryRefusesTheWrongArchitecture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(hello.zips(t, "./layer/testdata/hello")[0], layer.Arches[0].ZipName()))
	if err != nil {
		t.Fatal(err)
	}
	bin := readEntry(t, data, layer.BinaryEntry)
	if err := layer.CheckBinary(bin, layer.Arches[1]); err == nil {
		t.Errorf("an %s binary passed as %s", layer.Arches[0].Name, layer.Arches[1].Name)
	}
	if err := layer.CheckBinary([]byte("#!/bin/sh\n"), layer.Arches[0]); err == nil {
		t.Error("a shell script passed as an ELF binary")
	}
}

func TestWriteZipDeterministic(t *testing.T) {
	bin := bytes.Repeat([]byte("ephemera "), 1000)
	zipOf := func(b []byte, mtime time.Time) []byte {
		var buf bytes.Buffer
		if err := layer.WriteZip(&buf, b, mtime); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	a, b := zipOf(bin, layer.Epoch), zipOf(bin, layer.Epoch)
	if !bytes.Equal(a, b) {
		t.Error("the same input gave different zips")
	}
	checkEntries(t, a)
	if got := readEntry(t, a, layer.BinaryEntry); !bytes.Equal(got, bin) {
		t.Error("the binary does not round-trip")
	}
	if bytes.Equal(a, zipOf(bin, time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC))) {
		t.Error("the modification time is not in the zip")
	}
	var buf bytes.Buffer
	if err := layer.WriteZip(&buf, bin, time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Error("a time before 1980 was accepted")
	}
}

func TestModTime(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return v
			}
			return ""
		}
	}
	for _, c := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", layer.Epoch, true},
		{"0", layer.Epoch, true}, // before 1980: clamped
		{"1795334400", time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC), true},
		{"yesterday", time.Time{}, false},
		{"-5", time.Time{}, false},
		{"9999999999", time.Time{}, false}, // 2286: past what a zip can hold
	} {
		got, err := layer.ModTime(env(c.in))
		if (err == nil) != c.ok || !got.Equal(c.want) {
			t.Errorf("SOURCE_DATE_EPOCH=%q: %v, %v; want %v (ok=%v)", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestBuildTree(t *testing.T) {
	dir := t.TempDir()
	path, err := layer.BuildTree(context.Background(), layer.BuildOptions{Dir: moduleRoot, Package: "./layer/testdata/hello"}, layer.Arches[1], dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "extensions", "ephemera"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode())
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := layer.CheckBinary(bin, layer.Arches[1]); err != nil {
		t.Error(err)
	}
}

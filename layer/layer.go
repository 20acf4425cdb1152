// Package layer builds the ephemera Lambda layer: the extension
// (./extension), cross-compiled for one Lambda architecture, in a
// reproducible zip that holds exactly two entries:
//
//	extensions/          directory, mode 0755
//	extensions/ephemera  the static extension binary, mode 0755
//
// Lambda unpacks a layer into /opt and starts every executable in
// /opt/extensions, so the binary runs as an external extension.
//
// The zip is reproducible: entries in a fixed order, a fixed modification
// time (SOURCE_DATE_EPOCH when set, else 1980-01-01 00:00:00 UTC), no extra
// fields, no data descriptors, no comment, deflate at a fixed level, and a
// binary built with -trimpath -buildvcs=false -ldflags='-s -w' and
// CGO_ENABLED=0. The same sources and Go toolchain give the same bytes.
//
// cmd/mklayer is the command-line front end (`make layer`).
package layer

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Entry names, in the order they appear in the zip.
const (
	DirEntry    = "extensions/"
	BinaryEntry = "extensions/ephemera"
	// DefaultPackage is the extension's main package, relative to the module root.
	DefaultPackage = "./extension"
)

// Arch is one Lambda instruction set architecture.
type Arch struct {
	// Name is Lambda's name for it ("x86_64", "arm64"), used in zip names
	// and in --compatible-architectures.
	Name string
	// GOARCH is Go's name for it.
	GOARCH string
	// Machine is the ELF e_machine a binary for it must carry.
	Machine elf.Machine
}

// Arches are the architectures Lambda runs, in build order.
var Arches = []Arch{
	{Name: "x86_64", GOARCH: "amd64", Machine: elf.EM_X86_64},
	{Name: "arm64", GOARCH: "arm64", Machine: elf.EM_AARCH64},
}

// ArchByName returns the Arch called name (Lambda's or Go's name).
func ArchByName(name string) (Arch, error) {
	for _, a := range Arches {
		if name == a.Name || name == a.GOARCH {
			return a, nil
		}
	}
	return Arch{}, fmt.Errorf("layer: unknown architecture %q (want x86_64 or arm64)", name)
}

// ZipName is the file name of a's layer zip, e.g. "ephemera-arm64.zip".
func (a Arch) ZipName() string { return "ephemera-" + a.Name + ".zip" }

// Epoch is the modification time of every entry when SOURCE_DATE_EPOCH is
// unset: the earliest time a zip (MS-DOS) timestamp can hold.
var Epoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// ModTime returns the entries' modification time: SOURCE_DATE_EPOCH (Unix
// seconds, https://reproducible-builds.org/specs/source-date-epoch/) when
// getenv returns it non-empty, else Epoch. Times before 1980 become Epoch.
func ModTime(getenv func(string) string) (time.Time, error) {
	s := strings.TrimSpace(getenv("SOURCE_DATE_EPOCH"))
	if s == "" {
		return Epoch, nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("layer: SOURCE_DATE_EPOCH=%q is not a non-negative integer", s)
	}
	t := time.Unix(sec, 0).UTC()
	if t.Before(Epoch) {
		t = Epoch
	}
	if t.Year() > 2107 {
		return time.Time{}, fmt.Errorf("layer: SOURCE_DATE_EPOCH=%q is past 2107, which a zip timestamp cannot hold", s)
	}
	return t, nil
}

// BuildOptions says how to build the binary.
type BuildOptions struct {
	// Dir is the working directory of `go build` (inside the module);
	// "" is the current directory.
	Dir string
	// Package is the main package to build; "" means DefaultPackage.
	Package string
	// Tags are build tags (comma-separated), if any.
	Tags string
	// Go is the go command; "" means "go".
	Go string
	// Stderr receives the compiler's output; nil means os.Stderr.
	Stderr io.Writer
}

// BuildBinary cross-compiles the main package for linux/a into out: static
// (CGO_ENABLED=0), stripped, without file system paths or VCS stamps.
func BuildBinary(ctx context.Context, o BuildOptions, a Arch, out string) error {
	pkg := o.Package
	if pkg == "" {
		pkg = DefaultPackage
	}
	goCmd := o.Go
	if goCmd == "" {
		goCmd = "go"
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w"}
	if o.Tags != "" {
		args = append(args, "-tags", o.Tags)
	}
	args = append(args, "-o", out, pkg)
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.GOARCH)
	var msg bytes.Buffer
	cmd.Stdout = &msg
	cmd.Stderr = &msg
	err := cmd.Run()
	if msg.Len() > 0 {
		w := o.Stderr
		if w == nil {
			w = os.Stderr
		}
		_, _ = w.Write(msg.Bytes())
	}
	if err != nil {
		return fmt.Errorf("layer: go build %s for linux/%s: %w\n%s", pkg, a.GOARCH, err, strings.TrimSpace(msg.String()))
	}
	return nil
}

// CheckBinary verifies that bin is a static linux ELF executable for a: the
// right e_machine (a layer must never ship amd64 code as arm64 or the other
// way round), no program interpreter and no dynamic section.
func CheckBinary(bin []byte, a Arch) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("layer: not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("layer: ELF class %v, want ELFCLASS64", f.Class)
	}
	if f.Machine != a.Machine {
		return fmt.Errorf("layer: ELF machine %v, want %v for %s", f.Machine, a.Machine, a.Name)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("layer: ELF type %v, want ET_EXEC (a static executable)", f.Type)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return errors.New("layer: binary has a PT_INTERP program header (dynamically linked)")
		case elf.PT_DYNAMIC:
			return errors.New("layer: binary has a PT_DYNAMIC program header (dynamically linked)")
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		return errors.New("layer: binary has a .dynamic section (dynamically linked)")
	}
	if s := f.Section(".interp"); s != nil {
		return errors.New("layer: binary has an .interp section (dynamically linked)")
	}
	return nil
}

// WriteZip writes the layer zip holding binary as BinaryEntry, with every
// entry's modification time mtime (see ModTime). The output depends only on
// its arguments.
func WriteZip(w io.Writer, binary []byte, mtime time.Time) error {
	date, clock, err := msDosTime(mtime)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(w)

	dir := &zip.FileHeader{Name: DirEntry, Method: zip.Store}
	fixHeader(dir, fs.ModeDir|0o755, date, clock)
	if _, err := zw.CreateRaw(dir); err != nil {
		return fmt.Errorf("layer: zip: %w", err)
	}

	// Compress here and write raw, so the sizes and CRC sit in the local
	// header and no data descriptor follows the data.
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, flate.BestCompression)
	if err != nil {
		return err
	}
	if _, err := fw.Write(binary); err != nil {
		return err
	}
	if err := fw.Close(); err != nil {
		return err
	}
	file := &zip.FileHeader{
		Name:               BinaryEntry,
		Method:             zip.Deflate,
		CRC32:              crc32.ChecksumIEEE(binary),
		CompressedSize64:   uint64(comp.Len()),
		UncompressedSize64: uint64(len(binary)),
	}
	fixHeader(file, 0o755, date, clock)
	dst, err := zw.CreateRaw(file)
	if err != nil {
		return fmt.Errorf("layer: zip: %w", err)
	}
	if _, err := dst.Write(comp.Bytes()); err != nil {
		return fmt.Errorf("layer: zip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("layer: zip: %w", err)
	}
	return nil
}

// fixHeader sets everything of h that CreateRaw leaves alone. The MS-DOS
// date and time are set directly: FileHeader.Modified would add an
// "extended timestamp" extra field.
func fixHeader(h *zip.FileHeader, mode fs.FileMode, date, clock uint16) {
	h.SetMode(mode)                                 // Unix creator, st_mode in the external attributes
	h.CreatorVersion = h.CreatorVersion&0xff00 | 20 // made by: Unix, spec 2.0
	h.ReaderVersion = 20                            // needed to extract: 2.0 (deflate, directories)
	h.ModifiedDate, h.ModifiedTime = date, clock    // deprecated fields, on purpose (see above)
	h.Flags = 0                                     // no data descriptor, ASCII names
	h.Extra, h.Comment = nil, ""
}

// msDosTime encodes t (in UTC) as an MS-DOS date and time (2 s resolution).
func msDosTime(t time.Time) (date, clock uint16, err error) {
	t = t.UTC()
	if t.Year() < 1980 || t.Year() > 2107 {
		return 0, 0, fmt.Errorf("layer: %s cannot be stored in a zip timestamp (1980-2107)", t.Format(time.RFC3339))
	}
	date = uint16(t.Day() + int(t.Month())<<5 + (t.Year()-1980)<<9)
	clock = uint16(t.Second()/2 + t.Minute()<<5 + t.Hour()<<11)
	return date, clock, nil
}

// BuildZip builds the binary for a (see BuildBinary), checks it (see
// CheckBinary) and writes outDir/a.ZipName() atomically. It returns the
// zip's path.
func BuildZip(ctx context.Context, o BuildOptions, a Arch, outDir string, mtime time.Time) (string, error) {
	bin, err := buildChecked(ctx, o, a)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := WriteZip(&buf, bin, mtime); err != nil {
		return "", err
	}
	path := filepath.Join(outDir, a.ZipName())
	if err := writeFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// BuildTree builds the binary for a and writes it to
// dir/extensions/ephemera (mode 0755): the unzipped layer, as `sam build`
// wants it in a layer's artifacts directory.
func BuildTree(ctx context.Context, o BuildOptions, a Arch, dir string) (string, error) {
	bin, err := buildChecked(ctx, o, a)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.FromSlash(BinaryEntry))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, bin, 0o755); err != nil {
		return "", err
	}
	return path, nil
}

func buildChecked(ctx context.Context, o BuildOptions, a Arch) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "ephemera-layer-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "ephemera")
	if err := BuildBinary(ctx, o, a, out); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if err := CheckBinary(bin, a); err != nil {
		return nil, err
	}
	return bin, nil
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

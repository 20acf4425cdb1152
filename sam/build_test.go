package sam_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ephemera-sh/ephemera/layer"
)

// TestMakeTargets runs each build-<LogicalId> target the way `sam build`
// does: `make --makefile <CodeUri>/Makefile build-<LogicalId>` from an
// unrelated working directory (SAM's scratch copy), with ARTIFACTS_DIR set,
// and checks the package it leaves there.
func TestMakeTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles every function (-short)")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	arm64, _ := layer.ArchByName("arm64")
	x86, _ := layer.ArchByName("x86_64")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type file struct {
		name string
		arch *layer.Arch // an executable for arch; nil: a regular file
	}
	for _, c := range []struct {
		id, dir string
		files   []file
	}{
		{"BrokerFunction", "broker", []file{{"bootstrap", &arm64}, {"function", &arm64}, {"ephemera.yaml", nil}, {"policies/demo.cedar", nil}, {"rds-ca.pem", nil}}},
		{"ReaperFunction", "reaper", []file{{"bootstrap", &arm64}, {"function", &arm64}, {"ephemera.yaml", nil}, {"rds-ca.pem", nil}}},
		{"DemoFunction", "demo", []file{{"bootstrap", &arm64}, {"rds-ca.pem", nil}}},
		{"EphemeraLayerArm64", "layer", []file{{"extensions/ephemera", &arm64}}},
		{"EphemeraLayerX8664", "layer", []file{{"extensions/ephemera", &x86}}},
	} {
		t.Run(c.id, func(t *testing.T) {
			t.Parallel()
			makefile, err := filepath.Abs(filepath.Join(c.dir, "Makefile"))
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			cmd := exec.Command("make", "--makefile", makefile, "build-"+c.id)
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "ARTIFACTS_DIR="+out, "RDS_CA_FILE="+ca)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make build-%s: %v\n%s", c.id, err, msg)
			}
			var got []string
			filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(out, p)
					got = append(got, filepath.ToSlash(rel))
				}
				return err
			})
			if len(got) != len(c.files) {
				t.Errorf("package holds %q, want exactly %d files", got, len(c.files))
			}
			for _, f := range c.files {
				p := filepath.Join(out, filepath.FromSlash(f.name))
				fi, err := os.Stat(p)
				if err != nil {
					t.Error(err)
					continue
				}
				if f.arch == nil {
					continue
				}
				if fi.Mode().Perm()&0o111 == 0 {
					t.Errorf("%s is not executable (%v)", f.name, fi.Mode())
				}
				bin, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := layer.CheckBinary(bin, *f.arch); err != nil {
					t.Errorf("%s: %v", f.name, err)
				}
				if ef, err := elf.Open(p); err == nil {
					if ef.Machine != f.arch.Machine {
						t.Errorf("%s: %v", f.name, ef.Machine)
					}
					ef.Close()
				}
			}
		})
	}
}

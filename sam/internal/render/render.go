// Package render fills ${EPHEMERA_*} placeholders in the broker's
// configuration templates (sam/broker/ephemera.yaml, sam/broker/policies)
// from the environment that sam/template.yaml sets, so one stack's
// parameters configure the broker: the broker itself reads its YAML and
// Cedar files verbatim and expands no variables.
//
// Only ${NAME} with NAME matching EPHEMERA_[A-Z0-9_]+ is a placeholder; any
// other "${" is an error, as is an unset or empty variable. Values are
// restricted to [A-Za-z0-9._:/@+=,-], so a value can neither break out of a
// quoted YAML or Cedar string nor add YAML structure, and no secret-looking
// variable (AWS_*) can ever be copied into a file.
package render

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	placeholderRE = regexp.MustCompile(`\$\{([^}]*)\}`)
	nameRE        = regexp.MustCompile(`^EPHEMERA_[A-Z0-9_]+$`)
	valueRE       = regexp.MustCompile(`^[A-Za-z0-9._:/@+=,-]+$`)
)

// Expand replaces every ${EPHEMERA_NAME} in text with getenv's value. It
// reports every problem at once.
func Expand(text string, getenv func(string) (string, bool)) (string, error) {
	var errs []error
	seen := map[string]bool{}
	out := placeholderRE.ReplaceAllStringFunc(text, func(m string) string {
		name := m[2 : len(m)-1]
		if !nameRE.MatchString(name) {
			if !seen[name] {
				errs = append(errs, fmt.Errorf("%s: not a placeholder (only ${EPHEMERA_*} is)", m))
			}
			seen[name] = true
			return m
		}
		v, ok := getenv(name)
		switch {
		case !ok || v == "":
			if !seen[name] {
				errs = append(errs, fmt.Errorf("%s: %s is not set", m, name))
			}
		case !valueRE.MatchString(v):
			if !seen[name] {
				// Never repeat the value: it could be anything.
				errs = append(errs, fmt.Errorf("%s: the value of %s has characters outside [A-Za-z0-9._:/@+=,-]", m, name))
			}
		default:
			return v
		}
		seen[name] = true
		return m
	})
	// Values cannot contain "${", so one left over is unterminated.
	if len(errs) == 0 && strings.Contains(out, "${") {
		errs = append(errs, errors.New("unterminated ${"))
	}
	return out, errors.Join(errs...)
}

// File expands the template file src into dst (mode 0600, parent
// directories 0700).
func File(src, dst string, getenv func(string) (string, bool)) error {
	text, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	out, err := Expand(string(text), getenv)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.WriteFile(dst, []byte(out), 0o600)
}

// Dir expands every *.cedar file of srcDir (not recursive) into dstDir.
// Other files are ignored, as the broker's policy loader ignores them.
func Dir(srcDir, dstDir string, getenv func(string) (string, bool)) error {
	entries, err := os.ReadDir(srcDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dstDir, 0o700); err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".cedar") || e.Type()&fs.ModeType != 0 {
			continue
		}
		if err := File(filepath.Join(srcDir, e.Name()), filepath.Join(dstDir, e.Name()), getenv); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

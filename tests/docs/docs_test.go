package docs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

// Tags a shell snippet may carry after its language.
var tags = map[string]string{
	"run":  "run by tests/docs",
	"aws":  "needs AWS",
	"db":   "needs a prepared database",
	"make": "a make target",
	"net":  "needs the internet",
}

var shells = map[string]bool{"sh": true, "bash": true, "shell": true, "zsh": true, "console": true}

// snippet is one fenced block of a document.
type snippet struct {
	file string // relative to the repository root
	line int    // of the opening fence, 1-based
	lang string
	tag  string // the word after the language, if any
	rest []string
	body string
}

func (s snippet) String() string { return fmt.Sprintf("%s:%d", s.file, s.line) }

// root is the repository's root: the directory of go.mod above this one.
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("docs: no go.mod above the working directory")
		}
		dir = parent
	}
}

// documents lists the checked documents, relative to the root.
func documents(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md", "layer/README.md", "sam/README.md"}
	fns, err := filepath.Glob(filepath.Join(root, "functions", "*", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fns {
		rel, _ := filepath.Rel(root, f)
		files = append(files, filepath.ToSlash(rel))
	}
	return files
}

var fenceRE = regexp.MustCompile("^( *)(```+)(.*)$")

// parse returns the fenced blocks of a markdown document. A fence may be
// indented (inside a list item); its content loses that indentation.
func parse(file string, data []byte) ([]snippet, error) {
	var out []snippet
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, fence, info := len(m[1]), m[2], strings.Fields(m[3])
		s := snippet{file: file, line: i + 1}
		if len(info) > 0 {
			s.lang = strings.ToLower(info[0])
		}
		if len(info) > 1 {
			s.tag, s.rest = info[1], info[2:]
		}
		var body []string
		closed := false
		for i++; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == fence {
				closed = true
				break
			}
			l := lines[i]
			if len(l) >= indent && strings.TrimSpace(l[:indent]) == "" {
				l = l[indent:]
			}
			body = append(body, l)
		}
		if !closed {
			return nil, fmt.Errorf("%s:%d: the fence is never closed", file, s.line)
		}
		s.body = strings.Join(body, "\n") + "\n"
		out = append(out, s)
	}
	return out, nil
}

// snippets parses every checked document.
func snippets(t *testing.T, root string) []snippet {
	t.Helper()
	var all []snippet
	for _, f := range documents(t, root) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatalf("docs: %v", err)
		}
		s, err := parse(f, data)
		if err != nil {
			t.Fatalf("docs: %v", err)
		}
		all = append(all, s...)
	}
	return all
}

// TestShellSnippetsAreMarked: every shell block says whether this package
// runs it or what it needs.
func TestShellSnippetsAreMarked(t *testing.T) {
	r := root(t)
	n := 0
	for _, s := range snippets(t, r) {
		if !shells[s.lang] {
			continue
		}
		n++
		if _, ok := tags[s.tag]; !ok || len(s.rest) > 0 {
			t.Errorf("%s: a %s block must be marked with exactly one of run, aws, db, make, net after the language (got %q); see tests/docs/doc.go",
				s, s.lang, strings.TrimSpace(s.tag+" "+strings.Join(s.rest, " ")))
		}
	}
	if n == 0 {
		t.Fatal("docs: no shell block found: is the parser broken?")
	}
}

// cli builds the ephemera CLI once and returns the directory holding it.
func cli(t *testing.T) string {
	t.Helper()
	return filepath.Dir(gobuild.BinaryTB(t, gobuild.ModulePath+"/cmd/ephemera", gobuild.Options{}))
}

// run runs a shell script from the repository root with the CLI first on
// PATH, bounded, and returns its combined output and error.
func run(t *testing.T, root, bin, script string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = root
	// Offline: no proxy and no module downloads for anything a snippet runs.
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GOPROXY=off", "HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// TestRunSnippets runs every "run" block and expects exit status 0.
func TestRunSnippets(t *testing.T) {
	r := root(t)
	var runs []snippet
	for _, s := range snippets(t, r) {
		if shells[s.lang] && s.tag == "run" {
			runs = append(runs, s)
		}
	}
	if len(runs) == 0 {
		t.Fatal("docs: no `sh run` block found")
	}
	bin := cli(t)
	for _, s := range runs {
		t.Run(s.String(), func(t *testing.T) {
			out, err := run(t, r, bin, s.body)
			if err != nil {
				t.Fatalf("%s failed: %v\n--- script\n%s--- output\n%s", s, err, s.body, out)
			}
			if len(bytes.TrimSpace(out)) == 0 {
				t.Errorf("%s printed nothing", s)
			}
		})
	}
}

// TestCedarSnippetsValidate: every Cedar block of the documents is a valid
// policy set under ephemera's schema, as the broker would load it.
func TestCedarSnippetsValidate(t *testing.T) {
	r := root(t)
	var cedar []snippet
	for _, s := range snippets(t, r) {
		if s.lang == "cedar" {
			cedar = append(cedar, s)
		}
	}
	if len(cedar) == 0 {
		t.Fatal("docs: no cedar block found")
	}
	bin := cli(t)
	for _, s := range cedar {
		t.Run(s.String(), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "snippet.cedar"), []byte(s.body), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, r, bin, "ephemera policy validate "+dir)
			if err != nil {
				t.Fatalf("%s is not a valid policy set: %v\n%s", s, err, out)
			}
		})
	}
}

// outside matches references to texts outside the repository that the
// project's documents must not make.
var outside = regexp.MustCompile(`DESIGN[ ]§|DESIGN\.md|\.\./shared|\(issue \d+\)|\bissue #?\d+\b`)

// TestNoOutsideReferences: the documents stand alone.
func TestNoOutsideReferences(t *testing.T) {
	r := root(t)
	files := append(documents(t, r), "docs/design.md")
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(r, f))
		if err != nil {
			t.Fatalf("docs: %v", err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if m := outside.FindString(line); m != "" {
				t.Errorf("%s:%d refers outside the repository (%q)", f, i+1, m)
			}
		}
	}
}

var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestLinksResolve: every relative link of the documents names a file or
// directory of the repository (anchors are not checked).
func TestLinksResolve(t *testing.T) {
	r := root(t)
	files := append(documents(t, r), "docs/design.md")
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(r, f))
		if err != nil {
			t.Fatalf("docs: %v", err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
				target, _, _ := strings.Cut(m[1], "#")
				if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				n++
				if _, err := os.Stat(filepath.Join(r, filepath.Dir(f), target)); err != nil {
					t.Errorf("%s:%d links to %s, which does not exist", f, i+1, m[1])
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("docs: no relative link found: is the pattern broken?")
	}
}

package docs

import (
	"os"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
)

// TestMain removes the CLI that the tests built.
func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	defer func() { _ = gobuild.Clean() }()
	return m.Run()
}

package runtimes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// PythonMissing says what to install when Debian's /usr/bin/python3 cannot import
// psycopg and boto3 (functions/demo-python needs both), and "" when it can.
func PythonMissing() string {
	out, err := exec.Command("/usr/bin/python3", "-c", "import psycopg, boto3").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("/usr/bin/python3 cannot import psycopg and boto3 (%v: %s): install Debian's packages "+
			"with `apt-get install -y python3-psycopg python3-boto3` (.ci/run does)", err, strings.TrimSpace(string(out)))
	}
	return ""
}

// NodeMissing says what to install when node is not on PATH or
// functions/demo-node/node_modules lacks a package the function needs, and ""
// when all are there. It reads the folder relative to a package of tests/, where
// the tests that run the function are.
func NodeMissing() string {
	if _, err := exec.LookPath("node"); err != nil {
		return "node is not on PATH: install Node.js 20 or later"
	}
	for _, mod := range []string{"pg", "@aws-sdk/client-sts"} {
		if _, err := os.Stat(filepath.Join("../../functions/demo-node/node_modules", mod, "package.json")); err != nil {
			return fmt.Sprintf("functions/demo-node/node_modules lacks %s: run `npm ci` in functions/demo-node (.ci/run does)", mod)
		}
	}
	return ""
}

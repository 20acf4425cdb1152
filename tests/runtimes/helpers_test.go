package runtimes

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	extconfig "github.com/ephemera-sh/ephemera/extension/config"
)

// The keys of the fake execution role and of the fake extension's AWS session.
const (
	execKeyID    = "ASIAEXECUTIONROLE001"
	sessionKeyID = "ASIAEPHEMERASESSION1"
	sandboxToken = "the-sandbox-session-token"
)

// TestHelpersBypassTheExecutionRole shows the pitfall the helpers exist for, and that they
// avoid it. In an environment like Lambda's (the execution role's keys in
// AWS_ACCESS_KEY_ID & co.) with AWS_CONTAINER_CREDENTIALS_FULL_URI pointing at the
// extension, each SDK's default chain resolves the execution role's key; the helper's
// credentials resolve the extension's session, read from GET /v1/aws/{name} with the
// sandbox's AWS_SESSION_TOKEN in the Authorization header.
func TestHelpersBypassTheExecutionRole(t *testing.T) {
	var mu sync.Mutex
	var reads []string // Authorization headers of the reads of /v1/aws/reports
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/aws/reports" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		reads = append(reads, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"AccessKeyId": sessionKeyID, "SecretAccessKey": "session-secret", "Token": "session-token",
			"Expiration": time.Now().Add(15 * time.Minute).UTC().Format(time.RFC3339),
		})
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	dir := t.TempDir()
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "PYTHONDONTWRITEBYTECODE=1",
		"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=" + execKeyID, "AWS_SECRET_ACCESS_KEY=exec-secret",
		"AWS_SESSION_TOKEN=" + sandboxToken, "AWS_CONTAINER_CREDENTIALS_FULL_URI=" + srv.URL + "/v1/aws/reports",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN=" + sandboxToken, "EPHEMERA_PORT=" + port,
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
	scripts := map[string][]string{
		"python": {"/usr/bin/python3", "-c", `import boto3, ephemera
print("default=" + boto3.Session().get_credentials().access_key)
print("helper=" + ephemera.boto3_session("reports").get_credentials().get_frozen_credentials().access_key)`},
		"node": {"node", "--input-type=module", "-e", `import { STSClient } from "@aws-sdk/client-sts";
import { awsCredentials } from "./ephemera.js";
console.log("default=" + (await new STSClient({}).config.credentials()).accessKeyId);
console.log("helper=" + (await new STSClient({ credentials: awsCredentials("reports") }).config.credentials()).accessKeyId);`},
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			if msg := rt.missing(); msg != "" {
				t.Fatalf("the %s runtime is not installed: %s", rt.name, msg)
			}
			mu.Lock()
			reads = nil
			mu.Unlock()
			args := scripts[rt.name]
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir, cmd.Env = rt.dir, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got := string(out)
			if !strings.Contains(got, "default="+execKeyID+"\n") {
				t.Errorf("the SDK's default chain did not pick the execution role's key (the pitfall is gone?):\n%s", got)
			}
			if !strings.Contains(got, "helper="+sessionKeyID+"\n") {
				t.Errorf("the helper's credentials are not the extension's session:\n%s", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reads) == 0 {
				t.Fatal("the helper never read the extension")
			}
			for _, a := range reads {
				if a != sandboxToken {
					t.Errorf("a read carried Authorization %q, want the sandbox's AWS_SESSION_TOKEN", a)
				}
			}
		})
	}
}

// TestHelpersDefaultPort: the helpers' default port is the extension's default
// EPHEMERA_PORT, so that a function without EPHEMERA_PORT finds the extension.
func TestHelpersDefaultPort(t *testing.T) {
	for file, re := range map[string]*regexp.Regexp{
		"../../functions/demo-python/ephemera.py": regexp.MustCompile(`(?m)^DEFAULT_PORT = (\d+)`),
		"../../functions/demo-node/ephemera.js":   regexp.MustCompile(`(?m)^export const DEFAULT_PORT = (\d+);`),
	} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(src)
		if m == nil {
			t.Fatalf("%s: no DEFAULT_PORT", file)
		}
		if p, _ := strconv.Atoi(string(m[1])); p != extconfig.DefaultPort {
			t.Errorf("%s: DEFAULT_PORT %d, the extension's default is %d", file, p, extconfig.DefaultPort)
		}
	}
}

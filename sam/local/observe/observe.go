// Package observe lets a test watch parts that run concurrently with it:
// goroutines of the code under test, child processes, servers on loopback.
//
// Buffer collects what they write (JSON logs, audit lines, a sandbox's
// stdout and stderr) and is safe for many writers and readers at once:
//
//	logs := &observe.Buffer{}
//	b, err := broker.New(ctx, broker.Options{AuditOut: logs, ...})
//	...
//	if strings.Contains(logs.String(), password) { t.Error("the password was logged") }
//
// Until waits for a condition, bounded, without assuming how fast the
// machine is:
//
//	if !observe.Until(5*time.Second, func() bool { return strings.Contains(logs.String(), `"msg":"ready"`) }) {
//		t.Fatalf("never ready:\n%s", logs)
//	}
package observe

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent use: writers append, readers
// get copies. The zero value is ready to use; a Buffer must not be copied
// after first use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p. It never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Bytes returns a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}

// Len is the number of bytes written so far.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

// Lines returns the complete and partial lines written so far, without
// their line ends and without empty lines.
func (b *Buffer) Lines() []string {
	var out []string
	for line := range strings.SplitSeq(b.String(), "\n") {
		if line = strings.TrimRight(line, "\r"); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// Until calls cond every 10 ms until it returns true, for at most limit,
// and reports whether it did. cond is called at least once, and once more
// after limit has passed, so that a slow machine only costs time.
func Until(limit time.Duration, cond func() bool) bool {
	end := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return cond()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Leaks looks for secrets in outputs, both keyed by what they are, and returns
// one sentence for each secret found in each output ("<secret> is in <output>"),
// sorted; none when nothing leaked:
//
//	for _, leak := range observe.Leaks(
//		map[string]string{"the issued password": cred.Password},
//		map[string]string{"the broker's logs": logs.String()},
//	) {
//		t.Error(leak)
//	}
func Leaks(secrets, outputs map[string]string) []string {
	var found []string
	for what, secret := range secrets {
		for where, text := range outputs {
			if strings.Contains(text, secret) {
				found = append(found, what+" is in "+where)
			}
		}
	}
	slices.Sort(found)
	return found
}

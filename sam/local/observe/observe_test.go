package observe_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

// TestBufferConcurrentWriters: writes from many goroutines all arrive whole,
// while readers read (run with -race).
func TestBufferConcurrentWriters(t *testing.T) {
	var b observe.Buffer
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "g%d line %d\n", g, i)
				_ = b.Len()
			}
		})
	}
	wg.Wait()
	lines := b.Lines()
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	if !slices.Contains(lines, "g7 line 99") || b.Len() != len(b.String()) || string(b.Bytes()) != b.String() {
		t.Fatalf("lines or lengths disagree: %d bytes, %d in String", b.Len(), len(b.String()))
	}
}

// TestLinesDropsEmptyAndCarriageReturns: Lines keeps a partial last line and
// drops empty ones and \r line ends.
func TestLinesDropsEmptyAndCarriageReturns(t *testing.T) {
	var b observe.Buffer
	b.Write([]byte("a\r\n\n b\npartial"))
	if got, want := b.Lines(), []string{"a", " b", "partial"}; !slices.Equal(got, want) {
		t.Fatalf("Lines = %q, want %q", got, want)
	}
}

// TestUntil: a condition that becomes true is seen; one that never does is
// reported false after being asked again at the bound.
func TestUntil(t *testing.T) {
	var n atomic.Int32
	if !observe.Until(time.Minute, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("Until gave up on a condition that became true")
	}
	var calls atomic.Int32
	if observe.Until(0, func() bool { calls.Add(1); return false }) {
		t.Fatal("Until reported a false condition as true")
	}
	if c := calls.Load(); c != 2 {
		t.Fatalf("cond called %d times with a zero limit, want 2 (before and at the bound)", c)
	}
}

func TestLeaks(t *testing.T) {
	got := observe.Leaks(
		map[string]string{"the password": "hunter2", "the token": "tok-1", "the key": "never-printed"},
		map[string]string{"the logs": "user u password hunter2 token tok-1", "the audit": "password hunter2"},
	)
	want := []string{"the password is in the audit", "the password is in the logs", "the token is in the logs"}
	if !slices.Equal(got, want) {
		t.Fatalf("Leaks = %q, want %q", got, want)
	}
	if got := observe.Leaks(map[string]string{"the key": "k-1"}, map[string]string{"the logs": "nothing"}); len(got) != 0 {
		t.Fatalf("Leaks = %q, want none", got)
	}
}

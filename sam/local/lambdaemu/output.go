package lambdaemu

import (
	"bytes"
	"io"
	"sync"
)

// maxLogBytes bounds the in-memory copy of the children's output; past it
// the oldest half is dropped (Config.Output still gets everything).
const maxLogBytes = 16 << 20

// logSink collects the children's output: one copy in memory, one written
// to Config.Output, each line prefixed with the child's name.
type logSink struct {
	mu  sync.Mutex
	buf []byte
	out io.Writer
}

// writeLine records one complete line (without its newline).
func (s *logSink) writeLine(name string, line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) > maxLogBytes {
		cut := len(s.buf) / 2
		if i := bytes.IndexByte(s.buf[cut:], '\n'); i >= 0 {
			cut += i + 1
		}
		s.buf = append(s.buf[:0], s.buf[cut:]...)
	}
	start := len(s.buf)
	s.buf = append(s.buf, '[')
	s.buf = append(s.buf, name...)
	s.buf = append(s.buf, "] "...)
	s.buf = append(s.buf, line...)
	s.buf = append(s.buf, '\n')
	_, _ = s.out.Write(s.buf[start:])
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf)
}

// lineWriter splits one child's output into lines for a logSink. The exec
// package copies stdout and stderr from one goroutine each and both share
// one lineWriter, hence the mutex.
type lineWriter struct {
	name string
	sink *logSink

	mu      sync.Mutex
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			break
		}
		line := p[:i]
		if len(w.partial) > 0 {
			line = append(w.partial, line...)
			w.partial = nil
		}
		w.sink.writeLine(w.name, bytes.TrimSuffix(line, []byte("\r")))
		p = p[i+1:]
	}
	return n, nil
}

// flush writes a last line that had no newline.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.sink.writeLine(w.name, w.partial)
		w.partial = nil
	}
}

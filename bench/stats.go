package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// errExhausted ends a worker whose fixtures ran out; it is not an error.
var errExhausted = errors.New("fixtures exhausted")

// maxErrors stops a phase early: something is wrong, not slow.
const maxErrors = 20

// sample is the outcome of one measured phase.
type sample struct {
	lat      []time.Duration // successful operations, sorted
	errs     int
	firstErr error
	elapsed  time.Duration // wall time from the first start to the last end
}

func (s sample) n() int { return len(s.lat) }

// p is the q-quantile (nearest rank) of the latencies.
func (s sample) p(q float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s.lat)))) - 1
	return s.lat[min(max(i, 0), len(s.lat)-1)]
}

func (s sample) opsPerSec() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.elapsed.Seconds()
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// drive runs op from conc workers until dur has passed, maxOps operations
// have started, op returns errExhausted, maxErrors errors happened or ctx
// ends, and times every call.
func drive(ctx context.Context, conc int, dur time.Duration, maxOps int, op func(ctx context.Context) error) sample {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var left atomic.Int64
	left.Store(int64(maxOps))
	var mu sync.Mutex
	var s sample
	lats := make([][]time.Duration, conc)
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) && left.Add(-1) >= 0 {
				t0 := time.Now()
				err := op(ctx)
				d := time.Since(t0)
				if errors.Is(err, errExhausted) {
					return
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					s.errs++
					if s.firstErr == nil {
						s.firstErr = err
					}
					if s.errs >= maxErrors {
						cancel()
					}
					mu.Unlock()
					continue
				}
				lats[w] = append(lats[w], d)
			}
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	for _, l := range lats {
		s.lat = append(s.lat, l...)
	}
	slices.Sort(s.lat)
	return s
}

// merge adds o's operations to s (o measured after s).
func (s *sample) merge(o sample) {
	s.lat = append(s.lat, o.lat...)
	slices.Sort(s.lat)
	s.elapsed += o.elapsed
	s.errs += o.errs
	if s.firstErr == nil {
		s.firstErr = o.firstErr
	}
}

// percentile of an unsorted slice of durations (nearest rank).
func percentile(ds []time.Duration, q float64) time.Duration {
	s := sample{lat: slices.Sorted(slices.Values(ds))}
	return s.p(q)
}

// metricsSink reads the broker's EMF lines and keeps its own timing of each
// issue: IssueLatency (verify → lease committed, ms), VerifyLatency (nonce
// insert + STS call + checks, µs) and PolicyLatency (µs).
type metricsSink struct {
	mu                    sync.Mutex
	buf                   []byte
	on                    bool // record only while measuring
	issue, verify, policy []time.Duration
}

// record starts (true) or stops (false) recording.
func (m *metricsSink) record(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = on
}

func (m *metricsSink) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.buf = append(m.buf, p...)
	for {
		i := bytes.IndexByte(m.buf, '\n')
		if i < 0 {
			break
		}
		line := m.buf[:i]
		if bytes.Contains(line, []byte(`"IssueLatency"`)) {
			var doc struct {
				Issue  float64 `json:"IssueLatency"`
				Verify float64 `json:"VerifyLatency"`
				Policy float64 `json:"PolicyLatency"`
			}
			if m.on && json.Unmarshal(line, &doc) == nil {
				m.issue = append(m.issue, time.Duration(doc.Issue*1e6))
				m.verify = append(m.verify, time.Duration(doc.Verify*1e3))
				m.policy = append(m.policy, time.Duration(doc.Policy*1e3))
			}
		}
		m.buf = m.buf[i+1:]
	}
	return len(p), nil
}

func (m *metricsSink) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.issue, m.verify, m.policy, m.on = nil, nil, nil, false
}

// p50s returns the medians of the recorded issue, verify and policy times.
func (m *metricsSink) p50s() (issue, verify, policy time.Duration, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return percentile(m.issue, 0.5), percentile(m.verify, 0.5), percentile(m.policy, 0.5), len(m.issue)
}

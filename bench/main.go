// Command bench measures ephemera side by side with what PostgreSQL itself
// allows, and with the published figures of dynamic-secret systems (see
// bench/README.md). It starts a durable throwaway PostgreSQL, the STS
// emulator and the broker on loopback, runs every phase bounded in count and
// time, prints one table and writes bench/results.json.
//
//	go run ./bench [-d 2.5s] [-warm 500ms] [-out bench/results.json] [-budget 9m]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type runner struct {
	dur, warm time.Duration
	start     time.Time
	only      []string // phases whose names contain one of these; nil: all
	e         *env
	meter     *dbMeter
	res       *results
	rows      []row
	workRows  []row // the database's work per operation, printed last
}

func main() {
	if os.Getenv(floorServerEnv) != "" {
		serveFloor()
		return
	}
	dur := flag.Duration("d", 2500*time.Millisecond, "measurement window of each phase (each is also bounded in count)")
	warm := flag.Duration("warm", 500*time.Millisecond, "warm-up before each measured phase")
	out := flag.String("out", "bench/results.json", "where to write the results")
	budget := flag.Duration("budget", 9*time.Minute, "hard bound on the whole run; phases not reached are skipped")
	only := flag.String("only", "", "run only the phases whose names contain one of these comma-separated words (e.g. extension,replays); the table says which ran")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *budget)
	defer cancel()

	r := &runner{dur: *dur, warm: *warm, start: time.Now(), res: newResults()}
	if *only != "" {
		r.only = strings.Split(*only, ",")
	}
	err := r.run(ctx)
	if err != nil {
		r.res.Errors = append(r.res.Errors, err.Error())
	}
	runtimeS := time.Since(r.start).Seconds()
	r.res.Meta["runtime_s"] = round3(runtimeS)
	r.res.Meta["loadavg_end"] = loadavg()

	fmt.Println()
	r.printHeader()
	if r.only != nil {
		fmt.Printf("-only %s: phases not run: %s\n", strings.Join(r.only, ","), strings.Join(metaList(r.res.Meta["phases_not_selected"]), "; "))
	}
	printTable(os.Stdout, r.rows)
	if len(r.res.Errors) > 0 {
		fmt.Println("\nerrors:")
		for _, e := range r.res.Errors {
			fmt.Println("  " + firstLine(e))
		}
	}
	fmt.Printf("\nruntime %.0f s; results in %s\n", runtimeS, *out)
	if werr := writeJSON(*out, r.res); werr != nil {
		fmt.Fprintln(os.Stderr, "bench:", werr)
		os.Exit(1)
	}
	if err != nil || len(r.res.Errors) > 0 {
		os.Exit(1)
	}
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func (r *runner) step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *runner) fail(phase string, err error) {
	msg := phase + ": " + err.Error()
	r.res.Errors = append(r.res.Errors, msg)
	r.step("FAILED %s", firstLine(msg))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func (r *runner) printHeader() {
	m := r.res.Meta
	fmt.Printf("ephemera bench — PostgreSQL %v, durable (fsync=%v, synchronous_commit=%v, full_page_writes=%v, wal_sync_method=%v), data directory on %v\n",
		m["pg_version"], m["fsync"], m["synchronous_commit"], m["full_page_writes"], m["wal_sync_method"], m["data_fs"])
	fmt.Printf("%v CPUs (GOMAXPROCS %v), load average %v at start, %v at end; window %v + %v warm-up per phase; loopback only\n",
		m["cpus"], m["gomaxprocs"], m["loadavg_start"], m["loadavg_end"], r.dur, r.warm)
	fmt.Println("floor = the bare SQL through pgx in one round trip, same concurrency, same run; ratio = ops/s ÷ floor ops/s")
	fmt.Println()
}

// measure warms op up (bounded by warmOps and r.warm), then measures it
// (bounded by maxOps and r.dur).
func (r *runner) measure(ctx context.Context, conc, warmOps, maxOps int, op func(context.Context) error) (sample, error) {
	return r.measureWith(ctx, conc, warmOps, maxOps, op, nil)
}

// measureWith is measure that calls before between warm-up and measurement.
func (r *runner) measureWith(ctx context.Context, conc, warmOps, maxOps int, op func(context.Context) error, before func()) (sample, error) {
	if warmOps > 0 {
		w := drive(ctx, conc, r.warm, warmOps, op)
		if w.n() == 0 && w.errs > 0 {
			return w, fmt.Errorf("warm-up failed: %w", w.firstErr)
		}
	}
	if before != nil {
		before()
	}
	s := drive(ctx, conc, r.dur, maxOps, op)
	if s.n() == 0 {
		if s.firstErr != nil {
			return s, s.firstErr
		}
		return s, errors.New("no operation completed")
	}
	if s.errs > 0 {
		r.res.Errors = append(r.res.Errors, fmt.Sprintf("%d errors among %d operations (c=%d): %v", s.errs, s.errs+s.n(), conc, s.firstErr))
	}
	return s, nil
}

// pair measures a (the floor) and b (the broker) at concurrency conc in two
// alternating rounds of half the window each, prep running before every
// half, so that a drift of the machine's load biases neither side. The
// broker's metrics sink records only during b's measured halves.
func (r *runner) pair(ctx context.Context, conc int, a, b func(context.Context) error, prep func() error) (sa, sb sample, err error) {
	sa, sb, _, _, err = r.pairW(ctx, conc, a, b, prep)
	return sa, sb, err
}

// pairW is pair that also meters the database's work on each side (see dbMeter).
func (r *runner) pairW(ctx context.Context, conc int, a, b func(context.Context) error, prep func() error) (sa, sb sample, wa, wb dbWork, err error) {
	half := r.dur / 2
	r.e.sink.reset()
	for range 2 {
		for i, op := range []func(context.Context) error{a, b} {
			if err := prep(); err != nil {
				return sa, sb, wa, wb, err
			}
			if w := drive(ctx, conc, r.warm/2, lots, op); w.n() == 0 && w.errs > 0 {
				return sa, sb, wa, wb, fmt.Errorf("warm-up failed: %w", w.firstErr)
			}
			r0, err := r.meter.start(ctx)
			if err != nil {
				return sa, sb, wa, wb, err
			}
			r.e.sink.record(i == 1)
			s := drive(ctx, conc, half, lots, op)
			r.e.sink.record(false)
			if s.n() == 0 {
				if s.firstErr == nil {
					s.firstErr = errors.New("no operation completed")
				}
				return sa, sb, wa, wb, s.firstErr
			}
			w, err := r.meter.since(ctx, r0, s.n())
			if err != nil {
				return sa, sb, wa, wb, err
			}
			if i == 0 {
				sa.merge(s)
				wa.add(w)
			} else {
				sb.merge(s)
				wb.add(w)
			}
		}
	}
	for _, s := range []sample{sa, sb} {
		if s.errs > 0 {
			r.res.Errors = append(r.res.Errors, fmt.Sprintf("%d errors among %d operations (c=%d): %v", s.errs, s.errs+s.n(), conc, s.firstErr))
		}
	}
	return sa, sb, wa, wb, nil
}

// measureW is measureWith (before: nil) that also meters the database's work.
func (r *runner) measureW(ctx context.Context, conc, warmOps, maxOps int, op func(context.Context) error) (sample, dbWork, error) {
	var r0 dbReading
	var merr error
	s, err := r.measureWith(ctx, conc, warmOps, maxOps, op, func() { r0, merr = r.meter.start(ctx) })
	if err != nil {
		return s, dbWork{}, err
	}
	if merr != nil {
		return s, dbWork{}, merr
	}
	w, err := r.meter.since(ctx, r0, s.n())
	return s, w, err
}

func (r *runner) run(ctx context.Context) error {
	r.res.Meta["started_at"] = r.start.UTC().Format(time.RFC3339)
	r.res.Meta["go"] = runtime.Version()
	r.res.Meta["cpus"] = runtime.NumCPU()
	r.res.Meta["gomaxprocs"] = runtime.GOMAXPROCS(0)
	r.res.Meta["loadavg_start"] = loadavg()
	r.res.Meta["window"] = r.dur.String()
	r.res.Meta["warm_up"] = r.warm.String()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	extDir, err := os.MkdirTemp("", "ephemera-bench-ext-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(extDir)
	// Built first, so that the compiler does not run during measurements.
	r.step("building the extension with the layer tooling (layer.BuildBinary, layer.WriteZip)")
	bin, binSize, zipSize, arch, berr := buildExtension(ctx, root, extDir)
	if berr != nil {
		r.fail("extension build", berr)
	} else {
		r.res.Extension.BinaryBytes, r.res.Extension.LayerZipBytes, r.res.Extension.Arch = binSize, zipSize, arch
		r.res.Extension.Packaging = "layer.BuildBinary (CGO_ENABLED=0, -trimpath, -ldflags=-s -w) + layer.WriteZip (deflate, extensions/ephemera)"
	}

	r.step("starting a durable throwaway PostgreSQL, the STS emulator and the broker")
	e, err := startEnv(ctx)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.close()
	r.e = e
	if r.meter, err = newDBMeter(ctx, e); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	r.res.Meta["pg_version"] = e.pgVersion
	r.res.Meta["data_fs"] = e.dataFS
	r.res.Meta["durable"] = true
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "max_connections", "shared_buffers"} {
		var v string
		if err := e.super.QueryRow(ctx, "SHOW "+s).Scan(&v); err == nil {
			r.res.Meta[s] = v
		}
	}
	r.res.Meta["broker_admin_pool_max_conns"] = 8
	if e.dataFS == "tmpfs" {
		r.step("WARNING: the data directory is on tmpfs; commits do not reach a disk")
	}

	phases := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"round trips", r.phaseRoundTrips},
		{"issue (scram_iterations 4096)", func(ctx context.Context) error { return r.phaseIssue(ctx, dbDefault, 4096, "") }},
		{"issue (scram_iterations 64)", func(ctx context.Context) error { return r.phaseIssue(ctx, dbFast, fastIters, "") }},
		{"revoke (scram_iterations 4096)", func(ctx context.Context) error { return r.phaseRevoke(ctx, dbDefault, 4096, concurrencies, "") }},
		{"revoke (scram_iterations 64)", func(ctx context.Context) error { return r.phaseRevoke(ctx, dbFast, fastIters, concurrencies, "") }},
		{"pinned: PostgreSQL on one core, the rest on the other", r.phasePinned},
		{"SQL replays of the issue", r.phaseReplay},
		{"micro", r.phaseMicro},
		{"cold pool", r.phaseColdPool},
		{"reaper", r.phaseReaper},
		{"scale", r.phaseScale},
		{"cpu", r.phaseCPU},
		{"extension", func(ctx context.Context) error {
			if berr != nil {
				return fmt.Errorf("not built: %w", berr)
			}
			return r.phaseExtension(ctx, bin)
		}},
	}
	for _, p := range phases {
		if !r.selected(p.name) {
			r.res.Meta["phases_not_selected"] = append(metaList(r.res.Meta["phases_not_selected"]), p.name)
			continue
		}
		if ctx.Err() != nil {
			r.fail(p.name, fmt.Errorf("skipped: %w", context.Cause(ctx)))
			continue
		}
		r.step("phase: %s", p.name)
		if err := p.fn(ctx); err != nil {
			r.fail(p.name, err)
		}
	}
	r.rows = append(r.rows, sectionRow("the database's work per operation: floor / broker (server CPU from /proc, WAL from pg_current_wal_lsn, write commits)"))
	r.rows = append(r.rows, r.workRows...)
	return nil
}

// selected reports whether -only lets the phase run.
func (r *runner) selected(phase string) bool {
	if r.only == nil {
		return true
	}
	for _, w := range r.only {
		if w = strings.TrimSpace(w); w != "" && strings.Contains(phase, w) {
			return true
		}
	}
	return false
}

func metaList(v any) []string {
	l, _ := v.([]string)
	return l
}

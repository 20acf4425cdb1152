package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// In AWS the broker scales out on Lambda while the database instance is the
// shared, finite resource: what an operation costs the database matters more
// than what it costs the broker. A dbMeter reads, around a measured window,
// what the PostgreSQL server did:
//
//   - CPU: utime+stime of every process whose parent is the postmaster, plus
//     the postmaster's cutime+cstime (what it reaped from backends that exited
//     during the window), from /proc, in clock ticks;
//   - WAL: pg_current_wal_lsn() before and after, subtracted with
//     pg_wal_lsn_diff;
//   - commits: write transactions, from the next transaction id
//     (pg_snapshot_xmax(pg_current_snapshot()), which assigns none): every
//     transaction that wrote got an id and flushed a commit record; and
//     pg_stat_database.xact_commit, which also counts read-only commits but
//     lags (a PostgreSQL 15 backend publishes its counters at most once a
//     second, and an idle one only after 10 s), so it is reported as a
//     second figure.
//
// The meter's own queries run between the readings; their cost (a few
// hundred µs of CPU per window) is negligible next to a window's thousands
// of operations.

// clkTck is the kernel's USER_HZ: /proc reports CPU times in these ticks.
var clkTck = func() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// dbWork is the server's work over one or more windows.
type dbWork struct {
	cpuTicks    float64
	walBytes    float64
	xids        float64
	xactCommits float64
	ops         int
}

func (w *dbWork) add(o dbWork) {
	w.cpuTicks += o.cpuTicks
	w.walBytes += o.walBytes
	w.xids += o.xids
	w.xactCommits += o.xactCommits
	w.ops += o.ops
}

func (w dbWork) cpuUsPerOp() float64 {
	if w.ops == 0 {
		return 0
	}
	return round3(w.cpuTicks / clkTck * 1e6 / float64(w.ops))
}

func (w dbWork) walPerOp() float64 {
	if w.ops == 0 {
		return 0
	}
	return round3(w.walBytes / float64(w.ops))
}

func (w dbWork) commitsPerOp() float64 {
	if w.ops == 0 {
		return 0
	}
	return round3(w.xids / float64(w.ops))
}

func (w dbWork) xactCommitsPerOp() float64 {
	if w.ops == 0 {
		return 0
	}
	return round3(w.xactCommits / float64(w.ops))
}

// dbReading is one reading of the counters.
type dbReading struct {
	ticks       float64
	lsn         string
	xid         int64
	xactCommits int64
}

// dbMeter reads the server of env e.
type dbMeter struct {
	e          *env
	postmaster int
}

func newDBMeter(ctx context.Context, e *env) (*dbMeter, error) {
	var pid int
	if err := e.super.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return nil, err
	}
	stat, err := readStat(pid)
	if err != nil {
		return nil, fmt.Errorf("the server's processes are not readable in /proc: %w", err)
	}
	return &dbMeter{e: e, postmaster: stat.ppid}, nil
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime float64
}

// readStat parses /proc/pid/stat (the command name, in parentheses, may
// hold spaces: fields are counted after the last ')').
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	num := func(k int) float64 { v, _ := strconv.ParseFloat(f[k], 64); return v }
	ppid, _ := strconv.Atoi(f[1])
	return procStat{ppid: ppid, utime: num(11), stime: num(12), cutime: num(13), cstime: num(14)}, nil
}

// serverPIDs lists the postmaster's children.
func (m *dbMeter) serverPIDs() []int {
	var out []int
	ents, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range ents {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.ppid == m.postmaster {
			out = append(out, pid)
		}
	}
	return out
}

// cpuTicks is the server's CPU so far: its live children's, and what the
// postmaster reaped from the dead ones (and its own).
func (m *dbMeter) cpuTicks() float64 {
	pm, err := readStat(m.postmaster)
	if err != nil {
		return 0
	}
	t := pm.utime + pm.stime + pm.cutime + pm.cstime
	for _, pid := range m.serverPIDs() {
		if st, err := readStat(pid); err == nil {
			t += st.utime + st.stime
		}
	}
	return t
}

func (m *dbMeter) read(ctx context.Context, cpuFirst bool) (dbReading, error) {
	var r dbReading
	if cpuFirst {
		r.ticks = m.cpuTicks()
	}
	err := m.e.super.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())`).Scan(&r.lsn, &r.xid, &r.xactCommits)
	if !cpuFirst {
		r.ticks = m.cpuTicks()
	}
	return r, err
}

// start reads the counters before a window.
func (m *dbMeter) start(ctx context.Context) (dbReading, error) { return m.read(ctx, true) }

// since is the work from r to now, over ops operations.
func (m *dbMeter) since(ctx context.Context, r dbReading, ops int) (dbWork, error) {
	end, err := m.read(ctx, false)
	if err != nil {
		return dbWork{}, err
	}
	var wal float64
	if err := m.e.super.QueryRow(ctx, "SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8", end.lsn, r.lsn).Scan(&wal); err != nil {
		return dbWork{}, err
	}
	return dbWork{cpuTicks: end.ticks - r.ticks, walBytes: wal, xids: float64(end.xid - r.xid),
		xactCommits: float64(end.xactCommits - r.xactCommits), ops: ops}, nil
}

// ---------------------------------------------------------------------------
// Pinning: PostgreSQL on one core, everything else on the other, as a
// stand-in for a database on a machine of its own.

// pinning moves the server (the postmaster and every child, present and
// future: children inherit the affinity) to cpu pgCPU and this process
// (load driver, broker, STS emulator, every thread) to the other CPUs,
// with util-linux's taskset. undo restores both to every CPU.
type pinning struct {
	m          *dbMeter
	all        string
	pgCPU, oth string
	mu         sync.Mutex
}

func newPinning(m *dbMeter, ncpu int) (*pinning, error) {
	if ncpu < 2 {
		return nil, fmt.Errorf("pinning needs 2 CPUs, the machine has %d", ncpu)
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, fmt.Errorf("taskset (util-linux) not found: %w", err)
	}
	return &pinning{m: m, all: fmt.Sprintf("0-%d", ncpu-1), pgCPU: "0", oth: fmt.Sprintf("1-%d", ncpu-1)}, nil
}

func taskset(cpus string, pid int) error {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", cpus, pid, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (p *pinning) set(pg, self string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := taskset(pg, p.m.postmaster); err != nil {
		return err
	}
	for _, pid := range p.m.serverPIDs() {
		if err := taskset(pg, pid); err != nil && processExists(pid) {
			return err
		}
	}
	return taskset(self, os.Getpid())
}

func processExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

func (p *pinning) pin() error  { return p.set(p.pgCPU, p.oth) }
func (p *pinning) undo() error { return p.set(p.all, p.all) }

// recordWork stores the floor's and the broker's work of one measurement
// under setting, and adds its line to the database-work section.
func (r *runner) recordWork(setting string, conc int, op string, fl, br dbWork, flOps, brOps float64) {
	res := r.res
	res.PgCPUUsPerOp.set(setting, conc, op, workPair{fl.cpuUsPerOp(), br.cpuUsPerOp()})
	res.WALBytesPerOp.set(setting, conc, op, workPair{fl.walPerOp(), br.walPerOp()})
	res.CommitsPerOp.set(setting, conc, op, workPair{fl.commitsPerOp(), br.commitsPerOp()})
	res.XactCommits.set(setting, conc, op, workPair{fl.xactCommitsPerOp(), br.xactCommitsPerOp()})
	res.Throughput.set(setting, conc, op, workPair{round3(flOps), round3(brOps)})
	rt := ""
	if v, ok := res.RoundTrips["broker_"+op]; ok {
		rt = fmt.Sprintf("; round trips 1 / %.1f", v) // the floor: one multi-statement query
	}
	r.workRows = append(r.workRows, row{phase: fmt.Sprintf("  %s, %s", op, strings.ReplaceAll(setting, "_", " ")), conc: cs(conc),
		ops: fmtRate(brOps), floor: fmtRate(flOps), ratio: fmtRatio(brOps, flOps),
		notes: fmt.Sprintf("pg CPU %.0f / %.0f µs (×%.2f); WAL %.0f / %.0f B (×%.2f); commits %.2f / %.2f (xact_commit %.2f / %.2f)%s",
			fl.cpuUsPerOp(), br.cpuUsPerOp(), ratio(br.cpuUsPerOp(), fl.cpuUsPerOp()),
			fl.walPerOp(), br.walPerOp(), ratio(br.walPerOp(), fl.walPerOp()),
			fl.commitsPerOp(), br.commitsPerOp(), fl.xactCommitsPerOp(), br.xactCommitsPerOp(), rt)})
}

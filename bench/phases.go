package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

const (
	pubGeneration = "200–800 ms/generation"
	pubAccess     = "10–100 ms/access; ~1 ms cached static"
	pubPolicy     = "<20 ms/decision"
)

var concurrencies = []int{1, 4, 16}

// lots is "no count bound worth mentioning" for time-bounded phases.
const lots = 100000

func cs(c int) string { return strconv.Itoa(c) }

// ---------------------------------------------------------------------------
// 1+2. Floor and broker issue, side by side per concurrency.

// phaseIssue measures floor and broker issue in database db (whose
// scram_iterations is iters) at every concurrency; setting, when not empty,
// names the measurement (the pinned run) and skips the extras.
func (r *runner) phaseIssue(ctx context.Context, db string, iters int, setting string) error {
	concs := concurrencies
	extras := setting == ""
	if extras {
		setting = "scram_" + cs(iters)
	} else {
		concs = []int{4, 16}
	}
	e := r.e
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, iters)
	if err != nil {
		return err
	}
	brokerOp := func(ctx context.Context) error { _, err := e.issue(ctx, e.brokerFor(db), db); return err }
	var floorRows, brokerRows []row
	var stmtRow *row
	for _, c := range concs {
		fl, br, wf, wb, err := r.pairW(ctx, c, floorIssue(e.admin, db, verifier), brokerOp, func() error { return e.cleanup(ctx) })
		if err != nil {
			return fmt.Errorf("c=%d: %w", c, err)
		}
		r.recordWork(setting, c, "issue", wf, wb, fl.opsPerSec(), br.opsPerSec())
		sIssue, sVerify, sPolicy, _ := e.sink.p50s()
		if !extras {
			r.rows = append(r.rows, row{phase: "  pinned: floor issue SQL, 1 round trip", conc: cs(c), p50: fmtDur(fl.p(0.5)), p99: fmtDur(fl.p(0.99)),
				ops: fmtRate(fl.opsPerSec()), notes: fmt.Sprintf("n=%d", fl.n())},
				row{phase: "  pinned: broker issue, HTTP end to end", conc: cs(c), p50: fmtDur(br.p(0.5)), p99: fmtDur(br.p(0.99)),
					ops: fmtRate(br.opsPerSec()), floor: fmtRate(fl.opsPerSec()), ratio: fmtRatio(br.opsPerSec(), fl.opsPerSec()), notes: fmt.Sprintf("n=%d", br.n())})
			r.step("  pinned c=%d floor %.0f/s, broker %.0f/s", c, fl.opsPerSec(), br.opsPerSec())
			continue
		}
		if c == 1 && iters == 4096 {
			// The same transaction one statement per round trip.
			st, fl1, err := r.pair(ctx, c, floorIssueStatements(e.admin, db, verifier), floorIssue(e.admin, db, verifier), func() error { return e.cleanup(ctx) })
			if err != nil {
				return fmt.Errorf("floor per statement: %w", err)
			}
			r.res.MicroUs["floor_issue_per_statement_c1_p50"] = round3(us(st.p(0.5)))
			r.res.MicroUs["floor_issue_one_round_trip_c1_p50"] = round3(us(fl1.p(0.5)))
			stmtRow = &row{phase: "  floor issue, 5 round trips (BEGIN…COMMIT)", conc: "1", p50: fmtDur(st.p(0.5)), p99: fmtDur(st.p(0.99)),
				ops: fmtRate(st.opsPerSec()), floor: fmtRate(fl1.opsPerSec()), ratio: fmtRatio(st.opsPerSec(), fl1.opsPerSec()),
				notes: "statement by statement, as pgx.BeginFunc; vs the floor measured alongside"}
		}
		ir := issueRow{Concurrency: c, P50ms: round3(ms(br.p(0.5))), P99ms: round3(ms(br.p(0.99))), OpsPerS: round3(br.opsPerSec()),
			FloorOpsPerS: round3(fl.opsPerSec()), FloorP50ms: round3(ms(fl.p(0.5))), FloorP99ms: round3(ms(fl.p(0.99))),
			RatioToFloor: ratio(br.opsPerSec(), fl.opsPerSec()), ScramIterations: iters, N: br.n(), FloorN: fl.n(), Errors: br.errs + fl.errs,
			ServerIssueP50ms: round3(ms(sIssue)), ServerVerifyP50ms: round3(ms(sVerify)), ServerPolicyP50us: round3(us(sPolicy))}
		if iters == 4096 {
			r.res.Issue = append(r.res.Issue, ir)
		} else {
			r.res.IssueScram = append(r.res.IssueScram, ir)
		}
		floorRows = append(floorRows, row{phase: "  floor issue SQL, 1 round trip", conc: cs(c), p50: fmtDur(fl.p(0.5)), p99: fmtDur(fl.p(0.99)),
			ops: fmtRate(fl.opsPerSec()), notes: fmt.Sprintf("n=%d", fl.n())})
		brokerRows = append(brokerRows, row{phase: "  broker issue, HTTP end to end", conc: cs(c), p50: fmtDur(br.p(0.5)), p99: fmtDur(br.p(0.99)),
			ops: fmtRate(br.opsPerSec()), floor: fmtRate(fl.opsPerSec()), ratio: fmtRatio(br.opsPerSec(), fl.opsPerSec()),
			published: pubGeneration, notes: fmt.Sprintf("n=%d; in broker p50: verify %s (nonce+STS), policy %s, verify→commit %s",
				br.n(), fmtDur(sVerify), fmtDur(sPolicy), fmtDur(sIssue))})
		r.step("  c=%d floor %.0f/s p50 %s, broker %.0f/s p50 %s p99 %s", c, fl.opsPerSec(), fmtDur(fl.p(0.5)), br.opsPerSec(), fmtDur(br.p(0.5)), fmtDur(br.p(0.99)))
	}
	if !extras {
		return nil
	}
	r.rows = append(r.rows, sectionRow(fmt.Sprintf("issue, scram_iterations %d (database %s)", iters, db)))
	r.rows = append(r.rows, floorRows...)
	if stmtRow != nil {
		r.rows = append(r.rows, *stmtRow)
	}
	r.rows = append(r.rows, brokerRows...)
	if iters != 4096 && len(r.res.Issue) == len(r.res.IssueScram) {
		for i, lo := range r.res.IssueScram {
			hi := r.res.Issue[i]
			r.rows = append(r.rows, row{phase: "  broker issue 64 vs 4096 iterations", conc: cs(lo.Concurrency),
				ratio: fmtRatio(lo.OpsPerS, hi.OpsPerS), notes: fmt.Sprintf("ops/s ×%.2f, p50 %.2f → %.2f ms; floor ×%.2f",
					lo.OpsPerS/hi.OpsPerS, hi.P50ms, lo.P50ms, lo.FloorOpsPerS/hi.FloorOpsPerS)})
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Replays of the broker's SQL for one issue, and tunings tried on them.

func (r *runner) phaseReplay(ctx context.Context) error {
	e := r.e
	variants, err := e.replays(dbFast, e.admin)
	if err != nil {
		return err
	}
	// Round trips of each variant, through the counting proxy.
	flights := map[string]float64{}
	proxy, err := startProxy(fmt.Sprintf("127.0.0.1:%d", e.pg.Port()))
	if err != nil {
		return err
	}
	defer proxy.ln.Close()
	ps, err := e.poolWith(ctx, 2, func(pc *pgxpool.Config) { pc.ConnConfig.Port = uint16(proxy.port()) })
	if err != nil {
		return err
	}
	defer ps.Close()
	counted, err := e.replays(dbFast, ps)
	if err != nil {
		return err
	}
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, fastIters)
	if err != nil {
		return err
	}
	counted = append(counted, replay{name: "floor", op: floorIssue(ps, dbFast, verifier), syncCommits: 1}, replay{name: "floor per statement", op: floorIssueStatements(ps, dbFast, verifier), syncCommits: 1})
	for _, v := range counted {
		for range 3 {
			if err := v.op(ctx); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
		before := proxy.flights.Load()
		for range 10 {
			if err := v.op(ctx); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
		flights[v.name] = float64(proxy.flights.Load()-before) / 10
	}
	r.res.RoundTrips["floor_issue"] = flights["floor"]
	r.res.RoundTrips["floor_issue_per_statement"] = flights["floor per statement"]

	r.rows = append(r.rows, sectionRow(fmt.Sprintf("the broker's issue SQL replayed through broker/lease, no HTTP/STS/policy (database %s, scram 64; variants alternate)", dbFast)))
	floorV := replay{name: "floor (1 round trip, 1 commit)", op: floorIssue(e.admin, dbFast, verifier), syncCommits: 1}
	flights[floorV.name] = flights["floor"]
	all := append([]replay{floorV}, variants...)
	for _, c := range []int{1, 16} {
		got := make([]sample, len(all))
		work := make([]dbWork, len(all))
		for range 2 { // two rounds of half the window, variants alternating
			for i, v := range all {
				if err := e.cleanup(ctx); err != nil {
					return err
				}
				if v.around != nil {
					if err := v.around(ctx, true); err != nil {
						return fmt.Errorf("%s: %w", v.name, err)
					}
				}
				if w := drive(ctx, c, r.warm/2, lots, v.op); w.n() == 0 && w.errs > 0 {
					return fmt.Errorf("%s c=%d: %w", v.name, c, w.firstErr)
				}
				r0, err := r.meter.start(ctx)
				if err != nil {
					return err
				}
				s := drive(ctx, c, r.dur/2, lots, v.op)
				if s.n() == 0 {
					return fmt.Errorf("%s c=%d: %v", v.name, c, s.firstErr)
				}
				w, err := r.meter.since(ctx, r0, s.n())
				if err != nil {
					return err
				}
				if v.around != nil {
					if err := v.around(ctx, false); err != nil {
						return fmt.Errorf("%s: %w", v.name, err)
					}
				}
				got[i].merge(s)
				work[i].add(w)
			}
		}
		floor, fw := got[0].opsPerSec(), work[0]
		for i, v := range all {
			s, w := got[i], work[i]
			if i > 0 {
				r.res.Replay = append(r.res.Replay, replayRow{Variant: v.name, Concurrency: c, P50ms: round3(ms(s.p(0.5))), P99ms: round3(ms(s.p(0.99))),
					OpsPerS: round3(s.opsPerSec()), FloorOpsPerS: round3(floor), RatioToFloor: ratio(s.opsPerSec(), floor), Flights: flights[v.name],
					SyncCommits: v.syncCommits, PgCPUUs: w.cpuUsPerOp(), FloorPgCPUUs: fw.cpuUsPerOp(), WALBytes: w.walPerOp(),
					FloorWALBytes: fw.walPerOp(), Commits: w.commitsPerOp()})
			}
			rw := row{phase: "  " + v.name, conc: cs(c), p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()),
				notes: fmt.Sprintf("%.0f round trip(s), %d synchronous commit(s); pg CPU %.0f µs/op (×%.2f), WAL %.0f B/op (×%.2f), commits %.2f",
					flights[v.name], v.syncCommits, w.cpuUsPerOp(), ratio(w.cpuUsPerOp(), fw.cpuUsPerOp()), w.walPerOp(),
					ratio(w.walPerOp(), fw.walPerOp()), w.commitsPerOp())}
			if i > 0 {
				rw.floor, rw.ratio = fmtRate(floor), fmtRatio(s.opsPerSec(), floor)
			}
			r.rows = append(r.rows, rw)
			r.step("  %s c=%d: %.0f/s p50 %s, pg CPU %.0f µs/op, WAL %.0f B/op", v.name, c, s.opsPerSec(), fmtDur(s.p(0.5)), w.cpuUsPerOp(), w.walPerOp())
		}
	}
	return nil
}

// phaseRoundTrips counts what the real broker sends to PostgreSQL per issue
// and per revoke, through the counting proxy.
func (r *runner) phaseRoundTrips(ctx context.Context) error {
	e := r.e
	if err := e.cleanup(ctx); err != nil {
		return err
	}
	proxy, err := startProxy(fmt.Sprintf("127.0.0.1:%d", e.pg.Port()))
	if err != nil {
		return err
	}
	defer proxy.ln.Close()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable",
		proxy.port(), e.pg.Database(), e.setup.AdminUser, e.setup.AdminPassword)
	rb, err := e.startBroker(ctx, dsn, nil, nil)
	if err != nil {
		return err
	}
	defer rb.close()
	var ids []string
	for i := range 35 {
		if i == 5 {
			proxy.flights.Store(0)
		}
		c, err := e.issue(ctx, rb.url, dbDefault)
		if err != nil {
			return err
		}
		ids = append(ids, c.LeaseID)
	}
	perIssue := float64(proxy.flights.Load()) / 30
	for _, id := range ids[:5] {
		if err := e.revoke(ctx, rb.url, id); err != nil {
			return err
		}
	}
	proxy.flights.Store(0)
	for _, id := range ids[5:25] {
		if err := e.revoke(ctx, rb.url, id); err != nil {
			return err
		}
	}
	perRevoke := float64(proxy.flights.Load()) / 20
	r.res.RoundTrips["broker_issue"] = perIssue
	r.res.RoundTrips["broker_revoke"] = perRevoke
	r.res.RoundTrips["floor_revoke"] = 1
	r.rows = append(r.rows, sectionRow("round trips to PostgreSQL (counting proxy between broker and server)"))
	r.rows = append(r.rows,
		row{phase: "  broker issue", notes: fmt.Sprintf("%.1f round trips per issue (floor: %.0f)", perIssue, r.res.RoundTrips["floor_issue"])},
		row{phase: "  broker revoke", notes: fmt.Sprintf("%.1f round trips per revoke (floor: 1)", perRevoke)})
	r.step("  %.1f round trips per issue, %.1f per revoke", perIssue, perRevoke)
	return nil
}

// ---------------------------------------------------------------------------
// Micro measurements that price one round trip, one commit, one connect.

func (r *runner) phaseMicro(ctx context.Context) error {
	e := r.e
	if err := e.cleanup(ctx); err != nil {
		return err
	}
	short := r.dur / 2
	one := func(name string, conc int, op func(context.Context) error) (sample, error) {
		w := drive(ctx, conc, r.warm/2, 200, op)
		if w.n() == 0 && w.errs > 0 {
			return w, fmt.Errorf("%s: %w", name, w.firstErr)
		}
		s := drive(ctx, conc, short, 5000, op)
		if s.n() == 0 {
			return s, fmt.Errorf("%s: %v", name, s.firstErr)
		}
		return s, nil
	}
	r.rows = append(r.rows, sectionRow("what one round trip, one commit and one connect cost here"))
	add := func(key, label string, conc int, s sample, notes string) {
		r.res.MicroUs[key] = map[string]float64{"p50": round3(us(s.p(0.5))), "p99": round3(us(s.p(0.99))), "ops_per_s": round3(s.opsPerSec())}
		r.rows = append(r.rows, row{phase: "  " + label, conc: cs(conc), p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()), notes: notes})
	}
	s, err := one("select 1", 1, func(ctx context.Context) error { _, err := e.admin.Exec(ctx, "SELECT 1"); return err })
	if err != nil {
		return err
	}
	add("select1_round_trip", "SELECT 1 (one loopback round trip)", 1, s, "")

	async, err := e.poolWith(ctx, 16, func(pc *pgxpool.Config) { pc.ConnConfig.RuntimeParams["synchronous_commit"] = "off" })
	if err != nil {
		return err
	}
	defer async.Close()
	for _, c := range []int{1, 16} {
		for _, v := range []struct {
			key  string
			pool *pgxpool.Pool
		}{{"on", e.admin}, {"off", async}} {
			st := lease.NewStore(v.pool, dbDefault)
			s, err := one("nonce", c, func(ctx context.Context) error {
				n, err := attest.NewNonce()
				if err != nil {
					return err
				}
				_, err = st.UseNonce(ctx, n, time.Now().Add(5*time.Minute))
				return err
			})
			if err != nil {
				return err
			}
			add("nonce_insert_commit_sync_"+v.key+"_c"+cs(c), "nonce INSERT + commit, synchronous_commit="+v.key, c, s, "")
		}
	}
	// Prepared (pgx's statement cache, its default) vs unprepared.
	for _, m := range []struct {
		key  string
		mode pgx.QueryExecMode
	}{{"cache_statement", pgx.QueryExecModeCacheStatement}, {"exec", pgx.QueryExecModeExec}, {"describe_exec", pgx.QueryExecModeDescribeExec}} {
		p, err := e.poolWith(ctx, 1, func(pc *pgxpool.Config) { pc.ConnConfig.DefaultQueryExecMode = m.mode })
		if err != nil {
			return err
		}
		ps := lease.NewStore(p, dbDefault)
		s, err := one("count live", 1, func(ctx context.Context) error { _, err := ps.CountLive(ctx, dbRole, time.Now()); return err })
		p.Close()
		if err != nil {
			return err
		}
		notes := ""
		if m.key == "cache_statement" {
			notes = "pgx default: prepared once per connection"
		}
		add("count_live_"+m.key, "CountLive query, pgx mode "+m.key, 1, s, notes)
	}
	// Connects: the admin login (SCRAM 4096, as the pool's) and a fixture
	// user's login (SCRAM 64).
	fs, err := e.makeFixtures(ctx, dbDefault, 1, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	userDSN := fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable", e.pg.Port(), e.pg.Database(), fs[0].user, fixturePassword)
	for _, v := range []struct{ key, label, dsn string }{
		{"connect_scram_4096", "connect + SCRAM login, 4096 iterations (admin)", e.adminDSN},
		{"connect_scram_64", "connect + SCRAM login, 64 iterations", userDSN},
	} {
		s, err := one(v.key, 1, func(ctx context.Context) error {
			c, err := pgx.Connect(ctx, v.dsn)
			if err != nil {
				return err
			}
			return c.Close(ctx)
		})
		if err != nil {
			return err
		}
		add(v.key, v.label, 1, s, "")
	}
	return nil
}

// phaseColdPool prices what a warm Lambda saves by keeping its broker
// (and so its pool) across invocations.
func (r *runner) phaseColdPool(ctx context.Context) error {
	e := r.e
	if err := e.cleanup(ctx); err != nil {
		return err
	}
	var news, firsts, seconds []time.Duration
	for range 3 {
		t0 := time.Now()
		rb, err := e.startBroker(ctx, e.adminDSN, nil, nil)
		if err != nil {
			return err
		}
		news = append(news, time.Since(t0))
		for i := range 2 {
			t := time.Now()
			_, err := e.issue(ctx, rb.url, dbDefault)
			if err != nil {
				rb.close()
				return err
			}
			if i == 0 {
				firsts = append(firsts, time.Since(t))
			} else {
				seconds = append(seconds, time.Since(t))
			}
		}
		rb.close()
	}
	r.res.ColdPool["broker_new_p50"] = round3(ms(percentile(news, 0.5)))
	r.res.ColdPool["first_issue_p50"] = round3(ms(percentile(firsts, 0.5)))
	r.res.ColdPool["second_issue_p50"] = round3(ms(percentile(seconds, 0.5)))
	r.rows = append(r.rows, sectionRow("a fresh broker (Lambda INIT) versus a warm one"),
		row{phase: "  broker.New (pools, migration check)", conc: "1", p50: fmtDur(percentile(news, 0.5)), notes: "n=3"},
		row{phase: "  first issue on a new broker", conc: "1", p50: fmtDur(percentile(firsts, 0.5)), notes: "n=3"},
		row{phase: "  second issue on it", conc: "1", p50: fmtDur(percentile(seconds, 0.5)), notes: "n=3"})
	return nil
}

// ---------------------------------------------------------------------------
// CPU-only: policy, proof verification, SCRAM verifiers.

func (r *runner) phaseCPU(ctx context.Context) error {
	r.rows = append(r.rows, sectionRow("policy decision, proof verification, SCRAM verifier (Go benchmarks, testing.Benchmark)"))
	for _, n := range []int{1, 100, 1000} {
		b, err := benchDecide(n, true)
		if err != nil {
			return err
		}
		k := strconv.Itoa(n)
		r.res.PolicyNsPerOp[k] = round3(b.NsPerOp)
		r.res.PolicyAllocs[k] = b.AllocsPerOp
		r.rows = append(r.rows, row{phase: fmt.Sprintf("  policy decision, %d policies", n), conc: "1", p50: fmtNs(b.NsPerOp),
			ops: fmtRate(1e9 / b.NsPerOp), published: pubPolicy, notes: fmt.Sprintf("ns/op; %d allocs/op, %d B/op", b.AllocsPerOp, b.BytesPerOp)})
	}
	if b, err := benchDecide(1000, false); err == nil {
		r.res.PolicyUnscoped["1000"] = round3(b.NsPerOp)
		r.rows = append(r.rows, row{phase: "  policy decision, 1000 unscoped policies", conc: "1", p50: fmtNs(b.NsPerOp),
			ops: fmtRate(1e9 / b.NsPerOp), published: pubPolicy, notes: fmt.Sprintf("ns/op; %d allocs/op; resource only in `when`, no index", b.AllocsPerOp)})
	} else {
		return err
	}
	v, err := benchVerify(ctx, r.e.sts, r.e.creds, r.dur/2)
	if err != nil {
		return err
	}
	r.res.VerifyNsPerOp, r.res.VerifyAllocs = round3(v.VerifyNs), round3(v.VerifyAllocs)
	r.res.VerifyLocalSTS, r.res.SignNsPerOp = round3(v.LocalSTSNs), round3(v.SignNs)
	r.rows = append(r.rows,
		row{phase: "  proof verification, STS answered in process", conc: "1", p50: fmtNs(v.VerifyNs), ops: fmtRate(1e9 / v.VerifyNs),
			notes: fmt.Sprintf("ns/op; %.0f allocs/op; in-memory nonces; n=%d", v.VerifyAllocs, v.N)},
		row{phase: "  proof verification with the local STS emulator", conc: "1", p50: fmtNs(v.LocalSTSNs), ops: fmtRate(1e9 / v.LocalSTSNs),
			notes: fmt.Sprintf("mean; loopback HTTP + the emulator's SigV4 check; n=%d", v.NLocal)},
		row{phase: "  proof signing (extension side)", conc: "1", p50: fmtNs(v.SignNs), ops: fmtRate(1e9 / v.SignNs), notes: "mean"})
	for _, it := range []int{4096, fastIters} {
		b := benchSCRAM(it)
		r.res.ScramNsPerOp[strconv.Itoa(it)] = round3(b.NsPerOp)
		r.rows = append(r.rows, row{phase: fmt.Sprintf("  SCRAM verifier in the broker, %d iterations", it), conc: "1", p50: fmtNs(b.NsPerOp),
			ops: fmtRate(1e9 / b.NsPerOp), notes: "ns/op (pgrole.SCRAMVerifier, once per issue)"})
	}
	return nil
}

// ---------------------------------------------------------------------------
// Extension: cold start, RSS, local reads, sizes.

func (r *runner) phaseExtension(ctx context.Context, bin string) error {
	e := r.e
	x := &r.res.Extension
	srv, url, err := startInstantBroker()
	if err != nil {
		return err
	}
	defer srv.Close()
	var inits []time.Duration
	var rss []int64
	const runs = 5
	for i := range runs + 1 {
		run, err := startExtension(bin, url, e.creds)
		if err != nil {
			return err
		}
		if i > 0 { // the first run warms the page cache and the loader
			inits = append(inits, run.init)
			rss = append(rss, run.rssKiB())
		}
		if i < runs {
			run.stop()
			continue
		}
		// Local reads on the last one.
		read := run.reader()
		s, err := r.measure(ctx, 1, 500, 20000, read)
		if err != nil {
			run.stop()
			return fmt.Errorf("local read: %w", err)
		}
		r.res.LocalReadUs = latencyUs{P50: round3(us(s.p(0.5))), P99: round3(us(s.p(0.99))), OpsPerS: round3(s.opsPerSec()), N: s.n()}
		s4, err := r.measure(ctx, 4, 500, 40000, read)
		if err != nil {
			run.stop()
			return fmt.Errorf("local read c=4: %w", err)
		}
		r.res.LocalReadC4 = latencyUs{P50: round3(us(s4.p(0.5))), P99: round3(us(s4.p(0.99))), OpsPerS: round3(s4.opsPerSec()), N: s4.n()}
		x.RSSKiBAfterReads = run.rssKiB()
		run.stop()
		floorRows, err := r.localReadCompare(ctx, bin, url)
		if err != nil {
			return fmt.Errorf("local read compared: %w", err)
		}
		r.rows = append(r.rows, sectionRow("extension (static, stripped, linux/"+x.Arch+"; broker answering instantly unless said)"),
			row{phase: "  local credential read over loopback", conc: "1", p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()),
				published: pubAccess, notes: fmt.Sprintf("GET 127.0.0.1/v1/credentials/orders; n=%d", s.n())},
			row{phase: "  local credential read over loopback", conc: "4", p50: fmtDur(s4.p(0.5)), p99: fmtDur(s4.p(0.99)), ops: fmtRate(s4.opsPerSec()),
				published: pubAccess, notes: fmt.Sprintf("n=%d", s4.n())})
		r.rows = append(r.rows, floorRows...)
	}
	med := percentile(inits, 0.5)
	x.InitMs = round3(ms(med))
	for _, d := range inits {
		x.InitRunsMs = append(x.InitRunsMs, round3(ms(d)))
	}
	slices.Sort(rss)
	x.RSSKiB = rss[len(rss)/2]
	r.rows = append(r.rows, row{phase: "  cold start: exec → event/next", conc: "1", p50: fmtDur(med), p99: fmtDur(slices.Max(inits)),
		notes: fmt.Sprintf("p99 = max of %d runs; register, INIT fetch, local server", runs)})

	// The same cold start against the real broker (a real issue at INIT,
	// a real revoke at SHUTDOWN).
	var real []time.Duration
	for i := range 4 {
		run, err := startExtension(bin, e.main.url, e.creds)
		if err != nil {
			return fmt.Errorf("with the real broker: %w", err)
		}
		if i > 0 {
			real = append(real, run.init)
		}
		run.stop()
	}
	x.InitMsRealBroker = round3(ms(percentile(real, 0.5)))
	for _, d := range real {
		x.InitRunsRealMs = append(x.InitRunsRealMs, round3(ms(d)))
	}
	r.rows = append(r.rows,
		row{phase: "  cold start with the real broker (scram 4096)", conc: "1", p50: fmtDur(percentile(real, 0.5)), p99: fmtDur(slices.Max(real)),
			notes: fmt.Sprintf("p99 = max of %d runs; includes one real issue", len(real))},
		row{phase: "  RSS after INIT", conc: "1", notes: fmt.Sprintf("%d KiB (after %d reads: %d KiB)", x.RSSKiB, r.res.LocalReadUs.N+r.res.LocalReadC4.N, x.RSSKiBAfterReads)},
		row{phase: "  binary, stripped", notes: fmt.Sprintf("%d bytes (%.1f MiB)", x.BinaryBytes, float64(x.BinaryBytes)/(1<<20))},
		row{phase: "  layer zip", notes: fmt.Sprintf("%d bytes (%.1f MiB), %s", x.LayerZipBytes, float64(x.LayerZipBytes)/(1<<20), "layer.WriteZip")})
	r.step("  init %s, rss %d KiB, local read p50 %.0f µs", fmtDur(med), x.RSSKiB, r.res.LocalReadUs.P50)
	return nil
}

// localReadCompare measures, with the same client and counts as the
// extension's local read, at c = 1 and 4: the extension logging each request
// (EPHEMERA_LOG_LEVEL=debug, which was its default before the access line
// moved to debug), and the floor of the protocol — net/http on loopback
// answering a fixed body — in a process of its own and in the bench's.
func (r *runner) localReadCompare(ctx context.Context, bin, brokerURL string) ([]row, error) {
	type target struct {
		key, name, notes string
		start            func() (url, token string, stop func(), err error)
	}
	targets := []target{
		{"extension_debug_log", "  the same, each request logged (EPHEMERA_LOG_LEVEL=debug)", "as the extension did before by default",
			func() (string, string, func(), error) {
				run, err := startExtension(bin, brokerURL, r.e.creds, "EPHEMERA_LOG_LEVEL=debug")
				if err != nil {
					return "", "", nil, err
				}
				return fmt.Sprintf("http://127.0.0.1:%d/v1/credentials/orders", run.port), run.token, run.stop, nil
			}},
		{"floor_process", "  floor: net/http GET over loopback, another process", "fixed answer of the same size, token compared",
			func() (string, string, func(), error) {
				url, stop, err := loopbackFloorProcess()
				return url, floorToken, stop, err
			}},
		{"floor_in_process", "  floor: net/http GET over loopback, the bench's process", "no second process to wake",
			func() (string, string, func(), error) {
				url, stop, err := loopbackFloor()
				return url, floorToken, stop, err
			}},
	}
	var rows []row
	for _, tg := range targets {
		url, token, stop, err := tg.start()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tg.key, err)
		}
		read := localReader(url, token)
		for _, c := range []int{1, 4} {
			s, err := r.measure(ctx, c, 500, 20000*c, read)
			if err != nil {
				stop()
				return nil, fmt.Errorf("%s c=%d: %w", tg.key, c, err)
			}
			r.res.LocalReadCompare[tg.key+"_c"+cs(c)] = latencyUs{P50: round3(us(s.p(0.5))), P99: round3(us(s.p(0.99))), OpsPerS: round3(s.opsPerSec()), N: s.n()}
			rows = append(rows, row{phase: tg.name, conc: cs(c), p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)),
				ops: fmtRate(s.opsPerSec()), notes: fmt.Sprintf("%s; n=%d", tg.notes, s.n())})
		}
		stop()
	}
	return rows, nil
}

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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

func (r *runner) phaseIssue(ctx context.Context, db string, iters int) error {
	e := r.e
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, iters)
	if err != nil {
		return err
	}
	brokerOp := func(ctx context.Context) error { _, err := e.issue(ctx, e.main.url, db); return err }
	var floorRows, brokerRows []row
	var stmtRow *row
	for _, c := range concurrencies {
		fl, br, err := r.pair(ctx, c, floorIssue(e.admin, db, verifier), brokerOp, func() error { return e.cleanup(ctx) })
		if err != nil {
			return fmt.Errorf("c=%d: %w", c, err)
		}
		sIssue, sVerify, sPolicy, _ := e.sink.p50s()
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
	async, err := e.poolWith(ctx, 16, func(pc *pgxpool.Config) { pc.ConnConfig.RuntimeParams["synchronous_commit"] = "off" })
	if err != nil {
		return err
	}
	defer async.Close()
	variants, err := e.replays(dbFast, e.admin, async)
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
	viaProxy := func(extra func(*pgxpool.Config)) (*pgxpool.Pool, error) {
		return e.poolWith(ctx, 2, func(pc *pgxpool.Config) {
			pc.ConnConfig.Port = uint16(proxy.port())
			if extra != nil {
				extra(pc)
			}
		})
	}
	ps, err := viaProxy(nil)
	if err != nil {
		return err
	}
	defer ps.Close()
	pa, err := viaProxy(func(pc *pgxpool.Config) { pc.ConnConfig.RuntimeParams["synchronous_commit"] = "off" })
	if err != nil {
		return err
	}
	defer pa.Close()
	counted, err := e.replays(dbFast, ps, pa)
	if err != nil {
		return err
	}
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, fastIters)
	if err != nil {
		return err
	}
	counted = append(counted, replay{"floor", floorIssue(ps, dbFast, verifier), 1}, replay{"floor per statement", floorIssueStatements(ps, dbFast, verifier), 1})
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

	r.rows = append(r.rows, sectionRow(fmt.Sprintf("the broker's issue SQL replayed through pgx, no HTTP/STS/policy (database %s, scram 64; variants alternate)", dbFast)))
	floorV := replay{"floor (1 round trip, 1 commit)", floorIssue(e.admin, dbFast, verifier), 1}
	flights[floorV.name] = flights["floor"]
	all := append([]replay{floorV}, variants...)
	for _, c := range []int{1, 16} {
		got := make([]sample, len(all))
		for range 2 { // two rounds of half the window, variants alternating
			for i, v := range all {
				if err := e.cleanup(ctx); err != nil {
					return err
				}
				if w := drive(ctx, c, r.warm/2, lots, v.op); w.n() == 0 && w.errs > 0 {
					return fmt.Errorf("%s c=%d: %w", v.name, c, w.firstErr)
				}
				s := drive(ctx, c, r.dur/2, lots, v.op)
				if s.n() == 0 {
					return fmt.Errorf("%s c=%d: %v", v.name, c, s.firstErr)
				}
				got[i].merge(s)
			}
		}
		floor := got[0].opsPerSec()
		for i, v := range all {
			s := got[i]
			if i > 0 {
				r.res.Replay = append(r.res.Replay, replayRow{Variant: v.name, Concurrency: c, P50ms: round3(ms(s.p(0.5))), P99ms: round3(ms(s.p(0.99))),
					OpsPerS: round3(s.opsPerSec()), FloorOpsPerS: round3(floor), RatioToFloor: ratio(s.opsPerSec(), floor), Flights: flights[v.name],
					SyncCommits: v.syncCommits})
			}
			rw := row{phase: "  " + v.name, conc: cs(c), p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()),
				notes: fmt.Sprintf("%.0f round trip(s), %d synchronous commit(s)", flights[v.name], v.syncCommits)}
			if i > 0 {
				rw.floor, rw.ratio = fmtRate(floor), fmtRatio(s.opsPerSec(), floor)
			}
			r.rows = append(r.rows, rw)
			r.step("  %s c=%d: %.0f/s p50 %s", v.name, c, s.opsPerSec(), fmtDur(s.p(0.5)))
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
// Revoke: floor and broker over HTTP.

func (r *runner) phaseRevoke(ctx context.Context) error {
	e := r.e
	counts := map[int]int{1: 250, 4: 400, 16: 600}
	var floorRows, brokerRows []row
	for _, c := range concurrencies {
		warmN, n := 4*c+8, counts[c]
		run := func(op func(next func() (fixture, bool)) func(context.Context) error) (sample, error) {
			if err := e.cleanup(ctx); err != nil {
				return sample{}, err
			}
			fs, err := e.makeFixtures(ctx, dbDefault, warmN+n, time.Now().Add(time.Hour))
			if err != nil {
				return sample{}, err
			}
			if _, err := e.super.Exec(ctx, "VACUUM ANALYZE ephemera.leases"); err != nil {
				return sample{}, err
			}
			return r.measure(ctx, c, warmN, n, op(queue(fs)))
		}
		fl, err := run(func(next func() (fixture, bool)) func(context.Context) error { return floorRevoke(e.admin, next) })
		if err != nil {
			return fmt.Errorf("floor c=%d: %w", c, err)
		}
		br, err := run(func(next func() (fixture, bool)) func(context.Context) error {
			return func(ctx context.Context) error {
				f, ok := next()
				if !ok {
					return errExhausted
				}
				return e.revoke(ctx, e.main.url, f.leaseID)
			}
		})
		if err != nil {
			return fmt.Errorf("broker c=%d: %w", c, err)
		}
		r.res.Revoke = append(r.res.Revoke, revokeRow{Concurrency: c, OpsPerS: round3(br.opsPerSec()), FloorOpsPerS: round3(fl.opsPerSec()),
			RatioToFloor: ratio(br.opsPerSec(), fl.opsPerSec()), P50ms: round3(ms(br.p(0.5))), P99ms: round3(ms(br.p(0.99))),
			FloorP50ms: round3(ms(fl.p(0.5))), FloorP99ms: round3(ms(fl.p(0.99))), N: br.n(), FloorN: fl.n(), Errors: br.errs + fl.errs})
		floorRows = append(floorRows, row{phase: "  floor revoke SQL, 1 round trip", conc: cs(c), p50: fmtDur(fl.p(0.5)), p99: fmtDur(fl.p(0.99)),
			ops: fmtRate(fl.opsPerSec()), notes: fmt.Sprintf("n=%d", fl.n())})
		brokerRows = append(brokerRows, row{phase: "  broker revoke, HTTP end to end", conc: cs(c), p50: fmtDur(br.p(0.5)), p99: fmtDur(br.p(0.99)),
			ops: fmtRate(br.opsPerSec()), floor: fmtRate(fl.opsPerSec()), ratio: fmtRatio(br.opsPerSec(), fl.opsPerSec()), notes: fmt.Sprintf("n=%d", br.n())})
		r.step("  c=%d floor %.0f/s, broker %.0f/s p50 %s", c, fl.opsPerSec(), br.opsPerSec(), fmtDur(br.p(0.5)))
	}
	r.rows = append(r.rows, sectionRow("revoke (terminate sessions, drop role, mark lease)"))
	r.rows = append(r.rows, floorRows...)
	r.rows = append(r.rows, brokerRows...)
	return nil
}

// ---------------------------------------------------------------------------
// Reaper.

// expire makes the fixture leases of db expire at t.
func (e *env) expire(ctx context.Context, db string, ids []fixture, t time.Time) error {
	list := make([]string, len(ids))
	for i, f := range ids {
		list[i] = f.leaseID
	}
	_, err := e.admin.Exec(ctx, `UPDATE ephemera.leases SET expires_at = $1 WHERE database = $2 AND lease_id = ANY($3::uuid[])`, t, db, list)
	return err
}

// reapAll runs the broker's reaper batch by batch (100 leases per
// transaction, as a scheduled run does) until total leases are revoked, a
// batch comes back short, or capDur passes. The lag of each lease is the
// time from its expiry to the commit of its batch.
func (e *env) reapAll(ctx context.Context, db string, total int, expiredAt time.Time, capDur time.Duration) (reapResult, error) {
	rp := e.main.b.Reaper()
	res := reapResult{Leases: total}
	var lags []time.Duration
	start := time.Now()
	for res.Revoked+res.Failed < total && time.Since(start) < capDur && ctx.Err() == nil {
		s, err := rp.Reap(ctx, db, 100)
		if err != nil {
			return res, err
		}
		done := time.Now()
		for range s.Revoked {
			lags = append(lags, done.Sub(expiredAt))
		}
		res.Revoked += s.Revoked
		res.Failed += s.Failed
		if len(s.Errors) > 0 && res.FirstError == "" {
			res.FirstError = s.Errors[0]
		}
		if s.Revoked+s.Failed < 100 {
			break
		}
	}
	el := time.Since(start)
	res.Seconds = round3(el.Seconds())
	res.RevokedPerS = round3(float64(res.Revoked) / el.Seconds())
	slices.Sort(lags)
	if len(lags) > 0 {
		res.LagP50ms = round3(ms(percentile(lags, 0.5)))
		res.LagP99ms = round3(ms(percentile(lags, 0.99)))
		res.LagMaxms = round3(ms(lags[len(lags)-1]))
	}
	res.Complete = res.Revoked == total
	res.LagDescription = "expiry of all leases at once → commit of the batch that revoked each, reaper started at expiry"
	return res, nil
}

func reapRow(label string, res reapResult, notes string) row {
	d := func(v float64) string { return fmtDur(time.Duration(v * 1e6)) }
	if !res.Complete {
		notes += fmt.Sprintf(" INCOMPLETE: %d of %d within the time cap", res.Revoked, res.Leases)
	}
	return row{phase: "  " + label, conc: "1", p50: d(res.LagP50ms), p99: d(res.LagP99ms), ops: fmtRate(res.RevokedPerS),
		notes: fmt.Sprintf("p50/p99 = reap lag; %d revoked in %.2f s%s", res.Revoked, res.Seconds, notes)}
}

func (r *runner) phaseReaper(ctx context.Context) error {
	e := r.e
	const n, warmN, sessions = 1000, 100, 100
	run := func(withSessions bool) (reapResult, error) {
		if err := e.cleanup(ctx); err != nil {
			return reapResult{}, err
		}
		fs, err := e.makeFixtures(ctx, dbDefault, warmN+n, time.Now().Add(time.Hour))
		if err != nil {
			return reapResult{}, err
		}
		if _, err := e.super.Exec(ctx, "VACUUM ANALYZE ephemera.leases"); err != nil {
			return reapResult{}, err
		}
		// Warm up on 100 of them.
		if err := e.expire(ctx, dbDefault, fs[:warmN], time.Now()); err != nil {
			return reapResult{}, err
		}
		if _, err := e.reapAll(ctx, dbDefault, warmN, time.Now(), 30*time.Second); err != nil {
			return reapResult{}, err
		}
		fs = fs[warmN:]
		var conns []*pgx.Conn
		defer func() {
			for _, c := range conns {
				cctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = c.Close(cctx)
				cancel()
			}
		}()
		if withSessions {
			for _, f := range fs[:sessions] {
				c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable",
					e.pg.Port(), e.pg.Database(), f.user, fixturePassword))
				if err != nil {
					return reapResult{}, fmt.Errorf("session: %w", err)
				}
				conns = append(conns, c)
			}
		}
		t0 := time.Now()
		if err := e.expire(ctx, dbDefault, fs, t0); err != nil {
			return reapResult{}, err
		}
		res, err := e.reapAll(ctx, dbDefault, n, t0, 60*time.Second)
		if withSessions {
			res.Sessions = len(conns)
		}
		return res, err
	}
	plain, err := run(false)
	if err != nil {
		return err
	}
	r.res.Reaper["batch_1000_no_sessions"] = plain
	r.res.Reap1000S = plain.Seconds
	r.step("  1000 without sessions: %.2f s (%.0f/s)", plain.Seconds, plain.RevokedPerS)
	withS, err := run(true)
	if err != nil {
		return err
	}
	r.res.Reaper["batch_1000_with_sessions"] = withS
	r.step("  1000 with %d live sessions: %.2f s (%.0f/s)", withS.Sessions, withS.Seconds, withS.RevokedPerS)
	extra := ""
	if withS.Sessions > 0 {
		perSession := (withS.Seconds - plain.Seconds) / float64(withS.Sessions)
		r.res.Reaper["extra_ms_per_session"] = round3(perSession * 1000)
		extra = fmt.Sprintf("; ≈%.2f ms more per live session", perSession*1000)
	}
	r.rows = append(r.rows, sectionRow("reaper, 1,000 expired leases (batches of 100, one transaction each)"),
		reapRow("reap 1,000, no live sessions", plain, ""),
		reapRow(fmt.Sprintf("reap 1,000, %d with a live session", withS.Sessions), withS, extra))

	// Ending sessions: one by one with a timeout (as TerminateSessions does
	// per lease) versus all of a batch at once, then waiting once.
	seq, all, k, err := r.terminateVariants(ctx)
	if err != nil {
		return err
	}
	r.res.Reaper["terminate_one_by_one_ms_per_session"] = round3(ms(seq))
	r.res.Reaper["terminate_all_then_wait_ms_total"] = round3(ms(all))
	r.res.Reaper["terminate_all_then_wait_sessions"] = k
	r.rows = append(r.rows,
		row{phase: "  pg_terminate_backend(pid, 5000), one by one", conc: "1", p50: fmtDur(seq), notes: "per session (PostgreSQL polls every 100 ms)"},
		row{phase: fmt.Sprintf("  pg_terminate_backend(pid) × %d, then poll until gone", k), conc: "1", p50: fmtDur(all), notes: "for all of them together"})
	return nil
}

// terminateVariants opens sessions as fixture users and ends them two ways.
func (r *runner) terminateVariants(ctx context.Context) (perSession, allTogether time.Duration, n int, err error) {
	e := r.e
	const k = 50
	if err := e.cleanup(ctx); err != nil {
		return 0, 0, 0, err
	}
	fs, err := e.makeFixtures(ctx, dbDefault, k+10, time.Now().Add(time.Hour))
	if err != nil {
		return 0, 0, 0, err
	}
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_ = c.Close(cctx)
			cancel()
		}
	}()
	connect := func(fs []fixture) ([]string, error) {
		var users []string
		for _, f := range fs {
			c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s password=%s sslmode=disable",
				e.pg.Port(), e.pg.Database(), f.user, fixturePassword))
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
			users = append(users, f.user)
		}
		return users, nil
	}
	// One by one, 10 sessions.
	users, err := connect(fs[:10])
	if err != nil {
		return 0, 0, 0, err
	}
	t0 := time.Now()
	for _, u := range users {
		if err := lease.TerminateSessions(ctx, e.admin, u); err != nil {
			return 0, 0, 0, err
		}
	}
	perSession = time.Since(t0) / time.Duration(len(users))
	// All at once, k sessions.
	if users, err = connect(fs[10:]); err != nil {
		return 0, 0, 0, err
	}
	t0 = time.Now()
	if _, err := e.admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)`, users); err != nil {
		return 0, 0, 0, err
	}
	for time.Since(t0) < 5*time.Second {
		var left int
		if err := e.admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1)`, users).Scan(&left); err != nil {
			return 0, 0, 0, err
		}
		if left == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return perSession, time.Since(t0), len(users), nil
}

// ---------------------------------------------------------------------------
// Scale: 10,000 live leases, then 10,000 expired ones.

func (r *runner) phaseScale(ctx context.Context) error {
	e := r.e
	const big = 10000
	db := dbFast
	sc := &r.res.Scale
	sc.Database, sc.ScramIterations = db, fastIters
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, fastIters)
	if err != nil {
		return err
	}
	brokerOp := func(ctx context.Context) error { _, err := e.issue(ctx, e.main.url, db); return err }
	floorOp := floorIssue(e.admin, db, verifier)
	st := lease.NewStore(e.admin, db)
	countOp := func(ctx context.Context) error { _, err := st.CountLive(ctx, dbRole, time.Now()); return err }
	concs := []int{1, 16}
	// measureAll measures the broker at concs and the floor at c=1.
	// Each measurement starts from the fixtures alone.
	measureAll := func(label string) (map[int]sample, sample, error) {
		out := map[int]sample{}
		for _, c := range concs {
			if err := e.cleanupKeep(ctx, fixtureRequestID); err != nil {
				return nil, sample{}, err
			}
			s, err := r.measure(ctx, c, lots, lots, brokerOp)
			if err != nil {
				return nil, sample{}, fmt.Errorf("%s c=%d: %w", label, c, err)
			}
			out[c] = s
		}
		if err := e.cleanupKeep(ctx, fixtureRequestID); err != nil {
			return nil, sample{}, err
		}
		fl, err := r.measure(ctx, 1, lots, lots, floorOp)
		if err != nil {
			return nil, sample{}, fmt.Errorf("%s floor: %w", label, err)
		}
		return out, fl, e.cleanupKeep(ctx, fixtureRequestID)
	}
	if err := e.cleanup(ctx); err != nil {
		return err
	}
	if s, err := r.measure(ctx, 1, 200, 2000, countOp); err == nil {
		sc.CountLiveUs0 = round3(us(s.p(0.5)))
	}
	base, baseFloor, err := measureAll("0 leases")
	if err != nil {
		return err
	}
	// 10,000 live leases of the same database and role (the worst case:
	// the max_leases count reads all of them).
	if err := e.cleanup(ctx); err != nil {
		return err
	}
	t0 := time.Now()
	fs, err := e.makeFixtures(ctx, db, big, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	sc.FixtureSeconds = round3(time.Since(t0).Seconds())
	r.step("  %d live leases (and roles) created in %.1f s", big, sc.FixtureSeconds)
	if _, err := e.super.Exec(ctx, "VACUUM ANALYZE ephemera.leases"); err != nil {
		return err
	}
	if s, err := r.measure(ctx, 1, 200, 2000, countOp); err == nil {
		sc.CountLiveUs10k = round3(us(s.p(0.5)))
	}
	same, sameFloor, err := measureAll("same role")
	if err != nil {
		return err
	}
	if sc.CountLiveVariantsUs["same_role"], err = r.countVariants(ctx, db); err != nil {
		return err
	}
	// The same 10,000 leases (and roles) moved to another database.
	if _, err := e.admin.Exec(ctx, `UPDATE ephemera.leases SET database = $1 WHERE request_id = $2`, dbDefault, fixtureRequestID); err != nil {
		return err
	}
	if _, err := e.super.Exec(ctx, "VACUUM ANALYZE ephemera.leases"); err != nil {
		return err
	}
	other, _, err := measureAll("other database")
	if err != nil {
		return err
	}
	if sc.CountLiveVariantsUs["other_database"], err = r.countVariants(ctx, db); err != nil {
		return err
	}
	sc.FloorP50ms0, sc.FloorP50ms10k = round3(ms(baseFloor.p(0.5))), round3(ms(sameFloor.p(0.5)))
	sc.FloorRatioP50 = ratio(float64(sameFloor.p(0.5)), float64(baseFloor.p(0.5)))
	r.rows = append(r.rows, sectionRow(fmt.Sprintf("scale: issue with 0 vs %d live leases (database %s, scram 64); no assertion, budget p50 ×1.20", big, db)))
	for _, c := range concs {
		b, s, o := base[c], same[c], other[c]
		sr := scaleRow{Concurrency: c, P50ms0: round3(ms(b.p(0.5))), P99ms0: round3(ms(b.p(0.99))), P50ms10k: round3(ms(s.p(0.5))),
			P99ms10k: round3(ms(s.p(0.99))), OpsPerS0: round3(b.opsPerSec()), OpsPerS10k: round3(s.opsPerSec()),
			RatioP50:      ratio(float64(s.p(0.5)), float64(b.p(0.5))),
			P50ms10kOther: round3(ms(o.p(0.5))), RatioP50Other: ratio(float64(o.p(0.5)), float64(b.p(0.5)))}
		sc.Issue = append(sc.Issue, sr)
		r.rows = append(r.rows,
			row{phase: "  broker issue, 0 live leases", conc: cs(c), p50: fmtDur(b.p(0.5)), p99: fmtDur(b.p(0.99)), ops: fmtRate(b.opsPerSec())},
			row{phase: fmt.Sprintf("  broker issue, %d of the same role", big), conc: cs(c), p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()),
				notes: fmt.Sprintf("p50 ×%.2f", sr.RatioP50)},
			row{phase: fmt.Sprintf("  broker issue, %d in another database", big), conc: cs(c), p50: fmtDur(o.p(0.5)), p99: fmtDur(o.p(0.99)), ops: fmtRate(o.opsPerSec()),
				notes: fmt.Sprintf("p50 ×%.2f (roles still exist)", sr.RatioP50Other)})
		r.step("  c=%d p50 %s → same role %s (×%.2f), other db %s (×%.2f)", c, fmtDur(b.p(0.5)), fmtDur(s.p(0.5)), sr.RatioP50, fmtDur(o.p(0.5)), sr.RatioP50Other)
	}
	r.rows = append(r.rows,
		row{phase: "  floor issue SQL, 0 → 10000 roles", conc: "1", p50: fmtDur(sameFloor.p(0.5)), p99: fmtDur(sameFloor.p(0.99)), ops: fmtRate(sameFloor.opsPerSec()),
			notes: fmt.Sprintf("p50 %s at 0 (×%.2f): the catalog's share", fmtDur(baseFloor.p(0.5)), sc.FloorRatioP50)},
		row{phase: "  CountLive (the max_leases count)", conc: "1",
			notes: fmt.Sprintf("p50 %.0f µs at 0 leases, %.0f µs at %d of the role", sc.CountLiveUs0, sc.CountLiveUs10k, big)})
	for _, where := range []string{"same_role", "other_database"} {
		v := sc.CountLiveVariantsUs[where]
		r.rows = append(r.rows, row{phase: "  CountLive, 10000 leases in the " + strings.ReplaceAll(where, "_", " "), conc: "1",
			notes: fmt.Sprintf("p50 µs: as run %.0f; generic plan %.0f; custom plan %.0f; LIMIT 500 %.0f; +index (database, db_role, expires_at): generic %.0f, custom %.0f",
				v["prepared_auto"], v["generic_plan"], v["custom_plan"], v["capped_at_500"], v["index_generic_plan"], v["index_custom_plan"])})
	}
	// Now all of them expire at once.
	t := time.Now()
	if err := e.expire(ctx, dbDefault, fs, t); err != nil {
		return err
	}
	res, err := e.reapAll(ctx, dbDefault, big, t, 90*time.Second)
	if err != nil {
		return err
	}
	res.SetupSeconds = sc.FixtureSeconds
	sc.Reap10000 = res
	r.rows = append(r.rows, reapRow(fmt.Sprintf("reap %d expired leases", big), res, ""))
	r.step("  reaped %d in %.1f s (%.0f/s)", res.Revoked, res.Seconds, res.RevokedPerS)
	return e.cleanup(ctx)
}

// countVariants prices the max_leases count on the current table: as the
// broker runs it (pgx prepares it; plan_cache_mode auto lets PostgreSQL
// switch to a generic plan after five runs), with the generic plan forced
// (what auto may pick), with custom plans forced, capped at max_leases (here
// 500), and with an index on (database, db_role, expires_at) that is
// dropped again afterwards.
func (r *runner) countVariants(ctx context.Context, db string) (map[string]float64, error) {
	e := r.e
	out := map[string]float64{}
	pools := map[string]*pgxpool.Pool{}
	for _, mode := range []string{"auto", "force_generic_plan", "force_custom_plan"} {
		p, err := e.poolWith(ctx, 1, func(pc *pgxpool.Config) { pc.ConnConfig.RuntimeParams["plan_cache_mode"] = mode })
		if err != nil {
			return nil, err
		}
		defer p.Close()
		pools[mode] = p
	}
	count := func(p *pgxpool.Pool) func(context.Context) error {
		st := lease.NewStore(p, db)
		return func(ctx context.Context) error { _, err := st.CountLive(ctx, dbRole, time.Now()); return err }
	}
	capped := func(ctx context.Context) error {
		var n int
		return pools["auto"].QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM ephemera.leases
			WHERE database = $1 AND db_role = $2 AND revoked_at IS NULL AND expires_at > $3 LIMIT 500) s`, db, dbRole, time.Now()).Scan(&n)
	}
	run := func(key string, op func(context.Context) error) error {
		s, err := r.measure(ctx, 1, 50, 1000, op)
		if err != nil {
			return fmt.Errorf("count %s: %w", key, err)
		}
		out[key] = round3(us(s.p(0.5)))
		return nil
	}
	for _, v := range []struct {
		key string
		op  func(context.Context) error
	}{
		{"prepared_auto", count(pools["auto"])},
		{"generic_plan", count(pools["force_generic_plan"])},
		{"custom_plan", count(pools["force_custom_plan"])},
		{"capped_at_500", capped},
	} {
		if err := run(v.key, v.op); err != nil {
			return nil, err
		}
	}
	if _, err := e.super.Exec(ctx, `CREATE INDEX bench_live_by_role_expiry ON ephemera.leases (database, db_role, expires_at) WHERE revoked_at IS NULL`); err != nil {
		return nil, err
	}
	defer e.super.Exec(context.WithoutCancel(ctx), `DROP INDEX IF EXISTS ephemera.bench_live_by_role_expiry`) //nolint:errcheck
	if _, err := e.super.Exec(ctx, `ANALYZE ephemera.leases`); err != nil {
		return nil, err
	}
	if err := run("index_generic_plan", count(pools["force_generic_plan"])); err != nil {
		return nil, err
	}
	if err := run("index_custom_plan", count(pools["force_custom_plan"])); err != nil {
		return nil, err
	}
	return out, nil
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
		r.rows = append(r.rows, sectionRow("extension (static, stripped, linux/"+x.Arch+"; broker answering instantly unless said)"),
			row{phase: "  local credential read over loopback", conc: "1", p50: fmtDur(s.p(0.5)), p99: fmtDur(s.p(0.99)), ops: fmtRate(s.opsPerSec()),
				published: pubAccess, notes: fmt.Sprintf("GET 127.0.0.1/v1/credentials/orders; n=%d", s.n())},
			row{phase: "  local credential read over loopback", conc: "4", p50: fmtDur(s4.p(0.5)), p99: fmtDur(s4.p(0.99)), ops: fmtRate(s4.opsPerSec()),
				published: pubAccess, notes: fmt.Sprintf("n=%d", s4.n())})
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

package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/lease"
)

// ---------------------------------------------------------------------------
// Revoke: floor and broker over HTTP.

// phaseRevoke measures floor and broker revocations of fixture leases of
// database db (whose scram_iterations is iters) at concs; setting, when not
// empty, names the measurement (the pinned run).
func (r *runner) phaseRevoke(ctx context.Context, db string, iters int, concs []int, setting string) error {
	e := r.e
	label := ""
	if setting == "" {
		setting = "scram_" + cs(iters)
	} else {
		label = "pinned: "
	}
	counts := map[int]int{1: 250, 4: 400, 16: 600}
	var floorRows, brokerRows []row
	for _, c := range concs {
		warmN, n := 4*c+8, counts[c]
		run := func(op func(next func() (fixture, bool)) func(context.Context) error) (sample, dbWork, error) {
			if err := e.cleanup(ctx); err != nil {
				return sample{}, dbWork{}, err
			}
			fs, err := e.makeFixtures(ctx, db, warmN+n, time.Now().Add(time.Hour))
			if err != nil {
				return sample{}, dbWork{}, err
			}
			if err := e.analyzeLeases(ctx); err != nil {
				return sample{}, dbWork{}, err
			}
			return r.measureW(ctx, c, warmN, n, op(queue(fs)))
		}
		fl, wf, err := run(func(next func() (fixture, bool)) func(context.Context) error { return floorRevoke(e.admin, next) })
		if err != nil {
			return fmt.Errorf("floor c=%d: %w", c, err)
		}
		br, wb, err := run(func(next func() (fixture, bool)) func(context.Context) error {
			return func(ctx context.Context) error {
				f, ok := next()
				if !ok {
					return errExhausted
				}
				return e.revoke(ctx, e.brokerFor(db), f.leaseID)
			}
		})
		if err != nil {
			return fmt.Errorf("broker c=%d: %w", c, err)
		}
		r.recordWork(setting, c, "revoke", wf, wb, fl.opsPerSec(), br.opsPerSec())
		rr := revokeRow{Concurrency: c, OpsPerS: round3(br.opsPerSec()), FloorOpsPerS: round3(fl.opsPerSec()),
			RatioToFloor: ratio(br.opsPerSec(), fl.opsPerSec()), P50ms: round3(ms(br.p(0.5))), P99ms: round3(ms(br.p(0.99))),
			FloorP50ms: round3(ms(fl.p(0.5))), FloorP99ms: round3(ms(fl.p(0.99))), N: br.n(), FloorN: fl.n(), Errors: br.errs + fl.errs,
			Setting: setting}
		if db == dbDefault && label == "" {
			r.res.Revoke = append(r.res.Revoke, rr)
		} else {
			r.res.RevokeOther = append(r.res.RevokeOther, rr)
		}
		floorRows = append(floorRows, row{phase: "  " + label + "floor revoke SQL, 1 round trip", conc: cs(c), p50: fmtDur(fl.p(0.5)), p99: fmtDur(fl.p(0.99)),
			ops: fmtRate(fl.opsPerSec()), notes: fmt.Sprintf("n=%d", fl.n())})
		brokerRows = append(brokerRows, row{phase: "  " + label + "broker revoke, HTTP end to end", conc: cs(c), p50: fmtDur(br.p(0.5)), p99: fmtDur(br.p(0.99)),
			ops: fmtRate(br.opsPerSec()), floor: fmtRate(fl.opsPerSec()), ratio: fmtRatio(br.opsPerSec(), fl.opsPerSec()), notes: fmt.Sprintf("n=%d", br.n())})
		r.step("  %sc=%d floor %.0f/s, broker %.0f/s p50 %s", label, c, fl.opsPerSec(), br.opsPerSec(), fmtDur(br.p(0.5)))
	}
	if label == "" {
		r.rows = append(r.rows, sectionRow(fmt.Sprintf("revoke (terminate sessions, drop role, mark lease), database %s", db)))
	}
	r.rows = append(r.rows, floorRows...)
	r.rows = append(r.rows, brokerRows...)
	return nil
}

// phasePinned runs issue (c = 4, 16) and revoke (c = 16) with PostgreSQL
// pinned to one core and everything else to the other: a stand-in for a
// database on a machine of its own, where the broker's CPU does not compete
// with the server's.
func (r *runner) phasePinned(ctx context.Context) (err error) {
	p, err := newPinning(r.meter, runtime.NumCPU())
	if err != nil {
		return err
	}
	if err := p.pin(); err != nil {
		return errors.Join(err, p.undo())
	}
	defer func() { err = errors.Join(err, p.undo()) }()
	r.res.Meta["pinned"] = fmt.Sprintf("PostgreSQL on CPU %s, the bench (driver, broker, STS emulator) on CPUs %s", p.pgCPU, p.oth)
	r.rows = append(r.rows, sectionRow("pinned: PostgreSQL on CPU 0, driver + broker + STS emulator on CPU 1 (database "+dbDefault+", scram 4096)"))
	if err := r.phaseIssue(ctx, dbDefault, 4096, "pinned_scram_4096"); err != nil {
		return err
	}
	return r.phaseRevoke(ctx, dbDefault, 4096, []int{16}, "pinned_scram_4096")
}

// ---------------------------------------------------------------------------
// Reaper.

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
		if err := e.analyzeLeases(ctx); err != nil {
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

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

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
	brokerOp := func(ctx context.Context) error { _, err := e.issue(ctx, e.brokerFor(db), db); return err }
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
	if err := e.analyzeLeases(ctx); err != nil {
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
	if err := e.moveFixtures(ctx, dbDefault); err != nil {
		return err
	}
	if err := e.analyzeLeases(ctx); err != nil {
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
			notes: fmt.Sprintf("p50 µs: as run %.0f; generic plan %.0f; custom plan %.0f; LIMIT 500 %.0f",
				v["prepared_auto"], v["generic_plan"], v["custom_plan"], v["capped_at_500"])})
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
// (what auto may pick), with custom plans forced, and capped at max_leases
// (here 500).
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
	capped := func(ctx context.Context) error { return countLiveCapped(ctx, pools["auto"], db) }
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
	return out, nil
}

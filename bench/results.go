package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// The shape of bench/results.json. The keys the issue asks for come first;
// everything after them is extra evidence.

type issueRow struct {
	Concurrency     int     `json:"concurrency"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms"`
	OpsPerS         float64 `json:"ops_per_s"`
	FloorOpsPerS    float64 `json:"floor_ops_per_s"`
	FloorP50ms      float64 `json:"floor_p50_ms"`
	RatioToFloor    float64 `json:"ratio_to_floor"`
	FloorP99ms      float64 `json:"floor_p99_ms"`
	ScramIterations int     `json:"scram_iterations"`
	// The broker's own timing (its EMF metrics), medians: verify → lease
	// committed; verify alone (nonce insert, STS call, checks); policy.
	ServerIssueP50ms  float64 `json:"server_issue_p50_ms"`
	ServerVerifyP50ms float64 `json:"server_verify_p50_ms"`
	ServerPolicyP50us float64 `json:"server_policy_p50_us"`
	N                 int     `json:"n"`
	FloorN            int     `json:"floor_n"`
	Errors            int     `json:"errors"`
}

type revokeRow struct {
	Concurrency  int     `json:"concurrency"`
	OpsPerS      float64 `json:"ops_per_s"`
	FloorOpsPerS float64 `json:"floor_ops_per_s"`
	RatioToFloor float64 `json:"ratio_to_floor"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	FloorP50ms   float64 `json:"floor_p50_ms"`
	FloorP99ms   float64 `json:"floor_p99_ms"`
	N            int     `json:"n"`
	FloorN       int     `json:"floor_n"`
	Errors       int     `json:"errors"`
	Setting      string  `json:"setting,omitempty"`
}

type extensionResult struct {
	InitMs           float64   `json:"init_ms"`
	RSSKiB           int64     `json:"rss_kib"`
	BinaryBytes      int64     `json:"binary_bytes"`
	LayerZipBytes    int64     `json:"layer_zip_bytes"`
	Arch             string    `json:"arch,omitempty"`
	Packaging        string    `json:"packaging,omitempty"`
	InitRunsMs       []float64 `json:"init_runs_ms,omitempty"`
	RSSKiBAfterReads int64     `json:"rss_kib_after_reads,omitempty"`
	InitMsRealBroker float64   `json:"init_ms_real_broker,omitempty"`
	InitRunsRealMs   []float64 `json:"init_runs_real_broker_ms,omitempty"`
}

type latencyUs struct {
	P50     float64 `json:"p50"`
	P99     float64 `json:"p99"`
	OpsPerS float64 `json:"ops_per_s,omitempty"`
	N       int     `json:"n,omitempty"`
}

type reapResult struct {
	Leases         int     `json:"leases"`
	Sessions       int     `json:"sessions"`
	Revoked        int     `json:"revoked"`
	Failed         int     `json:"failed"`
	Seconds        float64 `json:"seconds"`
	RevokedPerS    float64 `json:"revoked_per_s"`
	LagP50ms       float64 `json:"lag_p50_ms"`
	LagP99ms       float64 `json:"lag_p99_ms"`
	LagMaxms       float64 `json:"lag_max_ms"`
	Complete       bool    `json:"complete"`
	SetupSeconds   float64 `json:"setup_s,omitempty"`
	FirstError     string  `json:"first_error,omitempty"`
	LagDescription string  `json:"lag_is,omitempty"`
}

type scaleRow struct {
	Concurrency int     `json:"concurrency"`
	P50ms0      float64 `json:"p50_ms_0_leases"`
	P99ms0      float64 `json:"p99_ms_0_leases"`
	P50ms10k    float64 `json:"p50_ms_10000_leases"`
	P99ms10k    float64 `json:"p99_ms_10000_leases"`
	OpsPerS0    float64 `json:"ops_per_s_0_leases"`
	OpsPerS10k  float64 `json:"ops_per_s_10000_leases"`
	RatioP50    float64 `json:"ratio_p50"`
	// The same 10,000 leases in another database (their roles still exist).
	P50ms10kOther float64 `json:"p50_ms_10000_leases_other_database"`
	RatioP50Other float64 `json:"ratio_p50_other_database"`
}

type scaleResult struct {
	Database        string     `json:"database"`
	ScramIterations int        `json:"scram_iterations"`
	Issue           []scaleRow `json:"issue"`
	CountLiveUs0    float64    `json:"count_live_p50_us_0_leases"`
	CountLiveUs10k  float64    `json:"count_live_p50_us_10000_leases"`
	// The count four ways (see countVariants), p50 µs, by where the 10,000 leases are.
	CountLiveVariantsUs map[string]map[string]float64 `json:"count_live_variants_p50_us"`
	FixtureSeconds      float64                       `json:"fixtures_10000_s"`
	FloorP50ms0         float64                       `json:"floor_p50_ms_0_roles"`
	FloorP50ms10k       float64                       `json:"floor_p50_ms_10000_roles"`
	FloorRatioP50       float64                       `json:"floor_ratio_p50"`
	Reap10000           reapResult                    `json:"reap_10000"`
}

type replayRow struct {
	Variant      string  `json:"variant"`
	Concurrency  int     `json:"concurrency"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	OpsPerS      float64 `json:"ops_per_s"`
	FloorOpsPerS float64 `json:"floor_ops_per_s"`
	RatioToFloor float64 `json:"ratio_to_floor"`
	Flights      float64 `json:"round_trips_per_op"`
	SyncCommits  int     `json:"synchronous_commits_per_op"`
	// The database's work per operation (see dbMeter), and the floor's.
	PgCPUUs       float64 `json:"pg_cpu_us_per_op"`
	FloorPgCPUUs  float64 `json:"floor_pg_cpu_us_per_op"`
	WALBytes      float64 `json:"wal_bytes_per_op"`
	FloorWALBytes float64 `json:"floor_wal_bytes_per_op"`
	Commits       float64 `json:"commits_per_op"`
}

// workPair is one figure of the database's work per operation, for the
// floor and for the broker.
type workPair struct {
	Floor  float64 `json:"floor"`
	Broker float64 `json:"broker"`
}

// workOps holds a figure for issue and revoke.
type workOps struct {
	Issue  *workPair `json:"issue,omitempty"`
	Revoke *workPair `json:"revoke,omitempty"`
}

// workTable is setting ("scram_4096", "scram_64", "pinned_scram_4096") →
// concurrency ("c1", "c4", "c16") → operation → floor/broker.
type workTable map[string]map[string]*workOps

func (t workTable) set(setting string, conc int, op string, p workPair) {
	if t[setting] == nil {
		t[setting] = map[string]*workOps{}
	}
	k := "c" + cs(conc)
	if t[setting][k] == nil {
		t[setting][k] = &workOps{}
	}
	if op == "issue" {
		t[setting][k].Issue = &p
	} else {
		t[setting][k].Revoke = &p
	}
}

type results struct {
	// The database's work per operation (see dbMeter): server CPU, WAL and
	// write commits; xact_commits_per_op is pg_stat_database's count.
	PgCPUUsPerOp   workTable          `json:"pg_cpu_us_per_op"`
	WALBytesPerOp  workTable          `json:"wal_bytes_per_op"`
	CommitsPerOp   workTable          `json:"commits_per_op"`
	XactCommits    workTable          `json:"xact_commits_per_op"`
	Throughput     workTable          `json:"ops_per_s"`
	Issue          []issueRow         `json:"issue"`
	Revoke         []revokeRow        `json:"revoke"`
	RevokeOther    []revokeRow        `json:"revoke_other"`
	PolicyNsPerOp  map[string]float64 `json:"policy_ns_per_op"`
	LocalReadUs    latencyUs          `json:"local_read_us"`
	Extension      extensionResult    `json:"extension"`
	Reap1000S      float64            `json:"reap_1000_s"`
	PolicyAllocs   map[string]int64   `json:"policy_allocs_per_op"`
	PolicyUnscoped map[string]float64 `json:"policy_unscoped_ns_per_op"`
	VerifyNsPerOp  float64            `json:"verify_ns_per_op"`
	VerifyAllocs   float64            `json:"verify_allocs_per_op"`
	VerifyLocalSTS float64            `json:"verify_with_local_sts_ns_per_op"`
	SignNsPerOp    float64            `json:"sign_proof_ns_per_op"`
	ScramNsPerOp   map[string]float64 `json:"scram_verifier_ns_per_op"`
	IssueScram     []issueRow         `json:"issue_scram"`
	LocalReadC4    latencyUs          `json:"local_read_us_c4"`
	// LocalReadCompare: the local read's comparisons, by "<what>_c<N>":
	// extension_debug_log (each request logged), floor_process and
	// floor_in_process (net/http on loopback answering a fixed body).
	LocalReadCompare map[string]latencyUs `json:"local_read_compare_us"`
	Reaper           map[string]any       `json:"reaper"`
	Scale            scaleResult          `json:"scale"`
	Replay           []replayRow          `json:"sql_replay"`
	RoundTrips       map[string]float64   `json:"round_trips_per_op"`
	MicroUs          map[string]any       `json:"micro_us"`
	ColdPool         map[string]float64   `json:"cold_pool_ms"`
	Meta             map[string]any       `json:"meta"`
	Errors           []string             `json:"errors,omitempty"`
}

func newResults() *results {
	return &results{
		PolicyNsPerOp: map[string]float64{}, PolicyAllocs: map[string]int64{}, PolicyUnscoped: map[string]float64{},
		ScramNsPerOp: map[string]float64{}, Reaper: map[string]any{}, RoundTrips: map[string]float64{},
		MicroUs: map[string]any{}, ColdPool: map[string]float64{}, Meta: map[string]any{},
		Scale:        scaleResult{CountLiveVariantsUs: map[string]map[string]float64{}},
		PgCPUUsPerOp: workTable{}, WALBytesPerOp: workTable{}, CommitsPerOp: workTable{}, XactCommits: workTable{},
		Throughput: workTable{}, LocalReadCompare: map[string]latencyUs{},
	}
}

// ---------------------------------------------------------------------------
// The printed table.

type row struct {
	phase, conc, p50, p99, ops, floor, ratio, published, notes string
}

func sectionRow(title string) row { return row{phase: title} }

// fmtDur prints a duration with a unit that keeps 3 significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", us(d))
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", ms(d))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func fmtNs(ns float64) string { return fmtDur(time.Duration(math.Round(ns))) }

func fmtRate(r float64) string {
	switch {
	case r <= 0:
		return "-"
	case r >= 100000:
		return fmt.Sprintf("%.3g M", r/1e6)
	case r >= 100:
		return fmt.Sprintf("%.0f", r)
	}
	return fmt.Sprintf("%.1f", r)
}

func fmtRatio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func printTable(w io.Writer, rows []row) {
	head := row{"phase", "c", "p50", "p99", "ops/s", "floor ops/s", "ratio", "published", "notes"}
	all := append([]row{head}, rows...)
	width := make([]int, 8)
	for _, r := range all {
		if r.conc == "" && r.p50 == "" && r.ops == "" && r.notes == "" && r.published == "" {
			continue // section titles do not set widths
		}
		for i, c := range []string{r.phase, r.conc, r.p50, r.p99, r.ops, r.floor, r.ratio, r.published} {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	pad := func(s string, n int, right bool) string {
		gap := strings.Repeat(" ", max(0, n-len([]rune(s))))
		if right {
			return gap + s
		}
		return s + gap
	}
	line := func(r row) string {
		cells := []string{
			pad(r.phase, width[0], false), pad(r.conc, width[1], true), pad(r.p50, width[2], true), pad(r.p99, width[3], true),
			pad(r.ops, width[4], true), pad(r.floor, width[5], true), pad(r.ratio, width[6], true), pad(r.published, width[7], false),
		}
		return strings.TrimRight(strings.Join(cells, "  ")+"  "+r.notes, " ")
	}
	total := 2 * 8
	for _, n := range width {
		total += n
	}
	fmt.Fprintln(w, line(head))
	fmt.Fprintln(w, strings.Repeat("-", total+10))
	for _, r := range rows {
		if r.conc == "" && r.p50 == "" && r.ops == "" && r.notes == "" && r.published == "" {
			fmt.Fprintln(w, "· "+r.phase)
			continue
		}
		fmt.Fprintln(w, line(r))
	}
}

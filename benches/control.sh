#!/usr/bin/env bash
# benches/control.sh — control-plane speed: compile, apply, map fill,
# incremental apply and single table-entry updates.
#
#   sudo benches/control.sh --out DIR [--quick]
#
# 1. Compile time: `patronusc build POLICY -o OUT` wall time (median of 5)
#    against the number of rules (policies from `control rules N`) and the
#    number of table entries (the bench's reference.pf with its blocklist
#    swapped for one of N prefixes), and the per-stage split from the
#    in-process driver (`control stages`).
# 2. Apply time against table entries: `patronusc apply` on a veth inside a
#    network namespace this script creates (and deletes on exit), the
#    timings apply prints, then `patronusc unload`.
# 3. LPM map fill rate: `control fill` (load with and without the
#    blocklist's entries; the difference is the fill).
# 4. Incremental apply (1% of a 1M-entry table changed, applied again) and
#    single-entry updates (`patronusc table add/del`, end to end and, with
#    `--timing`, in process) — each when this patronusc has it, else the
#    section says "not measured".
#
# Writes DIR/control.md (a `## ` section), DIR/*.svg (through $PLOT),
# raw TSVs, and appends key<TAB>value lines to DIR/figures.tsv.
# Env (benches/run sets them; computed when unset): PATRONUSC,
# PATRONUS_BENCH_BIN, PLOT. --quick: small counts, < 2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "benches/control.sh: error: $*" >&2; exit 1; }

OUT=""
QUICK=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
	--quick) QUICK=1; shift ;;
	-h | --help) usage ;;
	*) echo "benches/control.sh: unknown option $1" >&2; usage ;;
	esac
done
[ -n "$OUT" ] || usage
[ "$(id -u)" = 0 ] || die "run as root (apply loads BPF programs)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ "$QUICK" = 1 ]; then
	RULES="10 100 1000"
	ENTRIES="10 1000 10000"
	REPEAT=3
	UPDATES=100
else
	RULES="10 100 1000 10000"
	ENTRIES="10 100 1000 10000 100000 1000000"
	REPEAT=5
	UPDATES=1000
fi
BIG=${ENTRIES##* } # the largest table: fill rate and incremental apply

# Tools: from benches/run, or built here (release, the project's target dir).
if [ -z "${PATRONUSC:-}" ] || [ -z "${PATRONUS_BENCH_BIN:-}" ]; then
	cargo build --release --quiet -p patronus-cli
	cargo build --release --quiet -p patronus-bench --bin control
	TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
	PATRONUSC=${PATRONUSC:-$TARGET/release/patronusc}
	PATRONUS_BENCH_BIN=${PATRONUS_BENCH_BIN:-$TARGET/release}
fi
CONTROL=$PATRONUS_BENCH_BIN/control
CORPUS=$PATRONUS_BENCH_BIN/corpus
PLOT=${PLOT:-$ROOT/benches/plot.py}
[ -x "$PATRONUSC" ] || die "no patronusc at $PATRONUSC"
[ -x "$CONTROL" ] || die "no control driver at $CONTROL (cargo build --release -p patronus-bench)"
[ -x "$CORPUS" ] || die "no corpus driver at $CORPUS (cargo build --release -p patronus-bench)"
# plot.py is helper A's; wait for it rather than fail a fresh checkout's run.
for _ in $(seq 60); do [ -f "$PLOT" ] && break; sleep 5; done
[ -f "$PLOT" ] || die "no plot script at $PLOT"

NS=pcb$$
IFACE=pcb0
PIN_ROOT=/sys/fs/bpf/patronus-control-$$
WORK=$(mktemp -d /tmp/patronus-control.XXXXXX)
STATE_ROOT=$WORK/state
cleanup() {
	if [ -e "/run/netns/$NS" ]; then
		nsenter --net="/run/netns/$NS" "$PATRONUSC" unload -i "$IFACE" \
			--pin-root "$PIN_ROOT" --state-root "$STATE_ROOT" >/dev/null 2>&1 || true
		ip netns del "$NS" 2>/dev/null || true
	fi
	rm -rf "$PIN_ROOT" "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
pc() { in_ns "$PATRONUSC" "$@" --pin-root "$PIN_ROOT" --state-root "$STATE_ROOT"; }
now() { echo "${EPOCHREALTIME/,/.}"; }
# median of the numbers on stdin
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.stdin.read().split()]; print(f"{s.median(v):.6f}")'; }

# The corpus's blocklist of N prefixes (patronus_compiler::corpus, seed N).
blocklist() {
	local f=$WORK/blocklist-$1.txt
	[ -f "$f" ] || "$CORPUS" blocklist "$1" "$f" || die "writing blocklist-$1 failed"
	echo "$f"
}
# reference.pf with a blocklist of N prefixes (absolute path).
reference() {
	local n=$1 list
	list=$(blocklist "$n")
	sed "s#\"build/pkts/blocklist-[0-9]*.txt\"#\"$list\"#" "$ROOT/benches/reference.pf" >"$WORK/reference-$n.pf"
	echo "$WORK/reference-$n.pf"
}
# Median wall seconds of `patronusc build POLICY -o ...` over $REPEAT runs.
build_time() {
	local policy=$1 i t0 t1
	for i in $(seq "$REPEAT"); do
		t0=$(now)
		"$PATRONUSC" build "$policy" -o "$WORK/build.o" 2>"$WORK/build.err" ||
			die "patronusc build $policy failed: $(tail -3 "$WORK/build.err")"
		t1=$(now)
		awk -v a="$t0" -v b="$t1" "BEGIN { printf \"%.6f\\n\", b - a }"
	done | median
}
STAGE_NAMES="tables check lower codegen maps listing elf encode total"
# Header and one row of the stage table: `control stages` medians.
stages_header() { printf 'x'; for s in $STAGE_NAMES; do printf '\t%s' "$s"; done; echo; }
stages_row() {
	local x=$1 policy=$2
	"$CONTROL" stages "$policy" --repeat "$REPEAT" >"$WORK/stages" || die "control stages $policy failed"
	printf '%s' "$x"
	for s in $STAGE_NAMES; do printf '\t%s' "$(awk -v s="$s" '$1 == s { print $2 }' "$WORK/stages")"; done
	echo
}

echo "control: compile time vs rules ($RULES)" >&2
printf 'x\tpatronusc build (wall)\tin-process total\n' >"$OUT/control_compile_rules.tsv"
stages_header >"$OUT/control_stages_rules.tsv"
for n in $RULES; do
	"$CONTROL" rules "$n" "$WORK/rules-$n.pf"
	wall=$(build_time "$WORK/rules-$n.pf")
	stages_row "$n" "$WORK/rules-$n.pf" >>"$OUT/control_stages_rules.tsv"
	total=$(tail -1 "$OUT/control_stages_rules.tsv" | awk '{ print $NF }')
	printf '%s\t%s\t%s\n' "$n" "$wall" "$total" >>"$OUT/control_compile_rules.tsv"
done

echo "control: compile time vs table entries ($ENTRIES)" >&2
printf 'x\tpatronusc build (wall)\tin-process total\n' >"$OUT/control_compile_entries.tsv"
stages_header >"$OUT/control_stages_entries.tsv"
for n in $ENTRIES; do
	policy=$(reference "$n")
	wall=$(build_time "$policy")
	stages_row "$n" "$policy" >>"$OUT/control_stages_entries.tsv"
	total=$(tail -1 "$OUT/control_stages_entries.tsv" | awk '{ print $NF }')
	printf '%s\t%s\t%s\n' "$n" "$wall" "$total" >>"$OUT/control_compile_entries.tsv"
done

# The namespace and its veth pair: apply attaches to one end.
ip netns add "$NS"
ip -n "$NS" link add "$IFACE" type veth peer name pcb1
ip -n "$NS" link set "$IFACE" up
ip -n "$NS" link set pcb1 up

# `  time: compile 12.3 ms, load+attach 45.6 ms, total 60.0 ms` (and any
# other `NAME VALUE ms|s|µs` fields) → `name<TAB>seconds` lines.
parse_time() {
	python3 -c '
import re, sys
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("time:"):
        continue
    for field in line[5:].split(","):
        m = re.match(r"\s*(.+?)\s+([0-9.]+)\s*(ms|s|µs|us)\s*$", field)
        if m:
            scale = {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}[m.group(3)]
            name = re.sub(r"[^a-z0-9]+", "_", m.group(1).lower()).strip("_")
            print(f"{name}\t{float(m.group(2)) * scale:.6f}")
'
}
# Applies POLICY (fresh: unloads first); prints `wall<TAB>s` and the
# parsed time fields; the report goes to $WORK/apply.out.
apply_once() {
	local policy=$1 t0 t1
	t0=$(now)
	pc apply "$policy" -i "$IFACE" >"$WORK/apply.out" 2>"$WORK/apply.err" ||
		die "patronusc apply $policy failed: $(tail -5 "$WORK/apply.err")"
	t1=$(now)
	printf 'wall\t%s\n' "$(awk -v a="$t0" -v b="$t1" "BEGIN { printf \"%.6f\\n\", b - a }")"
	parse_time <"$WORK/apply.out"
}

echo "control: apply time vs table entries ($ENTRIES)" >&2
: >"$WORK/apply.raw"
for n in $ENTRIES; do
	policy=$WORK/reference-$n.pf
	reps=$REPEAT
	if [ "$n" -ge 1000000 ]; then reps=2; fi
	for _ in $(seq "$reps"); do
		apply_once "$policy" | sed "s/^/$n\t/" >>"$WORK/apply.raw"
		pc unload -i "$IFACE" >/dev/null
	done
	cp "$WORK/apply.out" "$OUT/control_apply_$n.txt"
done
# Columns: every field apply printed, medians per N.
python3 - "$WORK/apply.raw" "$OUT/control_apply.tsv" <<-'EOF'
	import statistics, sys
	rows = {}
	names = []
	for line in open(sys.argv[1]):
	    n, name, value = line.split("\t")
	    rows.setdefault(int(n), {}).setdefault(name, []).append(float(value))
	    if name not in names:
	        names.append(name)
	with open(sys.argv[2], "w") as f:
	    f.write("x\t" + "\t".join(names) + "\n")
	    for n in sorted(rows):
	        f.write(str(n) + "".join(
	            "\t" + (f"{statistics.median(rows[n][k]):.6f}" if k in rows[n] else "")
	            for k in names) + "\n")
EOF
col() { # col FILE X NAME: the value of column NAME in the row of X
	awk -F'\t' -v x="$2" -v name="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
		$1 == x && c { print $c }' "$1"
}

echo "control: LPM fill rate ($BIG entries)" >&2
"$CONTROL" fill "$WORK/reference-$BIG.pf" --repeat "$REPEAT" >"$OUT/control_fill.tsv" ||
	die "control fill failed"
fill_rate=$(awk '$1 == "fill_rate_per_s" { print $2 }' "$OUT/control_fill.tsv")
# When apply reports its own fill time, that rate too (same table).
apply_fill=$(col "$OUT/control_apply.tsv" "$BIG" fill)
apply_fill_rate=""
if [ -n "$apply_fill" ]; then
	apply_fill_rate=$(awk -v n="$BIG" -v t="$apply_fill" 'BEGIN { if (t > 0) printf "%.0f", n / t }')
fi

echo "control: incremental apply (1% of $BIG entries changed)" >&2
incremental=""
incremental_note="not measured"
list=$(blocklist "$BIG")
# Fresh prefixes: a blocklist of another size has another seed.
"$CORPUS" blocklist $(( BIG / 100 * 3 + 7 )) "$WORK/fresh.txt" || die "writing fresh prefixes failed"
python3 - "$WORK/fresh.txt" "$list" "$WORK/changed.txt" <<-'EOF'
	# Drops the first 1% of the prefixes and adds as many new ones.
	import sys
	read = lambda p: [l.strip() for l in open(p) if l.strip() and not l.startswith("#")]
	lines = read(sys.argv[2])
	k = max(1, len(lines) // 100)
	have = set(lines)
	fresh = [p for p in read(sys.argv[1]) if p not in have][:k]
	with open(sys.argv[3], "w") as f:
	    f.write("\n".join(lines[k:] + fresh) + "\n")
EOF
cp "$list" "$WORK/table-inc.txt"
sed "s#\"build/pkts/blocklist-[0-9]*.txt\"#\"$WORK/table-inc.txt\"#" "$ROOT/benches/reference.pf" >"$WORK/inc.pf"
apply_once "$WORK/inc.pf" >/dev/null
cp "$WORK/changed.txt" "$WORK/table-inc.txt"
apply_once "$WORK/inc.pf" >"$WORK/inc.times"
cp "$WORK/apply.out" "$OUT/control_incremental.txt"
inc_wall=$(awk '$1 == "wall" { print $2 }' "$WORK/inc.times")
if grep -q "updated in place" "$WORK/apply.out"; then
	incremental=$inc_wall
	incremental_note="$(printf '%.3f' "$inc_wall") s (updated in place)"
else
	incremental_note="not measured: this patronusc replaced the whole policy ($(printf '%.3f' "$inc_wall") s wall)"
fi

echo "control: single table-entry updates ($UPDATES)" >&2
update_p50="" update_p99="" timing_p50="" timing_p99=""
update_note="not measured: this patronusc has no \`table\` command"
if "$PATRONUSC" table --help >/dev/null 2>&1; then
	timing=()
	"$PATRONUSC" table add --help 2>/dev/null | grep -q -- '--timing' && timing=(--timing)
	# Hidden flags are not in --help: try it once.
	if [ ${#timing[@]} = 0 ] && pc table add -i "$IFACE" blocklist 192.0.2.1/32 --timing >/dev/null 2>&1; then
		timing=(--timing)
		pc table del -i "$IFACE" blocklist 192.0.2.1/32 >/dev/null 2>&1 || true
	fi
	: >"$WORK/updates.tsv"
	for i in $(seq "$UPDATES"); do
		cidr="192.0.2.$((i % 200 + 1))/32"
		for op in add del; do
			t0=$(now)
			pc table "$op" -i "$IFACE" blocklist "$cidr" "${timing[@]}" >"$WORK/update.out" 2>&1 ||
				die "patronusc table $op $cidr failed: $(tail -3 "$WORK/update.out")"
			t1=$(now)
			# `timing: kernel 12.3 µs, total 456.7 µs` (stderr, with --timing)
			kernel=$(sed -n 's/.*timing: kernel \([0-9.]*\) µs.*/\1/p' "$WORK/update.out")
			inproc=$(sed -n 's/.*timing: .*total \([0-9.]*\) µs.*/\1/p' "$WORK/update.out")
			printf '%s\t%s\t%s\t%s\n' "$op" "$(awk -v a="$t0" -v b="$t1" "BEGIN { printf \"%.6f\\n\", b - a }")" \
				"$inproc" "$kernel" >>"$WORK/updates.tsv"
		done
	done
	cp "$WORK/update.out" "$OUT/control_update_last.txt"
	cp "$WORK/updates.tsv" "$OUT/control_updates.tsv"
	read -r update_p50 update_p99 timing_p50 timing_p99 kernel_p50 kernel_p99 < <(python3 - "$WORK/updates.tsv" <<-'EOF'
		# columns: op, wall seconds, in-process µs, kernel µs → ms percentiles
		import sys
		def pct(v, p):
		    v = sorted(v)
		    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else None
		cols = [[], [], []]
		for line in open(sys.argv[1]):
		    f = (line.rstrip("\n").split("\t") + ["", "", ""])[1:4]
		    for i, (x, scale) in enumerate(zip(f, (1e3, 1e-3, 1e-3))):
		        if x:
		            cols[i].append(float(x) * scale)
		out = lambda x: "-" if x is None else f"{x:.3f}"
		print(" ".join(out(pct(c, p)) for c in cols for p in (50, 99)))
	EOF
	)
	update_note="p50 $update_p50 ms, p99 $update_p99 ms end to end"
	if [ "$timing_p99" != "-" ]; then
		update_note+="; in process p50 $timing_p50 ms, p99 $timing_p99 ms (of which the map syscalls p50 $kernel_p50 ms, p99 $kernel_p99 ms)"
	else
		timing_p50="" timing_p99=""
	fi
fi
pc unload -i "$IFACE" >/dev/null 2>&1 || true

# Plots: compile vs rules, compile vs entries, apply vs entries.
python3 "$PLOT" --out "$OUT/control_compile_rules.svg" --title "Compile time vs rules" \
	--xlabel "rules" --ylabel "seconds" --logx --logy "$OUT/control_compile_rules.tsv"
python3 "$PLOT" --out "$OUT/control_compile_entries.svg" --title "Compile time vs table entries (reference.pf)" \
	--xlabel "blocklist entries" --ylabel "seconds" --logx --logy "$OUT/control_compile_entries.tsv"
python3 "$PLOT" --out "$OUT/control_apply.svg" --title "patronusc apply time vs table entries" \
	--xlabel "blocklist entries" --ylabel "seconds" --logx --logy "$OUT/control_apply.tsv"

# Figures and the markdown section.
last_rules=${RULES##* }
compile_rules=$(col "$OUT/control_compile_rules.tsv" "$last_rules" "patronusc build (wall)")
apply_big=$(col "$OUT/control_apply.tsv" "$BIG" wall)
{
	[ "$last_rules" = 10000 ] && printf 'compile_10k_rules_s\t%s\n' "$compile_rules"
	[ "$BIG" = 1000000 ] && printf 'apply_1M_s\t%s\n' "$apply_big"
	[ -n "$fill_rate" ] && printf 'fill_rate_per_s\t%s\n' "$fill_rate"
	[ -n "$update_p50" ] && [ "$update_p50" != "-" ] && printf 'table_update_p50_ms\t%s\n' "$update_p50"
	[ -n "$update_p99" ] && [ "$update_p99" != "-" ] && printf 'table_update_p99_ms\t%s\n' "$update_p99"
	[ -n "$incremental" ] && [ "$BIG" = 1000000 ] && printf 'incremental_apply_1M_s\t%s\n' "$incremental"
	true
} >>"$OUT/figures.tsv"

table_md() { # TSV → markdown table, numbers as given
	awk -F'\t' 'NR == 1 { printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n|"; for (i = 1; i <= NF; i++) printf "---|"; printf "\n"; next }
		{ printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n" }' "$1"
}
fill_entries=$(awk '$1 == "entries" { print $2 }' "$OUT/control_fill.tsv")
fill_s=$(awk '$1 == "fill_s" { print $2 }' "$OUT/control_fill.tsv")
verdict() { python3 -c "import sys; v, t, op = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]; print('met' if (v <= t if op == 'le' else v >= t) else 'NOT met')" "$@"; }
{
	echo "## Control plane: compile, apply, fill, updates"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on kernel $(uname -r), $(nproc) CPUs, commit" \
		"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ "$QUICK" = 1 ] && echo ', --quick counts')."
	echo "Compile: wall time of \`patronusc build POLICY -o OUT\`, median of $REPEAT runs; the stage"
	echo "split is the median of $REPEAT in-process compiles through the crates' APIs"
	echo "(\`benches/src/bin/control.rs stages\`). Rule policies come from \`control rules N\`"
	echo "(four rule shapes, each rule its own port and sources: no overlap, no lint findings);"
	echo "table policies are benches/reference.pf with a blocklist of N prefixes"
	echo "(\`corpus blocklist N\`, benches/src/bin/corpus.rs). Apply: \`patronusc apply\` on a veth in a fresh network"
	echo "namespace (XDP native, tcx egress), fresh each time (unloaded in between), medians;"
	echo "the columns are the timings apply prints. Fill: \`control fill\` loads the policy with"
	echo "and without the blocklist's entries; the difference is the LPM fill."
	echo
	echo "### Targets"
	echo
	echo "| target | measured | |"
	echo "|---|---|---|"
	if [ "$last_rules" = 10000 ]; then
		echo "| compile 10,000 rules ≤ 0.1 s | $(printf '%.3f' "$compile_rules") s | $(verdict "$compile_rules" 0.1 le) |"
	else
		echo "| compile 10,000 rules ≤ 0.1 s | not measured (--quick: $last_rules rules $(printf '%.3f' "$compile_rules") s) | |"
	fi
	if [ "$BIG" = 1000000 ]; then
		echo "| apply with a 1M-entry table ≤ 1 s | $(printf '%.3f' "$apply_big") s | $(verdict "$apply_big" 1 le) |"
	else
		echo "| apply with a 1M-entry table ≤ 1 s | not measured (--quick: $BIG entries $(printf '%.3f' "$apply_big") s) | |"
	fi
	if [ -n "$fill_rate" ]; then
		echo "| LPM map fill ≥ 2,000,000 entries/s | $(printf "%'.0f" "$fill_rate") entries/s ($fill_entries in $(printf '%.3f' "$fill_s") s, \`control fill\`)$([ -n "$apply_fill_rate" ] && printf "; apply's own fill figure: %'.0f entries/s" "$apply_fill_rate") | $(verdict "$fill_rate" 2000000 ge) |"
	else
		echo "| LPM map fill ≥ 2,000,000 entries/s | not resolved: $fill_entries entries fill faster than the load time varies | |"
	fi
	if [ -n "$update_p99" ] && [ "$update_p99" != "-" ]; then
		echo "| table entry update p99 ≤ 1 ms | $update_note | end to end $(verdict "$update_p99" 1 le)$([ -n "$timing_p99" ] && echo ", in process $(verdict "$timing_p99" 1 le)") |"
	else
		echo "| table entry update p99 ≤ 1 ms | $update_note | |"
	fi
	echo "| incremental apply, 1% of $BIG entries changed | $incremental_note | |"
	echo
	echo "### Compile time vs rules"
	echo
	echo "![compile time vs rules](bench/control_compile_rules.svg)"
	echo
	table_md "$OUT/control_compile_rules.tsv"
	echo
	echo "Stage split, seconds (median):"
	echo
	table_md "$OUT/control_stages_rules.tsv"
	echo
	echo "### Compile time vs table entries"
	echo
	echo "![compile time vs table entries](bench/control_compile_entries.svg)"
	echo
	table_md "$OUT/control_compile_entries.tsv"
	echo
	echo "Stage split, seconds (median):"
	echo
	table_md "$OUT/control_stages_entries.tsv"
	echo
	echo "### Apply time vs table entries"
	echo
	echo "![apply time vs table entries](bench/control_apply.svg)"
	echo
	echo "Seconds (median; \`wall\` is the whole command):"
	echo
	table_md "$OUT/control_apply.tsv"
	echo
} >"$OUT/control.md"
echo "control: wrote $OUT/control.md" >&2

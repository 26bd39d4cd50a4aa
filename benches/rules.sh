#!/usr/bin/env bash
# benches/rules.sh — per-packet cost against the NUMBER OF RULES (10 → 10,000):
# Patronus vs the naive linear XDP programs of benches/xdp/, nftables and
# iptables, on policies of disjoint rules over tcp/udp/icmp, distinct ports,
# port ranges and per-rule source sets (benches/rulegen.py writes them).
#
#   sudo benches/rules.sh --out DIR [--quick]
#
#   --out DIR   where everything goes: DIR/rules.md (a `## ` section), the plots
#               DIR/rules_testrun.svg and DIR/rules_veth.svg, raw TSVs
#               DIR/rules_*.tsv, the generated policies/rulesets/frames under
#               DIR/rules-gen/, and the line `rules_10k_vs_10<TAB>X` appended
#               to DIR/figures.tsv (X = geomean over the three packets of
#               patronus_10000 ns / patronus_10 ns, BPF_PROG_TEST_RUN).
#   --quick     smoke test (< 1.5 min): fewer repetitions, veth at N=10 and
#               10000 only, 2 s x 1 run per configuration.
#
# Env (benches/run sets them; computed when unset): PATRONUSC, PATRONUS_BENCH_BIN
# (dir holding `frames`, `xdpfill`, `xdpgen`, `corpus`), PLOT (benches/plot.py).
#
# Parts: (1) generate and check the policies (`patronusc check`, and `patronusc
# test --engine kernel`: the kernel program gives the expected verdicts);
# (2) test run: every patronus_N (loaded with `patronusc load`, nothing
# attached), naive_10/100/1000 and xdp_drop on the packets first / last / none
# under `bpftool prog run`, pinned to the last CPU; (3) veth: the `none` frame
# (no rule matches: the worst case of a linear list) from netns pr-gen into
# netns pr-dut, where patronus_N runs in XDP or nft_N / iptables_N in the stack;
# DUT CPU ns per packet. Exit status 1 on any verdict mismatch or error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
OUT=""
QUICK=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || { echo "rules.sh: --out needs a directory" >&2; exit 2; }
	       OUT=$2; shift 2 ;;
	--quick) QUICK=1; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "rules.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
	esac
done
[ -n "$OUT" ] || { echo "rules.sh: --out DIR is required (try --help)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "rules.sh: run as root (BPF, XDP, network namespaces)" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

NEED_BUILD=0
[ -n "${PATRONUSC:-}" ] && [ -n "${PATRONUS_BENCH_BIN:-}" ] || NEED_BUILD=1
# shellcheck source=/dev/null
source "$ROOT/benches/common.sh" # die, log, build_harness, load_xdp, fill_naive, prog_info
if [ "$NEED_BUILD" = 1 ]; then
	log "building patronusc and frames (release)"
	(cd "$ROOT" && cargo build --release --quiet -p patronus-cli -p patronus-bench) \
		|| die "cargo build failed"
fi
[ -x "$PATRONUSC" ] || die "no patronusc at $PATRONUSC"
[ -x "$PATRONUS_BENCH_BIN/frames" ] || die "no frames binary in $PATRONUS_BENCH_BIN"
[ -f "$PLOT" ] || die "no plot script at $PLOT"
for tool in ip ethtool nsenter taskset timeout flock python3 nft; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install iproute2 ethtool util-linux coreutils python3 nftables)"
done
IPT=iptables-legacy
command -v "$IPT-restore" >/dev/null || IPT=iptables
command -v "$IPT-restore" >/dev/null || die "iptables-restore not found (apt-get install iptables)"
build_harness
mount_bpffs

NS="10 100 1000 10000"
NAIVE="10 100 1000"
if [ "$QUICK" = 1 ]; then
	REPEAT=50000; MAX_SECS=1; VETH_NS="10 10000"; SECS=2; REPS=1
else
	REPEAT=200000; MAX_SECS=2; VETH_NS="$NS"; SECS=3; REPS=2
fi
PKTS="first last none"
GEN="$OUT/rules-gen"
PIN=/sys/fs/bpf/patronus-rules
GEN_NS=pr-gen
DUT_NS=pr-dut
GEN_IF=prg0
DUT_IF=prd0
NCPU=$(nproc)
GEN_CPU=0
DUT_CPU=$(( NCPU - 1 ))

# One run at a time: a second one would delete this one's namespaces and pins.
exec 9>/run/lock/patronus-rules-bench.lock
if ! flock -n 9; then
	log "another benches/rules.sh is running; waiting for it (at most 10 min)"
	flock -w 600 9 || die "another benches/rules.sh still holds /run/lock/patronus-rules-bench.lock"
fi
START=$(date +%s)

GEN_PID=""
# Best effort, and without `set +e`: this also runs mid-script, where errexit
# must stay on.
cleanup() {
	if [ -n "$GEN_PID" ]; then
		kill "$GEN_PID" 2>/dev/null || true
		wait "$GEN_PID" 2>/dev/null || true
		GEN_PID=""
	fi
	ip netns del "$GEN_NS" 2>/dev/null || true
	ip netns del "$DUT_NS" 2>/dev/null || true
	rm -rf "$PIN" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup
# Keep this script and all it starts off the measuring (last) CPU.
taskset -pc "$GEN_CPU" $$ >/dev/null

MISMATCH="$OUT/rules_mismatches.txt"
: >"$MISMATCH"
mismatch() { echo "$*" >>"$MISMATCH"; log "MISMATCH: $*"; }

# ---- 1. policies, rulesets, frames ------------------------------------------
rm -rf "$GEN"
mkdir -p "$GEN"
log "generating policies for N = $NS"
python3 "$ROOT/benches/rulegen.py" --out "$GEN" $NS >"$GEN/counts.tsv" || die "rulegen.py failed"
for n in $NS; do
	"$PATRONUSC" check --deny-warnings "$GEN/patronus_$n.pf" >"$GEN/check_$n.log" 2>&1 \
		|| { cat "$GEN/check_$n.log" >&2; die "patronusc check patronus_$n.pf failed"; }
	if ! "$PATRONUSC" test --engine kernel "$GEN/patronus_$n.pf" >"$GEN/test_$n.log" 2>&1; then
		cat "$GEN/test_$n.log" >&2
		mismatch "patronusc test --engine kernel patronus_$n.pf failed (see rules-gen/test_$n.log)"
	fi
	"$PATRONUS_BENCH_BIN/frames" "$GEN/pkts_$n" <"$GEN/packets_$n.tsv" 2>/dev/null \
		|| die "frames failed for packets_$n.tsv"
done

# ---- 2. test run ---------------------------------------------------------------
TASKSET=""
[ "$NCPU" -gt 1 ] && TASKSET="taskset -c $DUT_CPU"
# run_prog PINNED FRAME REPEAT -> "RET NS"
run_prog() {
	local out res
	out=$($TASKSET bpftool prog run pinned "$1" data_in "$2" repeat "$3" 2>&1) \
		|| die "bpftool prog run $1 $2 failed: $out"
	res=$(sed -nE 's/^Return value: ([0-9]+), duration( \(average\))?: ([0-9]+)ns.*/\1 \3/p' <<<"$out")
	[ -n "$res" ] || die "unexpected output of bpftool prog run: $out"
	echo "$res"
}
verdict_code() { case "$1" in drop) echo 1 ;; pass) echo 2 ;; *) die "bad verdict $1" ;; esac; }

PROGS_TSV="$OUT/rules_programs.tsv"
TR_TSV="$OUT/rules_testrun.tsv"
printf 'program\trules\tiptables_rules\txlated_bytes\tjited_bytes\tverified_insns\tload_s\n' >"$PROGS_TSV"
printf 'program\tpacket\texpect\tgot\trepeat\tns\n' >"$TR_TSV"
mkdir -p "$PIN"

# measure NAME PINNED FRAMEDIR [EXPECTFILE]: every packet; verdicts checked
# against EXPECTFILE when given.
measure() {
	local name=$1 pinned=$2 dir=$3 expect_file=${4:-} pkt res ret ns cal reps want got
	for pkt in $PKTS; do
		want=-
		[ -n "$expect_file" ] && want=$(awk -v p="$pkt" '$1 == p { print $2 }' "$expect_file")
		res=$(run_prog "$pinned" "$dir/$pkt.bin" 1)
		ret=${res% *}
		res=$(run_prog "$pinned" "$dir/$pkt.bin" 1000)
		cal=${res#* }
		reps=$REPEAT
		if [ "$cal" -gt 0 ]; then
			local cap=$(( MAX_SECS * 1000000000 / cal ))
			[ "$cap" -lt 5000 ] && cap=5000
			[ "$cap" -lt "$reps" ] && reps=$cap
		fi
		res=$(run_prog "$pinned" "$dir/$pkt.bin" "$reps")
		ns=${res#* }
		got=$ret
		[ "${res% *}" = "$ret" ] || got="$ret->${res% *}"
		if [ "$want" != - ] && [ "$got" != "$(verdict_code "$want")" ]; then
			mismatch "$name on $pkt: expected $want, XDP returned $got"
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$pkt" "$want" "$got" "$reps" "$ns" >>"$TR_TSV"
	done
}
info() { prog_info "$1"; }

load_xdp "$BENCH_BUILD/trivial_drop.o" "$PIN/hb/xdp_drop" "$PIN/hb/xdp_drop_maps"
printf 'xdp_drop\t0\t-\t%s\t-\n' "$(info "$PIN/hb/xdp_drop")" >>"$PROGS_TSV"
measure xdp_drop "$PIN/hb/xdp_drop" "$GEN/pkts_10"
for n in $NS; do
	log "test run: patronus_$n"
	t0=$(date +%s%N)
	"$PATRONUSC" load "$GEN/patronus_$n.pf" --pin-dir "$PIN/$n" >"$GEN/load_$n.log" 2>&1 \
		|| { cat "$GEN/load_$n.log" >&2; die "patronusc load patronus_$n.pf failed"; }
	t1=$(date +%s%N)
	ipt=$(awk -v n="$n" '$1 == n { print $4 }' "$GEN/counts.tsv")
	printf 'patronus_%s\t%s\t%s\t%s\t%s\n' "$n" "$n" "$ipt" "$(info "$PIN/$n/prog")" \
		"$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')" >>"$PROGS_TSV"
	measure "patronus_$n" "$PIN/$n/prog" "$GEN/pkts_$n" "$GEN/packets_$n.expect"
done
for n in $NAIVE; do
	log "test run: naive_$n"
	t0=$(date +%s%N)
	load_xdp "$BENCH_BUILD/naive_$n.o" "$PIN/hb/naive_$n" "$PIN/hb/naive_${n}_maps"
	fill_naive "$PIN/hb/naive_${n}_maps" "$n"
	t1=$(date +%s%N)
	printf 'naive_%s\t%s\t-\t%s\t%s\n' "$n" "$(( n + 10 ))" "$(info "$PIN/hb/naive_$n")" \
		"$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')" >>"$PROGS_TSV"
	# naive_N has its own rules (the bench's blocklist + allow list): only
	# the cost matters, on this N=10 frame set (`none` scans all its rules).
	measure "naive_$n" "$PIN/hb/naive_$n" "$GEN/pkts_10"
	rm -rf "${PIN:?}/hb/naive_$n" "${PIN:?}/hb/naive_${n}_maps" # 1M-entry conntrack: free early
done

# ---- 3. veth -------------------------------------------------------------------
in_dut() { ip netns exec "$DUT_NS" "$@"; }
in_dut_net() { nsenter --net="/run/netns/$DUT_NS" "$@"; }

setup_netns() {
	local ns
	for ns in "$GEN_NS" "$DUT_NS"; do
		ip netns del "$ns" 2>/dev/null || true
		ip netns add "$ns"
	done
	# The frames' MACs (compiler/src/packet.rs DST_MAC / SRC_MAC), so the DUT
	# takes them as its own; its address is the frames' destination.
	ip link add "$GEN_IF" netns "$GEN_NS" address 02:50:54:00:00:01 type veth \
		peer name "$DUT_IF" netns "$DUT_NS" address 02:50:54:00:00:02
	ip netns exec "$GEN_NS" sysctl -qw "net.ipv6.conf.$GEN_IF.disable_ipv6=1"
	in_dut sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
		"net.ipv4.conf.$DUT_IF.rp_filter=0" "net.ipv6.conf.$DUT_IF.disable_ipv6=1"
	ip -n "$GEN_NS" addr add 192.0.2.1/24 dev "$GEN_IF"
	ip -n "$DUT_NS" addr add 192.0.2.2/24 dev "$DUT_IF"
	ip -n "$GEN_NS" link set lo up
	ip -n "$DUT_NS" link set lo up
	ip -n "$GEN_NS" link set "$GEN_IF" up
	ip -n "$DUT_NS" link set "$DUT_IF" up
	# As benches/veth.sh: GRO on so veth runs NAPI without XDP, threaded NAPI so
	# the DUT's receive path has the last CPU to itself.
	in_dut ethtool -K "$DUT_IF" gro on >/dev/null
	in_dut sh -c "echo 1 > /sys/class/net/$DUT_IF/threaded"
}
pin_napi() {
	local pid found=0
	for pid in $(ps -eo pid=,comm= | awk -v re="^napi/$DUT_IF-[0-9]+\$" '$2 ~ re {print $1}'); do
		taskset -pc "$DUT_CPU" "$pid" >/dev/null && found=1
	done
	[ "$found" = 1 ] || die "no NAPI thread for $DUT_IF"
}

# The ruleset files plus a last counted drop: how many frames walked the
# whole list (every one should, for the `none` frame).
nft_ruleset() {
	sed 's/^    icmpv6 type.*/&\n    counter name "pr_end" drop/; s/^table inet pr_rules {/&\n  counter pr_end { }/' "$1"
}
config_setup() {
	case "$1" in
	xdp_drop) in_dut_net ip link set dev "$DUT_IF" xdpdrv pinned "$PIN/hb/xdp_drop" ;;
	patronus_*) in_dut_net ip link set dev "$DUT_IF" xdpdrv pinned "$PIN/${1#patronus_}/prog" ;;
	nft_*)
		nft_ruleset "$GEN/$1.nft" >"$GEN/$1.loaded.nft"
		in_dut nft -f "$GEN/$1.loaded.nft" || die "nft -f $1 failed" ;;
	stack) printf 'table inet pr_rules {\n  counter pr_end { }\n  chain input {\n    type filter hook input priority filter; policy drop;\n    counter name "pr_end" drop\n  }\n}\n' \
		| in_dut nft -f - || die "nft (stack) failed" ;;
	iptables_*) in_dut "$IPT-restore" <"$GEN/$1.rules" || die "$IPT-restore $1 failed" ;;
	*) die "unknown configuration $1" ;;
	esac
}
config_teardown() {
	case "$1" in
	xdp_drop|patronus_*) in_dut_net ip link set dev "$DUT_IF" xdpdrv off ;;
	nft_*|stack) in_dut nft flush ruleset ;;
	iptables_*) in_dut "$IPT" -F INPUT; in_dut "$IPT" -P INPUT ACCEPT ;;
	esac
}
# end_count CONFIG -> frames that reached the expected end (XDP drops, the
# nft end counter, the iptables policy counter)
end_count() {
	case "$1" in
	xdp_drop|patronus_*) in_dut ethtool -S "$DUT_IF" | awk '/rx_queue_[0-9]+_xdp_drops:/ { s += $2 } END { print s + 0 }' ;;
	nft_*|stack) in_dut nft list counter inet pr_rules pr_end | sed -nE 's/.*packets ([0-9]+).*/\1/p' ;;
	iptables_*) in_dut "$IPT" -L INPUT -nvx | sed -nE '1s/.*policy DROP ([0-9]+) packets.*/\1/p' ;;
	esac
}
# sample -> "NS RX_PACKETS BUSY_TICKS TOTAL_TICKS"
sample() {
	local rx now cpu
	rx=$(in_dut cat "/sys/class/net/$DUT_IF/statistics/rx_packets")
	now=$(date +%s%N)
	cpu=$(awk -v c="cpu$DUT_CPU" '$1 == c { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat)
	echo "$now $rx $cpu"
}
VETH_TSV="$OUT/rules_veth.tsv"
printf 'config\trules\trep\tpps\toffered_pps\tbusy\tcpu_ns_per_pkt\treached_end\n' >"$VETH_TSV"
veth_run() {
	local c=$1 rules=$2 rep=$3 genlog="$GEN/gen.log" s0 s1 e0 e1 rx0 rx1 gen_rc=0
	pin_napi
	e0=$(end_count "$c")
	rx0=$(in_dut cat "/sys/class/net/$DUT_IF/statistics/rx_packets")
	timeout $(( SECS + 6 )) ip netns exec "$GEN_NS" taskset -c "$GEN_CPU" \
		"$PATRONUS_BENCH_BIN/xdpgen" "$GEN_IF" "$GEN/pkts_10/none.bin" "$(( SECS + 1 )).5" \
		>"$genlog" 2>&1 &
	GEN_PID=$!
	sleep 1
	s0=$(sample)
	sleep "$SECS"
	s1=$(sample)
	wait "$GEN_PID" || gen_rc=$?
	GEN_PID=""
	[ "$gen_rc" = 0 ] || { cat "$genlog" >&2; die "generator failed ($c)"; }
	# A slow firewall still has a full ring (and GRO batch) to work through
	# after the generator stops: wait for rx_packets to settle (at most ~5 s)
	# so the end counter and rx_packets cover the same frames.
	local prev=-1 i
	for i in $(seq 25); do
		rx1=$(in_dut cat "/sys/class/net/$DUT_IF/statistics/rx_packets")
		[ "$rx1" = "$prev" ] && break
		prev=$rx1
		sleep 0.2
	done
	e1=$(end_count "$c")
	python3 - "$c" "$rules" "$rep" "$s0" "$s1" "$(cat "$genlog")" "$(( e1 - e0 ))" "$(( rx1 - rx0 ))" <<'EOF' >>"$VETH_TSV"
import sys
c, rules, rep, s0, s1, gen, ends, rx = sys.argv[1:9]
t0, rx0, b0, tot0 = map(int, s0.split())
t1, rx1, b1, tot1 = map(int, s1.split())
secs = (t1 - t0) / 1e9
pkts = rx1 - rx0
busy = (b1 - b0) / (tot1 - tot0) if tot1 > tot0 else 0.0
offered = float(dict(kv.split("=") for kv in gen.split())["pps"])
ns = busy * secs * 1e9 / pkts if pkts else 0.0
reached = int(ends) / int(rx) if int(rx) else 0.0
print(f"{c}\t{rules}\t{rep}\t{pkts / secs:.0f}\t{offered:.0f}\t{busy:.4f}\t{ns:.1f}\t{reached:.4f}")
EOF
	tail -n 1 "$VETH_TSV" | awk -F'\t' '{ printf "    %-16s run %s: %.4f Mpps at DUT, CPU %.0f%%, %.0f ns/pkt, %.1f%% reached the end\n", $1, $3, $4/1e6, $6*100, $7, $8*100 }' >&2
	# Every frame must be dropped at the end of the list (or in XDP).
	awk -F'\t' 'END { exit !($8 >= 0.99) }' "$VETH_TSV" \
		|| mismatch "veth $c run $rep: only $(tail -n 1 "$VETH_TSV" | cut -f8) of the frames reached the default drop"
}

log "veth: namespaces $GEN_NS / $DUT_NS, N = $VETH_NS, ${SECS}s x $REPS"
setup_netns
CONFIGS=(xdp_drop stack)
for n in $VETH_NS; do CONFIGS+=("patronus_$n" "nft_$n" "iptables_$n"); done
timeout 10 ip netns exec "$GEN_NS" taskset -c "$GEN_CPU" "$PATRONUS_BENCH_BIN/xdpgen" "$GEN_IF" \
	"$GEN/pkts_10/none.bin" 2 >/dev/null # warm-up, discarded
for rep in $(seq 1 "$REPS"); do
	for c in "${CONFIGS[@]}"; do
		case "$c" in
		xdp_drop|stack) rules=0 ;;
		iptables_*) rules=$(awk -v n="${c#iptables_}" '$1 == n { print $4 }' "$GEN/counts.tsv") ;;
		*) rules=${c#*_} ;;
		esac
		log "veth: $c, run $rep of $REPS"
		config_setup "$c"
		veth_run "$c" "$rules" "$rep"
		config_teardown "$c"
		sleep 0.5
	done
done
cleanup

# ---- 4. report -----------------------------------------------------------------
ELAPSED=$(( $(date +%s) - START ))
python3 - "$OUT" "$PLOT" "$ELAPSED" "$QUICK" "$(uname -r)" "$NCPU" "$IPT" \
	"$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF' || die "report failed"
import csv, math, os, statistics, subprocess, sys
out, plot, elapsed, quick, kernel, ncpu, ipt, commit = sys.argv[1:9]

def rows(name):
    with open(os.path.join(out, name)) as f:
        return list(csv.DictReader(f, delimiter="\t"))

progs = rows("rules_programs.tsv")
tr = rows("rules_testrun.tsv")
veth = rows("rules_veth.tsv")
ns = {(r["program"], r["packet"]): float(r["ns"]) for r in tr}
pkts = ["first", "last", "none"]
pnames = [p["program"] for p in progs]
patronus = [p for p in pnames if p.startswith("patronus_")]
naive = [p for p in pnames if p.startswith("naive_")]
nof = lambda p: int(p.split("_")[1])
geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
fig = geo([ns[("patronus_10000", k)] / ns[("patronus_10", k)] for k in pkts]) \
    if ("patronus_10000", "first") in ns and ("patronus_10", "first") in ns else None

# plot data
with open(os.path.join(out, "rules_testrun_plot.tsv"), "w") as f:
    f.write("x\t" + "\t".join(f"patronus {k}" for k in pkts) + "\tnaive none\txdp_drop\n")
    # naive_N scans N blocklist prefixes + 10 rules: plotted at N + 10.
    naive_at = {nof(p) + 10: p for p in naive}
    xs = sorted({nof(p) for p in patronus} | set(naive_at))
    for x in xs:
        cells = [str(ns.get((f"patronus_{x}", k), "")) for k in pkts]
        cells.append(str(ns.get((naive_at.get(x), "none"), "")))
        cells.append(str(ns.get(("xdp_drop", "none"), "")))
        f.write(f"{x}\t" + "\t".join(cells) + "\n")
med = {}
for r in veth:
    med.setdefault(r["config"], []).append(r)
vm = {c: (statistics.median(float(r["cpu_ns_per_pkt"]) for r in rs),
          statistics.median(float(r["pps"]) for r in rs),
          min(float(r["reached_end"]) for r in rs), rs[0]["rules"]) for c, rs in med.items()}
vn = sorted({nof(c) for c in vm if c.startswith("patronus_")})
with open(os.path.join(out, "rules_veth_plot.tsv"), "w") as f:
    f.write("x\tpatronus (XDP)\tnft (input)\tiptables (INPUT)\txdp_drop\tstack, no rule\n")
    for x in vn:
        cells = [str(vm[c][0]) if c in vm else "" for c in (f"patronus_{x}", f"nft_{x}", f"iptables_{x}", "xdp_drop", "stack")]
        f.write(f"{x}\t" + "\t".join(cells) + "\n")
for args in (["--out", os.path.join(out, "rules_testrun.svg"), "--title", "BPF_PROG_TEST_RUN: ns per packet vs rules",
              "--xlabel", "rules", "--ylabel", "ns/run", "--logx", "--logy", os.path.join(out, "rules_testrun_plot.tsv")],
             ["--out", os.path.join(out, "rules_veth.svg"), "--title", "veth DUT: CPU ns per packet vs rules (no rule matches)",
              "--xlabel", "rules", "--ylabel", "DUT CPU ns/pkt", "--logx", "--logy", os.path.join(out, "rules_veth_plot.tsv")]):
    subprocess.run([sys.executable, plot] + args, check=True)

mism = open(os.path.join(out, "rules_mismatches.txt")).read().split("\n")
mism = [m for m in mism if m]
L = []
L.append("## Scaling with the number of rules\n")
L.append(f"Measured {'(--quick) ' if quick == '1' else ''}by `benches/rules.sh`, kernel {kernel}, {ncpu} CPUs, "
         f"commit {commit}, {elapsed} s. Figures from one run; the VM is noisy (10–30%), compare ratios.\n")
L.append("**Workload** (`benches/rulegen.py`): N rules (10, 100, 1,000, 10,000) mixing `deny`/`allow` over tcp, udp and "
         "icmp, each with its own destination port, port range or port set and its own source (a /24, an inline set of "
         "three prefixes, or a `$const` set of two). All rules are disjoint (no two match one packet), so a first-match "
         "list in file order means the same as the Patronus policy. Conntrack is **off** in the policies and unused "
         "in the nft/iptables rulesets: every packet is judged by the rules, which is what this measures (with "
         "conntrack on, established packets would skip them). Packets (UDP, same for every N except `last`): "
         "`first` matches rule 1 (deny), `last` matches rule N (allow), `none` matches no rule (default deny: the "
         "worst case of a linear list). Each policy's `test` block holds these verdicts and passes "
         "`patronusc test --engine kernel`; the test run checks the XDP return codes again.\n")
L.append("### BPF_PROG_TEST_RUN, ns per packet\n")
L.append("Programs loaded side by side (`patronusc load --pin-dir`, nothing attached; the bench's `naive_N` = N blocklist "
         "prefixes + 10 rules scanned linearly, with its own rules, so only its cost compares; `xdp_drop` is the floor, "
         "the test-run loop itself). `bpftool prog run ... repeat R` on the last CPU.\n")
L.append("| program | rules | first | last | none | x patronus_10 (geomean) | verdicts |")
L.append("|---|---:|---:|---:|---:|---:|---|")
base = [ns.get(("patronus_10", k)) for k in pkts]
for p in progs:
    name = p["program"]
    vals = [ns.get((name, k)) for k in pkts]
    ratio = geo([v / b for v, b in zip(vals, base)]) if all(vals) and all(base) else None
    checked = [r for r in tr if r["program"] == name and r["expect"] != "-"]
    if checked:
        bad = [r for r in checked if r["got"] != {"drop": "1", "pass": "2"}[r["expect"]]]
        verd = "ok" if not bad else "MISMATCH " + ", ".join(r["packet"] for r in bad)
    else:
        verd = "not checked (own rules)" if name.startswith("naive") else "-"
    L.append(f"| {name} | {p['rules']} | " + " | ".join(f"{v:.0f}" for v in vals) +
             f" | {ratio:.2f} | {verd} |" if ratio else f"| {name} | {p['rules']} | - | - | - | - | {verd} |")
L.append("")
if fig is not None:
    L.append(f"**rules_10k_vs_10 = {fig:.2f}**: geomean over the three packets of patronus_10000 / patronus_10 "
             f"(target ≤ 1.5). The naive linear program: naive_1000 / naive_10 on `none` = "
             f"{ns[('naive_1000', 'none')] / ns[('naive_10', 'none')]:.1f}x for 100x the rules.\n"
             if ("naive_1000", "none") in ns and ("naive_10", "none") in ns else
             f"**rules_10k_vs_10 = {fig:.2f}** (target ≤ 1.5).\n")
L.append("Patronus does not scan rules, so `first` and `last` differ for it only in the lookups they make: each "
         "rule phase looks the source up in a kernel LPM trie, whose walk is longer where the rules' prefixes are "
         "dense (`first` comes from 10.1.0.0/24, among 256 sibling /24s; `none` from an address no rule mentions).\n")
L.append("![test run](bench/rules_testrun.svg)\n")
L.append("| program | xlated bytes | JITed bytes | verified insns | load s |")
L.append("|---|---:|---:|---:|---:|")
for p in progs:
    L.append(f"| {p['program']} | {p['xlated_bytes']} | {p['jited_bytes']} | {p['verified_insns']} | {p['load_s']} |")
L.append("\nload s: `patronusc load` (parse, compile, verify, create maps, pin) / `bpftool prog load` + naive rule fill.\n")
if vm:
    L.append("### veth, DUT CPU ns per packet (the `none` frame)\n")
    L.append("`none` sent as fast as one CPU can (xdpgen, live-frames test run) from netns pr-gen into pr-dut over veth; "
             "the DUT's threaded NAPI runs on the last CPU. patronus_N runs in XDP on the DUT; nft_N is an inet `input` "
             "chain (the usual host firewall: after routing, so the stack's cost to reach it is included — `stack` is "
             "that cost alone, an input chain with only the final drop); iptables_N is filter INPUT "
             f"({ipt}; a rule with k source prefixes is k iptables rules, so it holds "
             "1.75 N rules). Each list ends in a counted drop: *reached end* is the share of frames that walked the "
             "whole list (or, for XDP, were dropped there), a check that the firewall, not something else, judged them. "
             "ns/pkt = DUT CPU busy time / frames received (an upper bound, see the caveats under \"The harness\"); median of "
             f"the runs.\n")
    L.append("| config | rules | DUT Mpps | DUT CPU ns/pkt | x patronus same N | reached end |")
    L.append("|---|---:|---:|---:|---:|---:|")
    order = ["xdp_drop", "stack"] + [f"{k}_{x}" for x in vn for k in ("patronus", "nft", "iptables")]
    for c in order:
        if c not in vm:
            continue
        nsp, pps, reached, rules = vm[c]
        pc = f"patronus_{c.split('_')[1]}" if "_" in c and c != "xdp_drop" else None
        rel = f"{nsp / vm[pc][0]:.1f}" if pc in vm else "-"
        L.append(f"| {c} | {rules} | {pps / 1e6:.4f} | {nsp:.0f} | {rel} | {reached * 100:.1f}% |")
    L.append("\n![veth](bench/rules_veth.svg)\n")
if mism:
    L.append("### Mismatches\n")
    L.extend(f"- {m}" for m in mism)
    L.append("")
with open(os.path.join(out, "rules.md"), "w") as f:
    f.write("\n".join(L) + "\n")
if fig is not None:
    with open(os.path.join(out, "figures.tsv"), "a") as f:
        f.write(f"rules_10k_vs_10\t{fig:.3f}\n")
print("\n".join(L))
EOF
if [ -s "$MISMATCH" ]; then
	log "verdict mismatches (see $MISMATCH):"
	cat "$MISMATCH" >&2
	exit 1
fi
log "done in $(( $(date +%s) - START )) s: $OUT/rules.md"

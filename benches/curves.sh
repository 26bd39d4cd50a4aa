#!/usr/bin/env bash
# benches/curves.sh — the scaling curves of benches/run, each from one run,
# as DIR/<curve>.tsv + DIR/<curve>.svg (benches/plot.py):
#
#   sudo benches/curves.sh --out DIR [--quick]
#
#   curve_blocklist   ns/run (BPF_PROG_TEST_RUN) vs blocklist entries
#                     10 .. 1M for Patronus and ref_xdp.c (ref's LPM trie
#                     holds 131,072 prefixes: it stops at 100k), packets
#                     blocklisted, udp_denied, tcp80_syn, tcp443_ack_est
#   curve_conntrack   ns vs conntrack entries 0 .. 1M of random distinct
#                     flows (benches/src/bin/ctfill.rs)
#   curve_mix         ns vs share of blocklisted packets 0 .. 100 %, N = 100k,
#                     Patronus and ref_xdp.c (benches/src/bin/mix.rs)
#
# Environment (benches/run sets it; computed when run alone): PATRONUSC,
# PATRONUS_BENCH_BIN, BENCH_BUILD, PLOT, PIN (bpffs scratch directory, default
# /sys/fs/bpf/patronus-bench-curves), CURVE_SIZES, MIX_N.
# The programs are built beforehand (cargo build --release -p patronus-cli
# -p patronus-bench); the pins made here are removed on exit.
set -euo pipefail
OUT=""
QUICK=${QUICK:-0}
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || { echo "curves.sh: --out needs a directory" >&2; exit 2; }
		OUT=$2; shift 2 ;;
	--quick) QUICK=1; shift ;;
	-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) echo "curves.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
	esac
done
[ -n "$OUT" ] || { echo "usage: benches/curves.sh --out DIR [--quick]" >&2; exit 2; }
source "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || die "curves.sh: run as root (BPF)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for f in "$PATRONUSC" "$PATRONUS_BENCH_BIN"/{ctfill,mix,corpus,xdpfill}; do
	[ -x "$f" ] || die "$f missing: build first (cargo build --release -p patronus-cli -p patronus-bench)"
done
mount_bpffs
build_harness

if [ "$QUICK" = 1 ]; then
	CURVE_SIZES=${CURVE_SIZES:-10 100 1000 10000}
	MIX_N=${MIX_N:-10000}
	REPEAT=20000
	CT_ARGS=(--levels "0 1000 10000" --probes 1000 --repeat 20000)
	MIX_ARGS=(--frames 300 --passes 1)
else
	CURVE_SIZES=${CURVE_SIZES:-10 100 1000 10000 100000 1000000}
	MIX_N=${MIX_N:-100000}
	REPEAT=1000000
	CT_ARGS=(--levels "0 1000 10000 100000 1000000" --probes 10000 --repeat 1000000)
	MIX_ARGS=(--frames 2000 --passes 5)
fi
# ref_xdp.c's blocklist LPM trie: BL_MAX in benches/xdp/layout.h.
REF_MAX=$(sed -nE 's/^#define BL_MAX +\(1 << ([0-9]+)\).*/\1/p' "$BENCHES_ROOT/benches/xdp/layout.h")
REF_MAX=$(( 1 << ${REF_MAX:-17} ))

PIN=${PIN:-/sys/fs/bpf/patronus-bench}/curves
cleanup() { rm -rf "$PIN"; rmdir "$(dirname "$PIN")" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$PIN"
mkdir -p "$PIN"

# Timed runs on the last CPU, like testrun.sh (run_prog reads TASKSET).
CPU=()
if [ "$(nproc)" -gt 1 ]; then CPU=(taskset -c "$(( $(nproc) - 1 ))"); fi
TASKSET="${CPU[*]}"
run_ns() { run_prog "$@"; }

PKTS="blocklisted udp_denied tcp80_syn tcp443_ack_est"
# steady verdict of a packet from packets.tsv, as an XDP return code
expect_ret() {
	awk -F'\t' -v p="$1" '$1 == p { print ($3 == "DROP") ? 1 : 2 }' "$PKT_DIR/packets.tsv"
}

# measure NAME PINNED: one ns figure per packet of PKTS (fresh state: one
# first run, 1000 warm-up repetitions, then the timed run).
measure() {
	local name=$1 pinned=$2 p res row="" want
	for p in $PKTS; do
		run_ns "$pinned" "$PKT_DIR/$p.bin" 1 >/dev/null
		run_ns "$pinned" "$PKT_DIR/$p.bin" 1000 >/dev/null
		res=$(run_ns "$pinned" "$PKT_DIR/$p.bin" "$REPEAT")
		want=$(expect_ret "$p")
		[ "${res% *}" = "$want" ] || die "$name: verdict ${res% *} on $p, expected $want"
		row+=$'\t'"${res#* }"
	done
	echo "$row"
}

# ---- (a) ns vs blocklist entries ---------------------------------------------
log "curve: ns/run vs blocklist entries ($CURVE_SIZES)"
{
	printf 'entries'
	for p in $PKTS; do printf '\tpatronus %s' "$p"; done
	for p in $PKTS; do printf '\tref_xdp %s' "$p"; done
	echo
} >"$OUT/curve_blocklist.tsv"
for n in $CURVE_SIZES; do
	load_patronus "$n" "$PIN/p"
	prow=$(measure "patronus_$n" "$PIN/p/prog")
	rm -rf "$PIN/p"
	if [ "$n" -le "$REF_MAX" ]; then
		load_ref "$n" "$PIN/r"
		rrow=$(measure "ref_$n" "$PIN/r/prog")
		rm -rf "$PIN/r"
	else
		log "ref_xdp.c: $n prefixes exceed its LPM trie ($REF_MAX); no ref point"
		rrow=$(printf '\t%.0s' $PKTS)
	fi
	echo "$n$prow$rrow" >>"$OUT/curve_blocklist.tsv"
done
python3 "$PLOT" --out "$OUT/curve_blocklist.svg" --logx \
	--title "BPF_PROG_TEST_RUN ns/run vs blocklist size" \
	--xlabel "blocklist entries (IPv4 prefixes)" --ylabel "ns per run" "$OUT/curve_blocklist.tsv"

# ---- (c) ns vs conntrack entries ----------------------------------------------
log "curve: ns vs conntrack entries"
load_patronus 10 "$PIN/ct" "conntrack-size = 1100000"
"${CPU[@]}" "$PATRONUS_BENCH_BIN/ctfill" "$PIN/ct" "${CT_ARGS[@]}" >"$OUT/curve_conntrack.tsv" \
	|| die "ctfill failed"
rm -rf "$PIN/ct"
python3 "$PLOT" --out "$OUT/curve_conntrack.svg" --logx \
	--title "Patronus ns vs conntrack entries (random flows)" \
	--xlabel "conntrack entries (0 is in the table only)" --ylabel "ns per packet" \
	"$OUT/curve_conntrack.tsv"

# ---- (d) ns vs share of blocklisted packets -----------------------------------
log "curve: ns vs share of blocklisted packets (N = $MIX_N)"
load_patronus "$MIX_N" "$PIN/mp"
mix_progs=(--prog "patronus=$PIN/mp/prog")
if [ "$MIX_N" -le "$REF_MAX" ]; then
	load_ref "$MIX_N" "$PIN/mr"
	mix_progs+=(--prog "ref_xdp=$PIN/mr/prog")
fi
"${CPU[@]}" "$PATRONUS_BENCH_BIN/mix" --blocklist "$(blocklist_file "$MIX_N")" \
	"${mix_progs[@]}" "${MIX_ARGS[@]}" >"$OUT/curve_mix.tsv" || die "mix failed"
rm -rf "$PIN/mp" "$PIN/mr"
python3 "$PLOT" --out "$OUT/curve_mix.svg" \
	--title "ns per packet vs share of blocklisted packets (N = $MIX_N)" \
	--xlabel "blocklisted packets (%)" --ylabel "mean ns per packet" "$OUT/curve_mix.tsv"
echo "mix_n	$MIX_N" >>"$OUT/curves.meta.tsv"
echo "ref_blocklist_max	$REF_MAX" >>"$OUT/curves.meta.tsv"
log "curves written to $OUT"

#!/usr/bin/env bash
# benches/testrun.sh — every program on every corpus packet under
# BPF_PROG_TEST_RUN (`bpftool prog run`), with verdict checks.
#
#   sudo benches/testrun.sh --out DIR [--repeat N] [--max-secs S]
#                           [--programs "LIST"] [--extra-pinned NAME=PATH]...
#
#   --out DIR        raw rows: DIR/testrun.tsv, .progs.tsv, .edge.tsv
#   --repeat N       repetitions of a timed run (default 2000000)
#   --max-secs S     lower the repeat count of slow programs so that one timed
#                    run takes about S seconds (default 3; 0 = never)
#   --programs LIST  of xdp_drop xdp_pass ref_N naive_N (N: a corpus
#                    blocklist size; naive up to 1000)
#   --extra-pinned NAME=PATH  a program loaded, filled and pinned by the
#                    caller (Patronus), measured like the others
#
# Per program: load and fill (ref: blocklist N, the flows and 100,000
# background flows; naive: rule array N, the same flows), then each edge
# frame once on fresh state (verdict only), then per benchmark packet: one
# run on fresh state (the "first" verdict), 1000 repetitions to calibrate
# and warm caches, the timed run (its verdict is the "steady" one).
# Prints the tables (benches/report.py testrun); exit 1 on a mismatch.
set -euo pipefail
source "$(dirname "$0")/common.sh"

REPEAT=2000000
MAX_SECS=3
PROGRAMS="xdp_drop xdp_pass ref_10 ref_1000 ref_100000 naive_10 naive_100 naive_1000"
DIR=""
EXTRA_NAMES=()
declare -A EXTRA=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) DIR=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--max-secs) MAX_SECS=$2; shift 2 ;;
	--programs) PROGRAMS=$2; shift 2 ;;
	--extra-pinned)
		[[ "$2" =~ ^[A-Za-z0-9_.-]+=.+ ]] || die "--extra-pinned expects NAME=PATH, got '$2'"
		[ -e "${2#*=}" ] || die "--extra-pinned: nothing pinned at ${2#*=}"
		EXTRA_NAMES+=("${2%%=*}"); EXTRA[${2%%=*}]=${2#*=}; shift 2 ;;
	-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) die "testrun.sh: unknown option '$1' (try --help)" ;;
	esac
done
[ -n "$DIR" ] || die "testrun.sh: --out DIR is required"
[[ "$REPEAT" =~ ^[0-9]+$ && "$REPEAT" -gt 0 ]] || die "--repeat must be a positive integer"
[ "$(id -u)" = 0 ] || die "testrun.sh: run as root (BPF)"
mkdir -p "$DIR"
OUT=$(cd "$DIR" && pwd)
mount_bpffs
build_harness

PIN=/sys/fs/bpf/patronus-testrun-$$
trap 'rm -rf "$PIN"' EXIT
trap 'exit 130' INT TERM
mkdir -p "$PIN"
RAW=$OUT/testrun.tsv
PROGS=$OUT/testrun.progs.tsv
EDGE=$OUT/testrun.edge.tsv
printf 'program\tpacket\texpect_first\texpect_steady\tfirst\tsteady\trepeat\tns\n' >"$RAW"
printf 'program\txlated_bytes\tjited_bytes\tverified_insns\tload_fill_ms\n' >"$PROGS"
printf 'program\tpacket\texpect\tgot\n' >"$EDGE"

# Timed runs on the last CPU, so all rows compare.
TASKSET=""
if [ "$(nproc)" -gt 1 ] && command -v taskset >/dev/null; then
	TASKSET="taskset -c $(( $(nproc) - 1 ))"
fi
mapfile -t PACKETS < <(tail -n +2 "$PKT_DIR/packets.tsv")
mapfile -t EDGES < <(tail -n +2 "$PKT_DIR/edge/edge.tsv")

# load NAME -> loads and fills it at $PIN/NAME; records its size and load time.
load() {
	local p=$1 t0 t1
	t0=$(date +%s%N)
	case "$p" in
	xdp_drop) load_xdp "$BENCH_BUILD/trivial_drop.o" "$PIN/$p" "$PIN/${p}_maps" ;;
	xdp_pass) load_xdp "$BENCH_BUILD/trivial_pass.o" "$PIN/$p" "$PIN/${p}_maps" ;;
	ref_*) load_xdp "$BENCH_BUILD/ref_xdp.o" "$PIN/$p" "$PIN/${p}_maps"; fill_ref "$PIN/${p}_maps" "${p#ref_}" ;;
	naive_*)
		[ -f "$BENCH_BUILD/$p.o" ] || die "no $p program (naive_10, naive_100, naive_1000)"
		load_xdp "$BENCH_BUILD/$p.o" "$PIN/$p" "$PIN/${p}_maps"; fill_naive "$PIN/${p}_maps" "${p#naive_}" ;;
	*) die "unknown program '$p'" ;;
	esac
	t1=$(date +%s%N)
	printf '%s\t%s\t%s\n' "$p" "$(prog_info "$PIN/$p")" "$(( (t1 - t0) / 1000000 ))" >>"$PROGS"
}

edges() {
	local name=$1 pinned=$2 row frame expect rest res
	for row in "${EDGES[@]}"; do
		IFS=$'\t' read -r frame expect rest <<<"$row"
		res=$(run_prog "$pinned" "$PKT_DIR/edge/$frame.bin" 1)
		printf '%s\t%s\t%s\t%s\n' "$name" "$frame" "$expect" "${res% *}" >>"$EDGE"
	done
}

measure() {
	local name=$1 pinned=$2 row pkt first steady rest res f reps ns cap
	log "test-run: $name"
	for row in "${PACKETS[@]}"; do
		IFS=$'\t' read -r pkt first steady rest <<<"$row"
		res=$(run_prog "$pinned" "$PKT_DIR/$pkt.bin" 1)
		f=${res% *}
		res=$(run_prog "$pinned" "$PKT_DIR/$pkt.bin" 1000)
		ns=${res#* }
		reps=$REPEAT
		if [ "$MAX_SECS" != 0 ] && [ "$ns" -gt 0 ]; then
			cap=$(( MAX_SECS * 1000000000 / ns ))
			[ "$cap" -lt 10000 ] && cap=10000
			[ "$cap" -lt "$reps" ] && reps=$cap
		fi
		res=$(run_prog "$pinned" "$PKT_DIR/$pkt.bin" "$reps")
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$pkt" "$first" "$steady" "$f" \
			"${res% *}" "$reps" "${res#* }" >>"$RAW"
	done
}

for p in $PROGRAMS; do
	load "$p"
	case "$p" in xdp_drop|xdp_pass) ;; *) edges "$p" "$PIN/$p" ;; esac
	measure "$p" "$PIN/$p"
	rm -rf "${PIN:?}/$p" "${PIN:?}/${p}_maps" # free the big conntrack tables early
done
for name in "${EXTRA_NAMES[@]}"; do
	printf '%s\t%s\t-\n' "$name" "$(prog_info "${EXTRA[$name]}")" >>"$PROGS"
	edges "$name" "${EXTRA[$name]}"
	measure "$name" "${EXTRA[$name]}"
done

echo "# BPF_PROG_TEST_RUN, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $(nproc) CPUs"
echo "# raw rows: $RAW"
python3 "$BENCHES_ROOT/benches/report.py" testrun "$RAW"

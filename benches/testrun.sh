#!/usr/bin/env bash
# benches/testrun.sh — the compiled reference policy against the hand-written
# ref_xdp.c, xdp_drop and the naive programs, all under BPF_PROG_TEST_RUN in
# ONE run of ../shared/bench/run_testrun.sh (so every ratio is from one run).
#
#   sudo benches/testrun.sh [--n "10 1000 100000"] [--repeat N] [--out FILE]
#
# For each blocklist size N, policies/reference.pf's meaning with the bench's
# own blocklist-N.txt is compiled by patronusc, loaded and pinned with
# `patronusc load` (nothing attached), and the two pre-established flows of
# flows.txt are fed through the policy's own tc egress program (`--out`), as
# the host would send them. The harness then measures every program side by
# side; its tables go to stdout and, with --out, to FILE (markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$(cd ../shared/bench && pwd)
NS="10 1000 100000"
REPEAT=2000000
OUT=""
while [ $# -gt 0 ]; do
	case "$1" in
	--n) NS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "benches/testrun.sh: run as root (BPF)" >&2; exit 2; }

cargo build --release --quiet -p patronus-cli
PATRONUSC=$ROOT/target/release/patronusc
make -s -C "$BENCH" >/dev/null

PIN=/sys/fs/bpf/patronus-bench
WORK=$(mktemp -d)
cleanup() { rm -rf "$PIN" "$WORK"; }
trap cleanup EXIT
rm -rf "$PIN"
mkdir -p "$PIN"

extras=()
programs="xdp_drop xdp_pass"
for n in $NS; do
	# The bench's reference.pf, with its blocklist path made absolute.
	sed "s#\"build/pkts/blocklist-[0-9]*.txt\"#\"$BENCH/build/pkts/blocklist-$n.txt\"#" \
		"$BENCH/reference.pf" >"$WORK/reference-$n.pf"
	"$PATRONUSC" load "$WORK/reference-$n.pf" --pin-dir "$PIN/$n" \
		--out "tcp 10.77.0.2:443 -> 192.0.2.20:40001 flags A" \
		--out "tcp 10.77.0.2:50000 -> 203.0.113.9:443 flags A" >&2
	extras+=(--extra-pinned "patronus_$n=$PIN/$n/prog")
	case "$n" in 10|1000|100000) programs+=" ref_$n" ;; esac
done
programs+=" naive_10 naive_1000"

"$BENCH/run_testrun.sh" --repeat "$REPEAT" --programs "$programs" "${extras[@]}" | tee "$WORK/tables.md"
if [ -n "$OUT" ]; then
	{
		echo "Measured $(date -u +%Y-%m-%d), kernel $(uname -r), commit $(git rev-parse --short HEAD)," \
			"one run of run_testrun.sh --repeat $REPEAT."
		echo
		cat "$WORK/tables.md"
	} >"$OUT"
fi

# benches/common.sh — shell functions shared by benches/run, testrun.sh,
# veth.sh, curves.sh, rules.sh and control.sh (sourced, not run). Owns:
# locating the tools, building the hand-written XDP programs
# (benches/xdp/) and writing the corpus (benches/build/pkts/), blocklists
# of any size, and loading + filling each program of the comparison:
# Patronus (benches/reference.pf through patronusc), ref_xdp.c, naive_xdp.c.
# Callers set OUT (results directory) before using blocklist_file.

die() { echo "benches: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] benches: $*" >&2; }

BENCHES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_target=${CARGO_TARGET_DIR:-$BENCHES_ROOT/target}
case "$_target" in /*) ;; *) _target=$BENCHES_ROOT/$_target ;; esac
PATRONUSC=${PATRONUSC:-$_target/release/patronusc}
PATRONUS_BENCH_BIN=${PATRONUS_BENCH_BIN:-$_target/release}
PLOT=${PLOT:-$BENCHES_ROOT/benches/plot.py}
# Build products of the harness: BPF objects and the corpus files.
BENCH_BUILD=${BENCH_BUILD:-$BENCHES_ROOT/benches/build}
PKT_DIR=$BENCH_BUILD/pkts
REFERENCE_PF=$BENCHES_ROOT/benches/reference.pf
export PATRONUSC PATRONUS_BENCH_BIN PLOT BENCH_BUILD

# quiet CMD...: runs CMD, showing its output only when it fails.
quiet() {
	local out
	out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}

mount_bpffs() {
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs on /sys/fs/bpf"
}

# build_harness: the BPF objects (make -C benches/xdp) and the corpus
# (frames, packets.tsv, edge/, flows.txt, blocklists, naive rules).
build_harness() {
	command -v clang >/dev/null || die "clang not found (scripts/setup --bench)"
	command -v bpftool >/dev/null || die "bpftool not found (scripts/setup --bench)"
	[ -x "$PATRONUS_BENCH_BIN/corpus" ] || die "no corpus binary in $PATRONUS_BENCH_BIN (cargo build --release -p patronus-bench)"
	make -s -C "$BENCHES_ROOT/benches/xdp" OUT="$BENCH_BUILD" >&2 || die "make -C benches/xdp failed"
	quiet "$PATRONUS_BENCH_BIN/corpus" "$PKT_DIR" || die "writing the corpus to $PKT_DIR failed"
}

# blocklist_file N: the corpus's file for its sizes (10, 100, 1000,
# 100000), else OUT/blocklist-N.txt (generated if missing, same generator).
blocklist_file() {
	if [ -f "$PKT_DIR/blocklist-$1.txt" ]; then
		echo "$PKT_DIR/blocklist-$1.txt"
	else
		[ -f "$OUT/blocklist-$1.txt" ] || "$PATRONUS_BENCH_BIN/corpus" blocklist "$1" "$OUT/blocklist-$1.txt" \
			|| die "writing blocklist-$1 failed"
		echo "$OUT/blocklist-$1.txt"
	fi
}

# reference_pf N FILE [OPTION_LINE]: benches/reference.pf with blocklist N
# and OPTION_LINE added to its options block, written to FILE. patronusc
# reads table files only from beside the policy (or under --allow-path),
# so the list is copied next to FILE when it lives elsewhere.
reference_pf() {
	local list dir
	list=$(blocklist_file "$1")
	dir=$(cd "$(dirname "$2")" && pwd)
	if [ "$(cd "$(dirname "$list")" && pwd)" != "$dir" ]; then
		cp -f "$list" "$dir/" || die "copying $list next to $2 failed"
	fi
	list=$(basename "$list")
	sed -e "s#\"build/pkts/blocklist-[0-9]*.txt\"#\"$list\"#" "$REFERENCE_PF" >"$2"
	if [ -n "${3:-}" ]; then
		sed -i "s#^  conntrack = on\$#  conntrack = on\n  $3#" "$2"
		grep -qF "$3" "$2" || die "could not add '$3' to $2"
	fi
}

# load_patronus N DIR [OPTION_LINE]: the reference policy with blocklist N,
# loaded and pinned at DIR (DIR/prog, DIR/maps), nothing attached; the
# corpus's two established flows are recorded through the policy's own
# egress program (--out).
load_patronus() {
	local n=$1 dir=$2 pf=$OUT/reference-$1.pf
	reference_pf "$n" "$pf" "${3:-}"
	rm -rf "$dir"
	"$PATRONUSC" load "$pf" --pin-dir "$dir" \
		--out "tcp 10.77.0.2:443 -> 192.0.2.20:40001 flags A" \
		--out "tcp 10.77.0.2:50000 -> 203.0.113.9:443 flags A" >&2 \
		|| die "patronusc load (N=$n) failed"
}

# load_xdp OBJ PINNED MAPDIR: OBJ's program as type xdp at PINNED, its maps
# pinned under MAPDIR.
load_xdp() {
	rm -rf "$2" "$3"
	mkdir -p "$(dirname "$2")"
	bpftool prog load "$1" "$2" type xdp pinmaps "$3" || die "bpftool prog load $1 failed"
}

# fill_ref MAPDIR N / fill_naive MAPDIR N: blocklist (or rule array) N, the
# established flows and 100,000 background flows, so conntrack lookups hit
# a populated table.
fill_ref() {
	local list
	list=$(blocklist_file "$2")
	quiet "$PATRONUS_BENCH_BIN/xdpfill" blocklist "$1" "$list" || die "xdpfill blocklist failed"
	quiet "$PATRONUS_BENCH_BIN/xdpfill" flows "$1" "$PKT_DIR/flows.txt" 100000 || die "xdpfill flows failed"
}
fill_naive() {
	quiet "$PATRONUS_BENCH_BIN/xdpfill" rules "$1" "$PKT_DIR/naive-rules-$2.txt" || die "xdpfill rules failed"
	quiet "$PATRONUS_BENCH_BIN/xdpfill" flows "$1" "$PKT_DIR/flows.txt" 100000 || die "xdpfill flows failed"
}

# load_ref N DIR: ref_xdp.c at DIR/prog, maps at DIR/maps, filled (N).
load_ref() {
	load_xdp "$BENCH_BUILD/ref_xdp.o" "$2/prog" "$2/maps"
	fill_ref "$2/maps" "$1"
}

# prog_info PINNED: "xlated_bytes<TAB>jited_bytes<TAB>verified_insns".
prog_info() {
	"$PATRONUS_BENCH_BIN/xdpfill" info "$1" | tr ' ' '\t'
}

# run_prog PINNED FRAME REPEAT -> "RET NS" (BPF_PROG_TEST_RUN via bpftool;
# TASKSET, when set, pins it to the measuring CPU).
run_prog() {
	local out res
	out=$(${TASKSET:-} bpftool prog run pinned "$1" data_in "$2" repeat "$3" 2>&1) \
		|| die "bpftool prog run $1 $2 failed: $out"
	# "Return value: 2, duration (average): 25ns" (repeat 1: "duration: 25ns")
	res=$(sed -nE 's/^Return value: ([0-9]+), duration( \(average\))?: ([0-9]+)ns.*/\1 \3/p' <<<"$out")
	[ -n "$res" ] || die "unexpected output of bpftool prog run: $out"
	echo "$res"
}

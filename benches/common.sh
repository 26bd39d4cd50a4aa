# benches/common.sh — shell functions shared by benches/run and
# benches/curves.sh (sourced, not run). Owns: locating the tools and the
# shared harness, generating the blocklists the harness does not ship, and
# loading the harness's reference.pf through patronusc.
# Callers set OUT (results directory) before using blocklist_file.

die() { echo "benches: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] benches: $*" >&2; }

BENCHES_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${BENCH:-$(cd "$BENCHES_ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$BENCH" ] && [ -d "$BENCH" ] || die "../shared/bench (the benchmark harness) not found next to the repository"
_target=${CARGO_TARGET_DIR:-$BENCHES_ROOT/target}
case "$_target" in /*) ;; *) _target=$BENCHES_ROOT/$_target ;; esac
PATRONUSC=${PATRONUSC:-$_target/release/patronusc}
PATRONUS_BENCH_BIN=${PATRONUS_BENCH_BIN:-$_target/release}
PLOT=${PLOT:-$BENCHES_ROOT/benches/plot.py}
export BENCH PATRONUSC PATRONUS_BENCH_BIN PLOT

# gen_blocklist N FILE: N random IPv4 prefixes with the harness's own
# generator and seed rule (seed N; the last is 198.51.100.0/24, which the
# `blocklisted` packet needs), plus its one IPv6 prefix.
gen_blocklist() {
	python3 - "$BENCH/pkts" "$1" "$2" <<'PY'
import random, sys
sys.path.insert(0, sys.argv[1])
from gen import random_blocklist, BLOCKED_SRC, BLOCKED_V6_PREFIX
n = int(sys.argv[2])
prefixes = random_blocklist(n, random.Random(n))
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write(f"# {n} IPv4 prefixes (seed {n}); the last holds {BLOCKED_SRC}\n")
    f.write("\n".join(prefixes) + "\n")
    f.write(f"# one IPv6 prefix\n{BLOCKED_V6_PREFIX}\n")
PY
	mv "$2.tmp" "$2"
}

# blocklist_file N: the harness's file for its sizes (10, 100, 1000,
# 100000), else OUT/blocklist-N.txt (generated if missing).
blocklist_file() {
	if [ -f "$BENCH/build/pkts/blocklist-$1.txt" ]; then
		echo "$BENCH/build/pkts/blocklist-$1.txt"
	else
		[ -f "$OUT/blocklist-$1.txt" ] || gen_blocklist "$1" "$OUT/blocklist-$1.txt"
		echo "$OUT/blocklist-$1.txt"
	fi
}

# load_patronus N DIR [OPTION_LINE]: the harness's reference.pf with
# blocklist N (and OPTION_LINE added to its options block), loaded and
# pinned at DIR, nothing attached; the two pre-established flows of
# flows.txt are recorded through the policy's own egress program.
load_patronus() {
	local n=$1 dir=$2 extra=${3:-} file pf
	file=$(blocklist_file "$n")
	pf=$OUT/reference-$n.pf
	sed -e "s#\"build/pkts/blocklist-[0-9]*.txt\"#\"$file\"#" "$BENCH/reference.pf" >"$pf"
	if [ -n "$extra" ]; then
		sed -i "s#^  conntrack = on\$#  conntrack = on\n  $extra#" "$pf"
		grep -qF "$extra" "$pf" || die "could not add '$extra' to $pf"
	fi
	rm -rf "$dir"
	"$PATRONUSC" load "$pf" --pin-dir "$dir" \
		--out "tcp 10.77.0.2:443 -> 192.0.2.20:40001 flags A" \
		--out "tcp 10.77.0.2:50000 -> 203.0.113.9:443 flags A" >&2 \
		|| die "patronusc load (N=$n) failed"
}

# load_ref N DIR: ref_xdp.c pinned at DIR/prog, maps at DIR/maps, filled like
# run_testrun.sh fills it (blocklist N, flows.txt + 100k background flows).
load_ref() {
	local n=$1 dir=$2 file
	file=$(blocklist_file "$n")
	rm -rf "$dir"
	mkdir -p "$dir"
	bpftool prog load "$BENCH/build/ref_xdp.o" "$dir/prog" type xdp pinmaps "$dir/maps" \
		|| die "bpftool prog load ref_xdp.o failed"
	"$BENCH/build/hbfill" blocklist "$dir/maps" "$file" >&2 || die "hbfill blocklist ($file) failed"
	"$BENCH/build/hbfill" flows "$dir/maps" "$BENCH/build/pkts/flows.txt" 100000 >&2 \
		|| die "hbfill flows failed"
}

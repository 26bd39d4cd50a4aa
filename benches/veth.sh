#!/usr/bin/env bash
# benches/veth.sh — end-to-end packet rate over a veth pair: a generator
# namespace sends one corpus frame as fast as one CPU can into a device under
# test (DUT) namespace whose receive path runs on another CPU, for each
# firewall configuration.
#
#   sudo benches/veth.sh --out DIR [--n N] [--secs S] [--reps R]
#                        [--profiles "LIST"] [--configs "LIST"]
#                        [--extra-pinned NAME=PATH]...
#
#   --out DIR        raw rows in DIR/veth.tsv, rulesets in DIR/veth/
#   --n N            blocklist size of ref, nft, iptables (a corpus size:
#                    10, 100, 1000, 100000; default 1000); naive uses
#                    naive_min(N, 1000)
#   --secs S         measured seconds per run (1..8, default 5)
#   --reps R         runs per configuration (default 3; the median counts)
#   --profiles LIST  corpus packets to send (default "udp_denied blocklisted")
#   --configs LIST   of none xdp_pass xdp_drop ref naive nft iptables
#                    xdp-filter (default all; extras are appended)
#   --extra-pinned NAME=PATH  an XDP program pinned by the caller, attached
#                    to the DUT as configuration extra:NAME
#
# Runs go round robin (run 1 of every configuration, then run 2, ...) after a
# discarded warm-up per profile, so a slow patch of a shared machine does not
# land on one configuration. Each run: 1 s warm-up, S s measured; the
# generator stops by itself (xdpgen's deadline, and timeout(1)). The
# namespaces and pins are removed on any exit.
set -euo pipefail
source "$(dirname "$0")/common.sh"

DIR=""
N=1000
SECS=5
REPS=3
WARMUP=1
PROFILES="udp_denied blocklisted"
CONFIGS="none xdp_pass xdp_drop ref naive nft iptables xdp-filter"
EXTRA_NAMES=()
declare -A EXTRA=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) DIR=$2; shift 2 ;;
	--n) N=$2; shift 2 ;;
	--secs) SECS=$2; shift 2 ;;
	--reps) REPS=$2; shift 2 ;;
	--profiles) PROFILES=$2; shift 2 ;;
	--configs) CONFIGS=$2; shift 2 ;;
	--extra-pinned)
		[[ "$2" =~ ^[A-Za-z0-9_.-]+=.+ ]] || die "--extra-pinned expects NAME=PATH, got '$2'"
		[ -e "${2#*=}" ] || die "--extra-pinned: nothing pinned at ${2#*=}"
		EXTRA_NAMES+=("${2%%=*}"); EXTRA[${2%%=*}]=${2#*=}; shift 2 ;;
	-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) die "veth.sh: unknown option '$1' (try --help)" ;;
	esac
done
[ -n "$DIR" ] || die "veth.sh: --out DIR is required"
[[ "$SECS" =~ ^[1-8]$ ]] || die "--secs must be 1..8"
[[ "$REPS" =~ ^[0-9]+$ && "$REPS" -ge 1 ]] || die "--reps must be a positive integer"
case "$N" in 10|100|1000|100000) ;; *) die "--n must be 10, 100, 1000 or 100000" ;; esac
NAIVE_N=$(( N > 1000 ? 1000 : N ))
[ "$(id -u)" = 0 ] || die "veth.sh: run as root (BPF, XDP, network namespaces)"
for tool in ip ethtool nsenter taskset timeout; do
	command -v "$tool" >/dev/null || die "$tool not found (scripts/setup --bench)"
done
[ -x "$PATRONUS_BENCH_BIN/xdpgen" ] || die "no xdpgen in $PATRONUS_BENCH_BIN (cargo build --release -p patronus-bench)"
mkdir -p "$DIR/veth"
OUT=$(cd "$DIR" && pwd)
mount_bpffs
build_harness
for p in $PROFILES; do
	[ -f "$PKT_DIR/$p.bin" ] || die "no corpus packet '$p' (see $PKT_DIR/packets.tsv)"
done

# Names of this run only, so two runs (or other tests) never collide.
GEN_NS=pb-gen-$$
DUT_NS=pb-dut-$$
GEN_IF=pbg0
DUT_IF=pbd0
PIN=/sys/fs/bpf/patronus-veth-$$
NCPU=$(nproc)
GEN_CPU=0
DUT_CPU=$(( NCPU - 1 ))
[ "$NCPU" -ge 2 ] || log "one CPU: generator and DUT share it; the figures are a lower bound"

in_dut() { ip netns exec "$DUT_NS" "$@"; }
# `ip netns exec` remounts /sys and hides bpffs: pinned programs and
# libxdp need the network namespace alone.
in_dut_net() { nsenter --net="/run/netns/$DUT_NS" "$@"; }

XDP_FILTER=0
GEN_PID=""
cleanup() {
	set +e
	[ -n "$GEN_PID" ] && kill "$GEN_PID" 2>/dev/null && wait "$GEN_PID" 2>/dev/null
	[ "$XDP_FILTER" = 1 ] && in_dut_net xdp-filter unload "$DUT_IF" >/dev/null 2>&1
	ip netns del "$GEN_NS" 2>/dev/null
	ip netns del "$DUT_NS" 2>/dev/null
	rm -rf "$PIN"
	# libxdp leaves an empty state directory behind.
	rmdir /sys/fs/bpf/xdp 2>/dev/null
	true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# This script and everything it starts stay off the DUT's CPU.
taskset -pc "$GEN_CPU" $$ >/dev/null

setup_netns() {
	ip netns add "$GEN_NS"
	ip netns add "$DUT_NS"
	# The corpus frames' MACs (patronus_compiler::packet), so the DUT takes
	# them as its own; its addresses are the frames' destinations.
	ip link add "$GEN_IF" netns "$GEN_NS" address 02:50:54:00:00:01 type veth \
		peer name "$DUT_IF" netns "$DUT_NS" address 02:50:54:00:00:02
	# No IPv6 on the generator: no router or neighbor solicitations of its own.
	ip netns exec "$GEN_NS" sysctl -qw "net.ipv6.conf.$GEN_IF.disable_ipv6=1"
	ip -n "$GEN_NS" addr add 10.77.0.1/24 dev "$GEN_IF"
	in_dut sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
		"net.ipv4.conf.$DUT_IF.rp_filter=0" "net.ipv6.conf.$DUT_IF.accept_ra=0"
	ip -n "$DUT_NS" addr add 10.77.0.2/24 dev "$DUT_IF"
	ip -n "$DUT_NS" addr add fd00:77::2/64 dev "$DUT_IF" nodad
	for ns in "$GEN_NS" "$DUT_NS"; do ip -n "$ns" link set lo up; done
	ip -n "$GEN_NS" link set "$GEN_IF" up
	ip -n "$DUT_NS" link set "$DUT_IF" up
	# veth takes XDP frames from its peer only when NAPI runs on the
	# receiving side (an XDP program or GRO turns it on): GRO on for the
	# configurations without XDP; threaded NAPI so the DUT's receive path
	# runs on a CPU of its own instead of in the generator's softirq.
	in_dut ethtool -K "$DUT_IF" gro on >/dev/null
	in_dut sh -c "echo 1 > /sys/class/net/$DUT_IF/threaded"
}

pin_napi() {
	local pid found=0
	for pid in $(ps -eo pid=,comm= | awk -v re="^napi/$DUT_IF-[0-9]+\$" '$2 ~ re { print $1 }'); do
		taskset -pc "$DUT_CPU" "$pid" >/dev/null && found=1
	done
	[ "$found" = 1 ] || die "no NAPI thread for $DUT_IF (threaded NAPI off?)"
}

# Rulesets from benches/rulesets/, the blocklist filled in.
write_rulesets() {
	local list v4 v6
	list=$(blocklist_file "$N")
	v4=$(grep -v '^#' "$list" | grep -v ':' || true)
	v6=$(grep -v '^#' "$list" | grep ':' || true)
	awk -v iface="$DUT_IF" -v b4="$(paste -sd, <<<"$v4" | sed 's/,/, /g')" \
		-v b6="$(paste -sd, <<<"$v6" | sed 's/,/, /g')" \
		'{ gsub(/@IFACE@/, iface); gsub(/@BLOCK4@/, b4); gsub(/@BLOCK6@/, b6); print }' \
		"$BENCHES_ROOT/benches/rulesets/reference.nft" >"$OUT/veth/reference-$N.nft"
	awk -v rules="$(sed 's#^#-A PREROUTING -s #; s#$# -j DROP#' <<<"$v4")" \
		'$0 == "@BLOCK4@" { print rules; next } { print }' \
		"$BENCHES_ROOT/benches/rulesets/reference.iptables" >"$OUT/veth/iptables-$N.rules"
	awk -v rules="$(sed 's#^#-A PREROUTING -s #; s#$# -j DROP#' <<<"$v6")" \
		'$0 == "@BLOCK6@" { print rules; next } { print }' \
		"$BENCHES_ROOT/benches/rulesets/reference.ip6tables" >"$OUT/veth/ip6tables-$N.rules"
}

IPT4=iptables-legacy
IPT6=ip6tables-legacy
command -v iptables-legacy-restore >/dev/null || { IPT4=iptables; IPT6=ip6tables; }

available() {
	case "$1" in
	nft) command -v nft >/dev/null ;;
	iptables) command -v "$IPT4-restore" >/dev/null && command -v "$IPT6-restore" >/dev/null ;;
	xdp-filter) command -v xdp-filter >/dev/null ;;
	*) return 0 ;;
	esac
}

attach() { in_dut_net ip link set dev "$DUT_IF" xdpdrv pinned "$1"; }
detach() { in_dut_net ip link set dev "$DUT_IF" xdpdrv off; }

config_up() {
	case "$1" in
	none) ;;
	xdp_pass|xdp_drop)
		load_xdp "$BENCH_BUILD/trivial_${1#xdp_}.o" "$PIN/$1" "$PIN/$1_maps"
		attach "$PIN/$1" ;;
	ref)
		load_ref "$N" "$PIN/ref"
		attach "$PIN/ref/prog" ;;
	naive)
		load_xdp "$BENCH_BUILD/naive_$NAIVE_N.o" "$PIN/naive" "$PIN/naive_maps"
		fill_naive "$PIN/naive_maps" "$NAIVE_N"
		attach "$PIN/naive" ;;
	nft) in_dut nft -f "$OUT/veth/reference-$N.nft" || die "nft -f reference-$N.nft failed" ;;
	iptables)
		in_dut "$IPT4-restore" <"$OUT/veth/iptables-$N.rules" || die "$IPT4-restore failed"
		in_dut "$IPT6-restore" <"$OUT/veth/ip6tables-$N.rules" || die "$IPT6-restore failed" ;;
	xdp-filter)
		XDP_FILTER=1
		IFACE=$DUT_IF
		# shellcheck source=/dev/null
		source "$BENCHES_ROOT/benches/rulesets/xdp-filter.sh" || die "xdp-filter set-up failed" ;;
	extra:*) attach "${EXTRA[${1#extra:}]}" ;;
	*) die "unknown configuration '$1'" ;;
	esac
}

config_down() {
	case "$1" in
	none) ;;
	xdp_pass|xdp_drop|ref|naive) detach; rm -rf "${PIN:?}/$1" "${PIN:?}/$1_maps" ;;
	nft) in_dut nft flush ruleset ;;
	iptables)
		for t in raw filter; do in_dut "$IPT4" -t "$t" -F; in_dut "$IPT6" -t "$t" -F; done
		for c in INPUT FORWARD; do in_dut "$IPT4" -P "$c" ACCEPT; in_dut "$IPT6" -P "$c" ACCEPT; done ;;
	xdp-filter) in_dut_net xdp-filter unload "$DUT_IF"; XDP_FILTER=0 ;;
	extra:*) detach ;;
	esac
}

# sample -> "NS RX_PACKETS RX_DROPPED TX_PACKETS XDP_DROPS BUSY_TICKS ALL_TICKS"
sample() {
	local counters cpu
	# One namespace entry reads all counters together.
	counters=$(in_dut sh -c "cd /sys/class/net/$DUT_IF/statistics &&
		cat rx_packets rx_dropped tx_packets &&
		ethtool -S $DUT_IF | awk '/rx_queue_[0-9]+_xdp_drops:/ { s += \$2 } END { print s + 0 }'" | paste -sd' ')
	# cpuN user nice system idle iowait irq softirq ...
	cpu=$(awk -v c="cpu$DUT_CPU" '$1 == c { b = $2 + $3 + $4 + $7 + $8; print b, b + $5 + $6 }' /proc/stat)
	echo "$(date +%s%N) $counters $cpu"
}

generate() { # generate FRAME SECONDS
	timeout $(( ${2%.*} + 5 )) ip netns exec "$GEN_NS" taskset -c "$GEN_CPU" \
		"$PATRONUS_BENCH_BIN/xdpgen" "$GEN_IF" "$PKT_DIR/$1.bin" "$2"
}

measure() { # measure PROFILE CONFIG RUN
	local log=$OUT/veth/gen.log s0 s1 rc=0
	pin_napi
	generate "$1" "$(( WARMUP + SECS )).5" >"$log" 2>&1 &
	GEN_PID=$!
	sleep "$WARMUP"
	s0=$(sample)
	sleep "$SECS"
	s1=$(sample)
	wait "$GEN_PID" || rc=$?
	GEN_PID=""
	[ "$rc" = 0 ] || { cat "$log" >&2; die "generator failed ($1 / $2)"; }
	awk -v p="$1" -v c="$2" -v r="$3" -v a="$s0" -v b="$s1" -v g="$(cat "$log")" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		secs = (y[1] - x[1]) / 1e9; pkts = y[2] - x[2]
		busy = (y[7] > x[7]) ? (y[6] - x[6]) / (y[7] - x[7]) : 0
		match(g, /pps=[0-9.]+/); offered = substr(g, RSTART + 4, RLENGTH - 4)
		printf "%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.4f\t%.1f\t%.4f\t%d\n", p, c, r, pkts / secs, offered,
			(y[3] - x[3]) / secs, busy, pkts ? busy * secs * 1e9 / pkts : 0,
			pkts ? (y[5] - x[5]) / pkts : 0, y[4] - x[4]
	}' >>"$RAW"
	tail -n 1 "$RAW" | awk -F'\t' '{ printf "    %-12s %-14s run %s: %.3f Mpps at DUT, CPU %.0f%%, %.0f%% dropped in XDP, DUT sent %d\n",
		$1, $2, $3, $4 / 1e6, $7 * 100, $9 * 100, $10 }' >&2
}

RAW=$OUT/veth.tsv
printf 'profile\tconfig\trep\tpps\toffered_pps\tring_drop_pps\tbusy\tcpu_ns_per_pkt\txdp_drop_frac\tdut_tx\n' >"$RAW"
mkdir -p "$PIN"
setup_netns
write_rulesets
RUN=()
for c in $CONFIGS; do
	if available "$c"; then RUN+=("$c"); else log "skipping $c: not installed"; fi
done
for name in "${EXTRA_NAMES[@]}"; do RUN+=("extra:$name"); done

for profile in $PROFILES; do
	log "veth: profile $profile, warm-up run (discarded)"
	generate "$profile" 2 >/dev/null
	for rep in $(seq 1 "$REPS"); do
		for c in "${RUN[@]}"; do
			log "veth: profile $profile, $c, run $rep of $REPS"
			config_up "$c"
			measure "$profile" "$c" "$rep"
			config_down "$c"
			sleep 0.5 # deferred frees (page pools, RCU) finish off the clock
		done
	done
done

echo "# veth end to end, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $NCPU CPUs;" \
	"generator on CPU $GEN_CPU, DUT NAPI thread on CPU $DUT_CPU; blocklist N=$N; ${SECS}s x $REPS runs"
echo "# raw rows: $RAW"
python3 "$BENCHES_ROOT/benches/report.py" veth "$RAW"

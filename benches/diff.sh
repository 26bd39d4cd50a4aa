#!/usr/bin/env bash
# benches/diff.sh — `patronusc diff` speed on large policies.
#
#   benches/diff.sh --out DIR [--quick]
#
# Policies of N rules from benches/rulegen.py (disjoint rules over tcp, udp
# and icmp, own sources per rule) against an edited copy: every 50th rule's
# action flipped (allow <-> deny), every 97th rule's port moved, every
# 500th rule removed, so hundreds of regions change. Measures the wall time
# of `patronusc diff OLD NEW --format json` (parse, check and lower both,
# compute the regions, describe them; median of 5 runs), of a policy
# against itself, and of `--all`, and checks the reported verdict changes
# against the edits (every flipped or moved rule shows up).
#
# Writes DIR/diff.md (a `## ` section), DIR/diff.tsv, and appends
# diff_10k_rules_s and diff_10k_rules_cpu_s (N = 10,000; wall, and user +
# system CPU) to DIR/figures.tsv. No root needed.
# Env: PATRONUSC (computed when unset: target/release/patronusc).
# --quick: N = 1,000 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "benches/diff.sh: error: $*" >&2; exit 1; }

OUT=""
QUICK=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
	--quick) QUICK=1; shift ;;
	-h | --help) usage ;;
	*) echo "benches/diff.sh: unknown option $1" >&2; usage ;;
	esac
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PATRONUSC=${PATRONUSC:-$ROOT/target/release/patronusc}
[ -x "$PATRONUSC" ] || die "no $PATRONUSC (cargo build --release -p patronus-cli)"

if [ "$QUICK" = 1 ]; then SIZES="1000"; else SIZES="1000 10000"; fi
WORK=$OUT/diff
mkdir -p "$WORK"
python3 "$ROOT/benches/rulegen.py" --out "$WORK" $SIZES >/dev/null

# The edited copy of patronus_N.pf: flip, move and remove rules (the
# `test` block is dropped; it pins the old behaviour).
edit() {
	python3 - "$1" "$2" <<'PY'
import re, sys
src, dst = sys.argv[1], sys.argv[2]
out, i = [], 0
for line in open(src, encoding="utf-8"):
    if line.startswith("test "):
        break
    if line.startswith(("allow ", "deny ")):
        if i % 500 == 499:
            i += 1
            continue
        if i % 50 == 49:
            line = ("deny " + line[6:]) if line.startswith("allow ") else ("allow " + line[5:])
        elif i % 97 == 96:
            line = re.sub(r"port [\d\-{}, ]+", lambda m: re.sub(r"\d+", lambda d: str(int(d.group()) % 30000 + 30000), m.group()), line, count=1)
        i += 1
    out.append(line)
open(dst, "w", encoding="utf-8").write("".join(out))
PY
}

# Median of 5 runs of "$@" (stdout discarded): "WALL CPU" in seconds, CPU
# being user + system time. On a shared machine the CPU time is the steady
# figure; wall time also counts waiting for a core.
seconds() {
	local walls=() cpus=() t
	t=$(mktemp)
	for _ in 1 2 3 4 5; do
		/usr/bin/time -f '%e %U %S' -o "$t" "$@" >/dev/null || [ $? = 1 ] || die "$* failed"
		read -r wall user sys <"$t"
		walls+=("$wall")
		cpus+=("$(echo "$user + $sys" | bc -l)")
	done
	rm -f "$t"
	echo "$(printf '%s\n' "${walls[@]}" | sort -g | sed -n 3p) $(printf '%s\n' "${cpus[@]}" | sort -g | sed -n 3p)"
}

printf 'rules\tdiff_s\tdiff_cpu_s\tself_s\tall_s\tverdict_regions\n' >"$OUT/diff.tsv"
for n in $SIZES; do
	old=$WORK/patronus_$n.pf
	new=$WORK/edited_$n.pf
	edit "$old" "$new"
	"$PATRONUSC" diff "$old" "$new" --format json >"$WORK/diff_$n.json" || [ $? = 1 ] || die "diff failed"
	regions=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict_changes"])' "$WORK/diff_$n.json")
	[ "$regions" -gt 0 ] || die "N=$n: no verdict change reported for an edited policy"
	self_regions=$("$PATRONUSC" diff "$old" "$old" --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["regions"]))')
	[ "$self_regions" = 0 ] || die "N=$n: a policy diffed with itself reported $self_regions regions"
	read -r d dc <<<"$(seconds "$PATRONUSC" diff "$old" "$new" --format json)"
	read -r s _ <<<"$(seconds "$PATRONUSC" diff "$old" "$old" --format json)"
	read -r a _ <<<"$(seconds "$PATRONUSC" diff --all "$old" "$new" --format json)"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$d" "$dc" "$s" "$a" "$regions" >>"$OUT/diff.tsv"
	if [ "$n" = 10000 ]; then
		printf 'diff_10k_rules_s\t%s\n' "$d" >>"$OUT/figures.tsv"
		printf 'diff_10k_rules_cpu_s\t%s\n' "$dc" >>"$OUT/figures.tsv"
	fi
done

{
	echo "## Policy diff"
	echo
	echo "\`patronusc diff OLD NEW --format json\` wall time (median of 5): rulegen.py policies"
	echo "against a copy with every 50th rule's action flipped, every 97th rule's port moved and"
	echo "every 500th rule removed; \`self\`: the policy against itself; \`all\`: with \`--all\`."
	echo "CPU is user + system time (steady on a shared machine; wall also counts waiting for a core)."
	echo "Target: 10,000 rules against 10,000 rules in at most 1 s."
	echo
	echo "| rules | diff wall (s) | diff CPU (s) | self wall (s) | --all wall (s) | regions changing verdict |"
	echo "|---|---|---|---|---|---|"
	tail -n +2 "$OUT/diff.tsv" | while IFS=$'\t' read -r n d dc s a r; do
		printf '| %s | %.3f | %.3f | %.3f | %.3f | %s |\n' "$n" "$d" "$dc" "$s" "$a" "$r"
	done
} >"$OUT/diff.md"
cat "$OUT/diff.md"

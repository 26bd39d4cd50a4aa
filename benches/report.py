#!/usr/bin/env python3
"""benches/report.py DIR > benchmarks.md — docs/benchmarks.md from one run.
   benches/report.py testrun RAW.tsv / veth RAW.tsv — the markdown tables of
   one testrun.sh / veth.sh run (they call it; exit 1 on a verdict mismatch).

Owns: deriving benches/run's own key figures from the raw files of DIR
(testrun.tsv, testrun.progs.tsv, veth.tsv), appending them to DIR/figures.tsv,
and assembling the markdown: header, targets table (from figures.tsv),
test-run and veth tables, the curves (DIR/curve_*.tsv + .svg) and the
sections the sub-benches wrote (DIR/rules.md, DIR/control.md).
Stdlib only. A figure whose inputs are missing is left out of figures.tsv
and shows as "not measured".
"""

import csv
import math
import os
import statistics
import sys


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader((ln for ln in f if not ln.startswith("#")), delimiter="\t"))


def read_kv(path):
    out = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for ln in f:
                if "\t" in ln:
                    k, v = ln.rstrip("\n").split("\t", 1)
                    out[k.strip()] = v.strip()
    return out


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def ns_table(rows):
    """program -> packet -> ns from testrun.tsv."""
    t = {}
    for r in rows:
        try:
            t.setdefault(r["program"], {})[r["packet"]] = float(r["ns"])
        except (KeyError, ValueError):
            continue
    return t


def ratios(t, a, b):
    """per-packet ns ratio a/b over the packets both measured."""
    if a not in t or b not in t:
        return {}
    return {p: t[a][p] / t[b][p] for p in t[a] if p in t[b] and t[b][p] > 0 and t[a][p] > 0}


def derive(d):
    """Our figures, as (key, value, note) triples."""
    figs, notes = {}, {}
    t = ns_table(read_tsv(os.path.join(d, "testrun.tsv")))
    worst = None
    for n in ("10", "1000", "100000"):
        r = ratios(t, f"patronus_{n}", f"ref_{n}")
        if r:
            figs[f"testrun_geomean_vs_ref_{n}"] = geomean(list(r.values()))
            p, v = max(r.items(), key=lambda kv: kv[1])
            if worst is None or v > worst[2]:
                worst = (n, p, v)
    if worst:
        figs["testrun_worst_packet_vs_ref"] = worst[2]
        notes["testrun_worst_packet_vs_ref"] = f"{worst[1]}, N={int(worst[0]):,}"
    r = ratios(t, "patronus_1000000", "patronus_10")
    if r:
        figs["testrun_1M_vs_10"] = geomean(list(r.values()))
    progs = {r["program"]: r for r in read_tsv(os.path.join(d, "testrun.progs.tsv"))}
    for key, prog in (("verified_insns_reference", "patronus_1000"), ("verified_insns_ref_xdp", "ref_1000")):
        v = progs.get(prog, {}).get("verified_insns", "")
        if v.isdigit():
            figs[key] = int(v)
            notes[key] = prog
    veth = [r for r in read_tsv(os.path.join(d, "veth.tsv")) if r.get("profile") == "udp_denied"]
    med = {}
    for c in {r["config"] for r in veth}:
        try:
            med[c.removeprefix("extra:")] = statistics.median(
                float(r["cpu_ns_per_pkt"]) for r in veth if r["config"] == c)
        except ValueError:
            pass
    if med.get("patronus"):
        for key, c in (("veth_ns_vs_nft", "nft"), ("veth_ns_vs_iptables", "iptables")):
            if c in med:
                figs[key] = med[c] / med["patronus"]
        if med.get("xdp_drop"):
            figs["veth_ns_vs_xdp_drop"] = med["patronus"] / med["xdp_drop"]
    return figs, notes, t


# (label, key, comparison, target); target None = compare against another key
TARGETS = [
    ("test-run geomean ns, Patronus / ref_xdp.c, N = 10", "testrun_geomean_vs_ref_10", "<=", 1.0, "×"),
    ("test-run geomean ns, Patronus / ref_xdp.c, N = 1,000", "testrun_geomean_vs_ref_1000", "<=", 1.0, "×"),
    ("test-run geomean ns, Patronus / ref_xdp.c, N = 100,000", "testrun_geomean_vs_ref_100000", "<=", 1.0, "×"),
    ("test-run worst single packet vs ref_xdp.c", "testrun_worst_packet_vs_ref", "<=", 1.2, "×"),
    ("test-run geomean, 1M blocklist entries / 10", "testrun_1M_vs_10", "<=", 1.3, "×"),
    ("10,000 rules / 10 rules (ns)", "rules_10k_vs_10", "<=", 1.5, "×"),
    ("veth DUT CPU ns/pkt, nft / Patronus (udp_denied)", "veth_ns_vs_nft", ">=", 8, "×"),
    ("veth DUT CPU ns/pkt, iptables / Patronus (udp_denied)", "veth_ns_vs_iptables", ">=", 15, "×"),
    ("veth DUT CPU ns/pkt, Patronus / xdp_drop (udp_denied)", "veth_ns_vs_xdp_drop", "<=", 2.2, "×"),
    ("compile 10,000 rules", "compile_10k_rules_s", "<=", 0.1, " s"),
    ("apply a 1,000,000-entry table", "apply_1M_s", "<=", 1.0, " s"),
    ("map fill rate", "fill_rate_per_s", ">=", 2_000_000, " entries/s"),
    ("single table entry update, p99", "table_update_p99_ms", "<=", 1.0, " ms"),
    ("verified insns, reference policy (N = 1,000) vs ref_xdp.c", "verified_insns_reference", "<=",
     "verified_insns_ref_xdp", ""),
]


def num(v):
    if v is None:
        return "-"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"


def targets_table(figs, notes):
    rows = ["| what | target | measured | met? |", "|---|---:|---:|:---:|"]
    for label, key, op, target, unit in TARGETS:
        sym = "≤" if op == "<=" else "≥"
        if isinstance(target, str):
            tv = figs.get(target)
            tshow = f"{sym} {num(tv)} (ref_xdp.c)" if tv is not None else f"{sym} ref_xdp.c (not measured)"
        else:
            tv = target
            tshow = f"{sym} {num(target)}{unit}"
        v = figs.get(key)
        if v is None:
            rows.append(f"| {label} | {tshow} | not measured | – |")
            continue
        met = "–" if tv is None else ("yes" if (v <= tv if op == "<=" else v >= tv) else "**no**")
        note = f" ({notes[key]})" if key in notes else ""
        rows.append(f"| {label} | {tshow} | {num(v)}{unit}{note} | {met} |")
    return "\n".join(rows)


def sections(path):
    """`## ` sections of a markdown file: list of (title, body)."""
    if not os.path.exists(path):
        return []
    out, title, body = [], None, []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            if ln.startswith("## "):
                if title is not None:
                    out.append((title, "".join(body).strip()))
                title, body = ln[3:].strip(), []
            elif title is not None:
                body.append(ln)
    if title is not None:
        out.append((title, "".join(body).strip()))
    return out


def tsv_as_table(path, fmt=None):
    with open(path, encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
    if not rows:
        return ""
    head = rows[0]
    out = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows[1:]:
        cells = [(fmt(c) if fmt and c else c) or "–" for c in r] + ["–"] * (len(head) - len(r))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def thousands(c):
    try:
        v = float(c)
    except ValueError:
        return c
    return f"{int(v):,}" if v.is_integer() else f"{v:.0f}"


def summary(t):
    rows = ["| N (blocklist) | geomean ns, Patronus / ref_xdp.c | worst packet | best packet |",
            "|---:|---:|---|---|"]
    for n in ("10", "1000", "100000"):
        r = ratios(t, f"patronus_{n}", f"ref_{n}")
        if not r:
            continue
        w = max(r.items(), key=lambda kv: kv[1])
        b = min(r.items(), key=lambda kv: kv[1])
        rows.append(f"| {int(n):,} | **{geomean(list(r.values())):.3f}×** | {w[0]} {w[1]:.2f}× | {b[0]} {b[1]:.2f}× |")
    r = ratios(t, "patronus_1000000", "patronus_10")
    extra = ""
    if r:
        w = max(r.items(), key=lambda kv: kv[1])
        extra = (f"\n\nPatronus with 1,000,000 blocklist entries vs 10: geomean **{geomean(list(r.values())):.3f}×**"
                 f" (worst {w[0]} {w[1]:.2f}×).")
    return "\n".join(rows) + extra if len(rows) > 2 else ""


XDP_VERDICT = {"0": "ABORTED", "1": "DROP", "2": "PASS", "3": "TX", "4": "REDIRECT"}
UNCHECKED = {"xdp_drop", "xdp_pass"}


def md_table(header, rows, left=1):
    """A markdown table; the first `left` columns left-aligned, the rest right."""
    cells = [[str(c) for c in r] for r in [header] + rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                       for i, (c, w) in enumerate(zip(r, width))) + " |"
    rule = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":"
                          for i, w in enumerate(width)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def both(a, b):
    return a if a == b else f"{a}->{b}"


def testrun_report(raw):
    """testrun.sh's tables from RAW (+ .progs.tsv, .edge.tsv beside it)."""
    rows = read_tsv(raw)
    progs = list(dict.fromkeys(r["program"] for r in rows))
    pkts = list(dict.fromkeys(r["packet"] for r in rows))
    ns = {(r["program"], r["packet"]): int(r["ns"]) for r in rows}
    floor = {p: ns.get(("xdp_drop", p)) for p in pkts}
    bad, every = [], []
    for r in rows:
        got = (XDP_VERDICT.get(r["first"], r["first"]), XDP_VERDICT.get(r["steady"], r["steady"]))
        want = (r["expect_first"], r["expect_steady"])
        checked = r["program"] not in UNCHECKED
        if checked and got != want:
            bad.append(f"- {r['program']} / {r['packet']}: got {both(*got)}, expected {both(*want)}")
        f = floor.get(r["packet"])
        every.append([r["program"], r["packet"], both(*got), both(*want) if checked else "-",
                      ("ok" if got == want else "MISMATCH") if checked else "-", r["ns"],
                      f"{int(r['ns']) / f:.2f}" if f else "-", r["repeat"]])
    print("## Every program x packet (verdict: first run -> after the repeats)\n")
    print(md_table(["program", "packet", "verdict", "expected", "check", "ns/run", "x floor", "repeat"],
                   every, left=5))
    print("\n## ns/run matrix (kernel average; floor = xdp_drop)\n")
    matrix = [[p] + [str(ns.get((g, p), "-")) for g in progs] for p in pkts]
    mean = lambda g: [ns[(g, p)] for p in pkts if (g, p) in ns]
    matrix.append(["**mean**"] + [f"{statistics.mean(mean(g)):.0f}" if mean(g) else "-" for g in progs])
    if all(floor.values()):
        ratio = lambda g: [ns[(g, p)] / floor[p] for p in pkts if (g, p) in ns]
        matrix.append(["**geomean x floor**"] + [f"{geomean(ratio(g)):.2f}" if ratio(g) else "-"
                                                  for g in progs])
    print(md_table(["packet"] + progs, matrix))
    info = read_tsv(raw[:-4] + ".progs.tsv")
    if info:
        print("\n## Programs (size after verification; load time includes creating and filling maps)\n")
        print(md_table(["program", "xlated bytes", "jited bytes", "verified insns", "load+fill ms"],
                       [[r["program"], r["xlated_bytes"], r["jited_bytes"], r["verified_insns"],
                         r["load_fill_ms"]] for r in info]))
    edges = read_tsv(raw[:-4] + ".edge.tsv")
    if edges:
        print("\n## Edge cases (corpus edge frames: one run each on fresh state)\n")
        out = []
        for g in dict.fromkeys(e["program"] for e in edges):
            mine = [e for e in edges if e["program"] == g]
            miss = [e for e in mine if XDP_VERDICT.get(e["got"], e["got"]) != e["expect"]]
            for e in miss:
                bad.append(f"- {g} / edge {e['packet']}: got {XDP_VERDICT.get(e['got'], e['got'])}, "
                           f"expected {e['expect']}")
            names = [e["packet"] for e in miss]
            shown = ", ".join(names[:6]) + (f", ... ({len(names) - 6} more)" if len(names) > 6 else "")
            out.append([g, len(mine), len(mine) - len(miss), shown or "-"])
        print(md_table(["program", "frames", "as expected", "mismatches"], out))
    print("\n## Verdict check\n")
    if bad:
        print(f"{len(bad)} mismatch(es):")
        print("\n".join(bad))
        return 1
    print("all verdicts as expected (xdp_drop / xdp_pass not checked)")
    return 0


def mpps(pps):
    return f"{pps / 1e6:.3f}" if pps >= 1e5 else f"{pps / 1e6:.4f}"


def veth_report(raw):
    """veth.sh's tables from RAW: medians per configuration, one per profile."""
    rows = read_tsv(raw)
    keys = ("pps", "offered_pps", "ring_drop_pps", "busy", "cpu_ns_per_pkt", "xdp_drop_frac")
    for prof in dict.fromkeys(r["profile"] for r in rows):
        mine = [r for r in rows if r["profile"] == prof]
        configs = list(dict.fromkeys(r["config"] for r in mine))
        med, runs = {}, {}
        for c in configs:
            rr = [r for r in mine if r["config"] == c]
            med[c] = {k: statistics.median(float(r[k]) for r in rr) for k in keys}
            runs[c] = [float(r["pps"]) for r in rr]
        fl = med.get("xdp_drop")
        out = []
        for c in configs:
            m = med[c]
            out.append([c, mpps(m["pps"]),
                        f"{m['pps'] / fl['pps']:.2f}" if fl and fl["pps"] else "-",
                        f"{m['busy'] * 100:.0f}%", f"{m['cpu_ns_per_pkt']:.0f}",
                        f"{m['cpu_ns_per_pkt'] / fl['cpu_ns_per_pkt']:.2f}"
                        if fl and fl["cpu_ns_per_pkt"] else "-",
                        f"{m['offered_pps'] / 1e6:.2f}", f"{min(m['xdp_drop_frac'], 1.0) * 100:.0f}%",
                        " ".join(mpps(x) for x in runs[c])])
        print(f"\n## Profile `{prof}` (medians of {len(runs[configs[0]])} runs)\n")
        print(md_table(["config", "Mpps at DUT", "x xdp_drop", "DUT CPU busy", "DUT CPU ns/pkt",
                        "x xdp_drop ns", "offered Mpps", "dropped in XDP", "runs (Mpps)"], out))
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] in ("testrun", "veth"):
        return (testrun_report if sys.argv[1] == "testrun" else veth_report)(sys.argv[2])
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    meta = read_kv(os.path.join(d, "meta.tsv"))
    figs_path = os.path.join(d, "figures.tsv")
    have = read_kv(figs_path)
    ours, notes, t = derive(d)
    with open(figs_path, "a", encoding="utf-8") as f:
        for k, v in ours.items():
            if k not in have:
                f.write(f"{k}\t{v:.6g}\n" if isinstance(v, float) else f"{k}\t{v}\n")
    figs = {}
    for k, v in read_kv(figs_path).items():
        try:
            figs[k] = float(v)
        except ValueError:
            pass
    failed = []
    if os.path.exists(os.path.join(d, "failed.txt")):
        with open(os.path.join(d, "failed.txt"), encoding="utf-8") as f:
            failed = [ln.strip() for ln in f if ln.strip()]
    quick = "--quick" in meta.get("command", "")
    cm = read_kv(os.path.join(d, "curves.meta.tsv"))
    raw = os.path.relpath(d, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if raw.startswith(".."):
        raw = os.path.abspath(d)

    o = ["# Benchmarks", "",
         "Generated by one run of `sudo benches/run` (do not edit by hand: rerun it). Every ratio",
         "below is from that one run; absolute nanoseconds on this 2-core VM move 10–30 % between",
         "runs, ratios within a run are what compare.", "",
         "`sudo benches/run` (~15 min; `--quick`: a < 3 min smoke test that leaves docs/ alone)",
         "needs root and what `scripts/setup --bench` installs (clang, llvm, libbpf-dev, bpftool,",
         "nftables, iptables, xdp-tools, ethtool, python3); it runs it first. Everything it",
         "compares against is in `benches/`. It builds the release binaries, runs every part below,",
         "keeps the raw TSVs in `benches/results/<UTC stamp>/` and rewrites this file and",
         "`docs/bench/*.svg`.", "",
         f"- date: {meta.get('date', '?')} (UTC), total run time {int(meta.get('seconds', 0)) // 60} min"
         f" {int(meta.get('seconds', 0)) % 60} s",
         f"- kernel: {meta.get('kernel', '?')}; CPU: {meta.get('cpu', '?')}",
         f"- commit: {meta.get('commit', '?')}",
         f"- command: `{meta.get('command', 'sudo benches/run')}`",
         f"- raw data (TSV, not committed): `{raw}/`", ""]
    if quick:
        o += ["> **Quick smoke run** (`--quick`): tiny repeat counts and sizes; the figures only show",
              "> the scripts work.", ""]
    if failed:
        o += ["> **Failures in this run:** " + "; ".join(failed), ""]

    o += ["## Targets", "", targets_table(figs, notes), "",
          "Keys and values: `figures.tsv` in the raw data directory.", ""]

    o += ["## The harness", "",
          "Every program implements one policy, `benches/reference.pf`: drop sources on a",
          "blocklist (N random IPv4 prefixes, the last 198.51.100.0/24, plus 2001:db8:bad::/48);",
          "pass established flows; new SSH connections 10/s, burst 10, per source; TCP 80 and 443",
          "from anywhere; UDP 53 from 10.0.0.0/8; ping on IPv4 and IPv6; drop the rest, and drop",
          "invalid packets and fragments first; ARP and neighbor discovery pass.", "",
          "- `xdp_drop` / `xdp_pass` (`benches/xdp/trivial_*.c`): the floor and the cost of entering XDP.",
          "- `ref_N` (`benches/xdp/ref_xdp.c`): the policy written by hand for speed — LPM-trie",
          "  blocklist, LRU conntrack and token buckets, per-CPU counters, compares against constants.",
          "- `naive_N` (`benches/xdp/naive_xdp.c`): the same validation and state, but the rules",
          "  (N blocklist prefixes + 10) scanned linearly from an array.",
          "- `nft`, `iptables`, `xdp-filter`: `benches/rulesets/` (xdp-filter cannot express the",
          "  blocklist, the source condition, ICMP or the rate limit).",
          "- Patronus: `patronusc load --pin-dir` of the policy with blocklist N (not attached), the",
          "  two established flows sent through its own egress program (`--out`).", "",
          "The frames, their expected verdicts, the flows and the blocklists (seed N) are",
          "`patronus_compiler::corpus`, written to `benches/build/pkts/` by the `corpus` driver;",
          "the same corpus is checked in the reference interpreter (`compiler/tests/corpus.rs`) and",
          "in the kernel (`tests/tests/kernel_bench.rs`). The maps of `ref_xdp.c` and `naive_xdp.c`",
          "are filled by the `xdpfill` driver (blocklist or rule array, the flows and 100,000",
          "background flows); the veth generator is the `xdpgen` driver (`benches/src/bin/`).", "",
          "Caveats: a noisy 2-core VM (compare ratios within one run, never absolute figures",
          "across runs); every timed run repeats one frame, so caches and branch predictors are",
          "as warm as they get (best-case costs, comparable between programs, not line rates);",
          "the veth floor is bound by the one generator CPU, so prefer the DUT CPU ns/pkt ratio.", ""]

    o += ["## Data path: BPF_PROG_TEST_RUN", "",
          "`benches/testrun.sh` measures every program on the 15 corpus packets (kernel average",
          "ns per repetition of `bpftool prog run`; floor = `xdp_drop`) and checks every verdict",
          "(15 packets, first and steady, and 39 edge-case frames, each on fresh state).", ""]
    s = summary(t)
    if s:
        o += ["### Summary", "", s, ""]
    for title, body in sections(os.path.join(d, "testrun.md")):
        if title.startswith("Every program"):
            continue  # 200 rows: kept in the raw directory (testrun.md)
        o += [f"### {title}", "", body, ""]

    o += ["## End to end: veth", "",
          "`benches/veth.sh --n 1000`: a generator namespace pushes one frame as fast as",
          "one CPU can over a veth pair into a DUT namespace whose receive path runs on the other",
          "CPU, for each configuration (Patronus attached as `extra:patronus`, the reference policy",
          "with `interface hbd0`). **DUT CPU ns/pkt** (busy time / frames taken) is the figure to",
          "compare; Mpps is bounded by the generator.", ""]
    for title, body in sections(os.path.join(d, "veth.md")):
        o += [f"### {title}", "", body, ""]

    o += ["## Scaling curves", ""]
    if os.path.exists(os.path.join(d, "curve_blocklist.tsv")):
        o += ["### ns/run vs blocklist size", "",
              "`BPF_PROG_TEST_RUN`, one frame repeated (hot caches), Patronus and `ref_xdp.c` loaded",
              "and filled afresh for every size. `ref_xdp.c`'s LPM trie holds "
              f"{int(cm.get('ref_blocklist_max', 131072)):,} prefixes, so it has no point at 1,000,000.", "",
              "![ns/run vs blocklist size](bench/curve_blocklist.svg)", "",
              tsv_as_table(os.path.join(d, "curve_blocklist.tsv"), thousands), ""]
    if os.path.exists(os.path.join(d, "curve_conntrack.tsv")):
        o += ["### ns vs conntrack entries", "",
              "`benches/src/bin/ctfill.rs` fills the policy's `ct_v4` with random distinct established",
              "flows (batched updates, the entry layout of `codegen::abi::conntrack`) and times, at",
              "each level: `est_one_flow`, one established ACK repeated (hot); `est_random`, mean of",
              "single runs each on a different filled flow; `new_flow`, mean of single runs each a SYN",
              "of a flow never seen (miss + insert; removed again afterwards); `floor_r1`, a",
              "`return XDP_DROP` program timed the same way (the cost of timing one run). Single runs",
              "pay cold caches (a fresh packet buffer, program and map lines evicted by the syscall),",
              "so compare these columns with each other, not with the hot matrix above. Each random",
              "column is the median of 5 chunk means.", "",
              "![ns vs conntrack entries](bench/curve_conntrack.svg)", "",
              tsv_as_table(os.path.join(d, "curve_conntrack.tsv"), thousands), ""]
    if os.path.exists(os.path.join(d, "curve_mix.tsv")):
        o += ["### ns vs share of blocklisted packets", "",
              f"`benches/src/bin/mix.rs`: a shuffled mix of distinct UDP frames to a denied port, the",
              f"given share from random addresses inside the {int(cm.get('mix_n', 100000)):,}-entry",
              "blocklist, the rest from random unicast addresses outside it; every frame run once per",
              "pass (single runs, so lookups walk different nodes and caches are cold); the figure is",
              "the median over passes of the mean ns over the mix. Every program must drop every",
              "frame.", "",
              "![ns vs share of blocklisted packets](bench/curve_mix.svg)", "",
              tsv_as_table(os.path.join(d, "curve_mix.tsv")), ""]

    for sub, title in (("rules", "Rule count scaling"), ("control", "Control plane")):
        p = os.path.join(d, f"{sub}.md")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                o += [f.read().strip(), ""]
        else:
            o += [f"## {title}", "", f"Not measured in this run (no output of `benches/{sub}.sh`).", ""]
    print("\n".join(o).rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""rulegen.py: the rule-count scaling workload of benches/rules.sh.

    benches/rulegen.py --out DIR [--dut-ip 192.0.2.2] N [N ...]

For each N writes, into DIR:
  patronus_N.pf     a Patronus policy of N rules (conntrack off, default deny)
                    with a `test` block holding the measured packets' verdicts
  nft_N.nft         the same rules for nftables: one rule per policy rule, in
                    file order, in an inet `input` chain with policy drop
  iptables_N.rules  the same for iptables-restore: filter INPUT, policy DROP
                    (a rule whose source is a set of k prefixes becomes k
                    iptables rules: iptables matches one source CIDR per rule)
  packets_N.tsv     NAME<TAB>PACKET lines (benches/src/bin/frames input) and
                    packets_N.expect (NAME<TAB>pass|drop)
and prints `N<TAB>patronus_rules<TAB>nft_rules<TAB>iptables_rules` per N.

Rule i mixes, by i modulo small co-prime periods: the action (deny every
third rule, else allow), the protocol (tcp, udp, icmp), the destination port
(a single port 1024+i, a range, or a two-port set) and the source (one /24,
an inline set of three prefixes, or a `$const` set). Every rule's sources are
its own (10.a.b.0/24 and 172.16-17.a.b, a.b = i), so no two rules ever match
the same packet: the rules are disjoint, there is no shadowing, and a
first-match list (nft, iptables) in file order has exactly the Patronus
meaning. Rule 0 is always `deny udp from 10.1.0.0/24 to port 1024`, rule N-1
an allow of UDP port 1024+N-1, so three packets exist for every N:
  first  matches rule 0 (drop), last matches rule N-1 (pass),
  none   matches no rule (default deny; a linear firewall scans everything).
"""

import argparse
import os
import sys

MAX_RULES = 40000  # source slots 10.1-157.x.0/24: keeps inside 10.0.0.0/8


def slot(i):
    """(a, b): the two octets naming rule i's own address block."""
    return 1 + i // 256, i % 256


def rule(i, n):
    """Rule i of n as a dict: action, proto, sources, ports, icmp, const."""
    a, b = slot(i)
    action = "deny" if i % 3 == 1 else "allow"
    proto = ("tcp", "udp", "tcp", "udp", "icmp")[i % 5]
    kind = i % 4
    if kind == 0 or kind == 3:
        sources = [f"10.{a}.{b}.0/24"]
    elif kind == 1:
        sources = [f"10.{a}.{b}.0/25", f"10.{a}.{b}.128/26", f"172.16.{a}.{b}"]
    else:
        sources = [f"10.{a}.{b}.0/24", f"172.17.{a}.{b}/32"]
    ports = None
    if i % 7 == 3:
        lo = 20000 + 10 * (i // 7)
        ports = ("range", lo, lo + 9)
    elif i % 11 == 5:
        ports = ("set", 1024 + i, 40000 + i)
    else:
        ports = ("one", 1024 + i)
    # The packets' rules: fixed shapes at both ends of the list.
    if i == 0:
        action, proto, sources, ports, kind = "deny", "udp", [f"10.{a}.{b}.0/24"], ("one", 1024), 0
    elif i == n - 1:
        action, proto, sources, ports, kind = (
            "allow",
            "udp",
            [f"10.{a}.{b}.0/24"],
            ("one", 1024 + i),
            0,
        )
    icmp = None
    if proto == "icmp":
        ports = None
        icmp = "echo-request" if i % 2 == 0 else "timestamp-request"
    return {
        "action": action,
        "proto": proto,
        "sources": sources,
        "ports": ports,
        "icmp": icmp,
        "const": f"src{i}" if kind == 2 else None,
    }


def pf_ports(ports):
    if ports[0] == "one":
        return str(ports[1])
    if ports[0] == "range":
        return f"{ports[1]}-{ports[2]}"
    return "{ " + ", ".join(str(p) for p in ports[1:]) + " }"


def pf_sources(r):
    if r["const"]:
        return "$" + r["const"]
    if len(r["sources"]) == 1:
        return r["sources"][0]
    return "{ " + ", ".join(r["sources"]) + " }"


def packets(n, dut_ip):
    """[(name, spec, verdict)]: the three measured packets for n rules."""
    a, b = slot(n - 1)
    return [
        ("first", f"udp 10.1.0.7:40000 -> {dut_ip}:1024", "drop"),
        ("last", f"udp 10.{a}.{b}.7:40000 -> {dut_ip}:{1024 + n - 1}", "pass"),
        ("none", f"udp 203.0.113.7:40000 -> {dut_ip}:1024", "drop"),
    ]


def write_patronus(path, n, rules, pkts):
    with open(path, "w") as f:
        f.write(f"# {n} disjoint rules over tcp/udp/icmp, written by benches/rulegen.py.\n")
        f.write("# conntrack off: every packet is judged by the rules (a fair match for\n")
        f.write("# stateless nft/iptables rule lists).\n")
        for r in rules:
            if r["const"]:
                f.write(f"const {r['const']} = {{ {', '.join(r['sources'])} }}\n")
        f.write("\noptions {\n  default   = deny\n  conntrack = off\n}\n\n")
        for r in rules:
            line = f"{r['action']} {r['proto']} from {pf_sources(r)}"
            if r["ports"]:
                line += f" to port {pf_ports(r['ports'])}"
            if r["icmp"]:
                line += f" type {r['icmp']}"
            f.write(line + "\n")
        f.write('\ntest "measured packets" {\n')
        for name, spec, verdict in pkts:
            f.write(f"  expect {verdict} {spec}   # {name}\n")
        f.write("}\n")


def nft_rule(r):
    verdict = "drop" if r["action"] == "deny" else "accept"
    src = r["sources"][0] if len(r["sources"]) == 1 else "{ " + ", ".join(r["sources"]) + " }"
    parts = [f"ip saddr {src}"]
    if r["ports"]:
        p = r["ports"]
        if p[0] == "one":
            ports = str(p[1])
        elif p[0] == "range":
            ports = f"{p[1]}-{p[2]}"
        else:
            ports = "{ " + ", ".join(str(x) for x in p[1:]) + " }"
        parts.append(f"{r['proto']} dport {ports}")
    else:
        parts.append(f"icmp type {r['icmp']}")
    return " ".join(parts) + " " + verdict


def write_nft(path, n, rules):
    with open(path, "w") as f:
        f.write(f"# {n} rules, the meaning of patronus_{n}.pf (benches/rulegen.py).\n")
        f.write("# The rules are disjoint, so first match in file order = Patronus.\n")
        f.write("table inet pr_rules {\n  chain input {\n")
        f.write("    type filter hook input priority filter; policy drop;\n")
        for r in rules:
            f.write("    " + nft_rule(r) + "\n")
        # Patronus passes neighbor discovery by default (ndp = pass); last,
        # so IPv4 packets never reach it.
        f.write(
            "    icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit,"
            " nd-neighbor-advert, nd-redirect } ip6 hoplimit 255 accept\n"
        )
        f.write("  }\n}\n")


def write_iptables(path, n, rules):
    count = 0
    with open(path, "w") as f:
        f.write(f"# {n} policy rules, the meaning of patronus_{n}.pf (benches/rulegen.py).\n")
        f.write("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
        for r in rules:
            target = "DROP" if r["action"] == "deny" else "ACCEPT"
            if r["ports"]:
                p = r["ports"]
                if p[0] == "one":
                    match = f"-m {r['proto']} --dport {p[1]}"
                elif p[0] == "range":
                    match = f"-m {r['proto']} --dport {p[1]}:{p[2]}"
                else:
                    match = "-m multiport --dports " + ",".join(str(x) for x in p[1:])
            else:
                match = f"-m icmp --icmp-type {r['icmp']}"
            for src in r["sources"]:
                f.write(f"-A INPUT -p {r['proto']} -s {src} {match} -j {target}\n")
                count += 1
        f.write("COMMIT\n")
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--dut-ip", default="192.0.2.2", help="destination of the packets")
    ap.add_argument("counts", nargs="+", type=int, help="rule counts N (2..%d)" % MAX_RULES)
    args = ap.parse_args()
    for n in args.counts:
        if not 2 <= n <= MAX_RULES:
            sys.exit(f"rulegen.py: N must be 2..{MAX_RULES}, got {n}")
    os.makedirs(args.out, exist_ok=True)
    for n in args.counts:
        rules = [rule(i, n) for i in range(n)]
        pkts = packets(n, args.dut_ip)
        write_patronus(os.path.join(args.out, f"patronus_{n}.pf"), n, rules, pkts)
        write_nft(os.path.join(args.out, f"nft_{n}.nft"), n, rules)
        ipt = write_iptables(os.path.join(args.out, f"iptables_{n}.rules"), n, rules)
        with open(os.path.join(args.out, f"packets_{n}.tsv"), "w") as f:
            for name, spec, _ in pkts:
                f.write(f"{name}\t{spec}\n")
        with open(os.path.join(args.out, f"packets_{n}.expect"), "w") as f:
            for name, _, verdict in pkts:
                f.write(f"{name}\t{verdict}\n")
        print(f"{n}\t{n}\t{n + 1}\t{ipt}")


if __name__ == "__main__":
    main()

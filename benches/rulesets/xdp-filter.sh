# benches/rulesets/xdp-filter.sh — the closest xdp-filter gets to the
# reference policy (sourced by benches/veth.sh with IFACE set and `in_dut_net`
# defined). xdp-filter matches exact addresses and ports only: deny by
# default, allow TCP 22/80/443 and UDP 53 — no CIDR blocklist, no
# 10.0.0.0/8 source condition, no ICMP, no rate limit.
in_dut_net xdp-filter load --mode native --policy deny --features tcp,udp "$IFACE"
for port in 22 80 443; do
	in_dut_net xdp-filter port --proto tcp "$port"
done
in_dut_net xdp-filter port --proto udp 53

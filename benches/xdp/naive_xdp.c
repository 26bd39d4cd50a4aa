// SPDX-License-Identifier: GPL-2.0
/* benches/xdp/naive_xdp.c — the reference policy the way a rule-table
 * firewall starts out: parse the packet into one struct, then walk an array
 * of rules, first match wins (the blocklist's deny rules first). Each packet
 * that survives validation pays for up to NRULES lookups and compares: the
 * O(N) design the compiler must beat. Validation, conntrack and the SSH
 * limit are shared.h's, as in ref_xdp.c, so only rule matching differs.
 *
 * One object per array size: -DNRULES=N+10 for a blocklist of N prefixes
 * (plus its IPv6 prefix and the 9 allow/limit rules). */
#include "shared.h"

#ifndef NRULES
#define NRULES 20
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NRULES);
	__type(key, __u32);
	__type(value, struct rule);
} rules SEC(".maps");

/* What the rules and conntrack look at, either family. */
struct view {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;   /* network order; ICMP echo: the identifier */
	__u16 dport;   /* network order */
	__u8 family;
	__u8 proto;
	__u8 flags;    /* TCP */
	__u8 icmp;     /* ICMP type, 255 when not ICMP */
};

/* Validates the frame and fills *v. Returns -1 when the rules decide,
 * else the verdict already given (ARP, NDP, invalid). */
static __always_inline int inspect(struct xdp_md *ctx, struct view *v)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u16 proto = 0;
	void *l3 = skip_l2(data, end, &proto);
	void *l4;
	__u32 len;

	if (!l3)
		DROP(R_BAD_L2);
	if (proto == bpf_htons(ETH_P_ARP))
		PASS(R_ARP);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
			DROP(R_BAD_L3);
		__u32 hl = (__u32)ip->ihl * 4, total = bpf_ntohs(ip->tot_len);

		if (total < hl || l3 + total > end)
			DROP(R_BAD_L3);
		if (ip->frag_off & bpf_htons(0x3fff))
			DROP(R_FRAGMENT);
		v->family = 4;
		v->proto = ip->protocol;
		v->src[0] = ip->saddr;
		v->dst[0] = ip->daddr;
		l4 = l3 + hl;
		len = total - hl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = l3;

		if ((void *)(ip + 1) > end || ip->version != 6)
			DROP(R_BAD_L3);
		__u32 stop = sizeof(*ip) + bpf_ntohs(ip->payload_len);

		if (l3 + stop > end)
			DROP(R_BAD_L3);
		__u8 nh = ip->nexthdr;
		__u32 off = sizeof(*ip);
#pragma unroll
		for (int i = 0; i < MAX_EXT_HDRS; i++) {
			if (!ipv6_ext(nh))
				break;
			__u8 *h = l3 + off;

			if ((void *)(h + 2) > end)
				DROP(R_BAD_L3);
			off += nh == IPPROTO_AH ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
			nh = h[0];
			if (off > stop || off > 0xfff)
				DROP(R_BAD_L3);
		}
		if (ipv6_ext(nh))
			DROP(R_BAD_L3);
		if (nh == IPPROTO_FRAGMENT)
			DROP(R_FRAGMENT);
		v->family = 6;
		v->proto = nh;
		__builtin_memcpy(v->src, &ip->saddr, 16);
		__builtin_memcpy(v->dst, &ip->daddr, 16);
		l4 = l3 + off;
		len = stop - off;
		if (nh == IPPROTO_ICMPV6) {
			struct echo_hdr *ic = l4;

			if (len < sizeof(*ic) || (void *)(ic + 1) > end)
				DROP(R_BAD_L4);
			if (ic->type >= 133 && ic->type <= 137 && ip->hop_limit == 255)
				PASS(R_NDP);
		}
	} else {
		DROP(R_DEFAULT);
	}

	int land = v->src[0] == v->dst[0] && v->src[1] == v->dst[1] && v->src[2] == v->dst[2] &&
		   v->src[3] == v->dst[3];

	if (v->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if (len < sizeof(*th) || (void *)(th + 1) > end)
			DROP(R_BAD_L4);
		v->flags = ((__u8 *)th)[13];
		if (th->doff < 5 || ((__u32)th->doff * 4) > len || bad_flags(v->flags) || !th->source ||
		    !th->dest)
			DROP(R_BAD_L4);
		v->sport = th->source;
		v->dport = th->dest;
		if (land && v->sport == v->dport)
			DROP(R_LAND);
	} else if (v->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if (len < sizeof(*uh) || (void *)(uh + 1) > end || bpf_ntohs(uh->len) < sizeof(*uh) ||
		    !uh->source || !uh->dest)
			DROP(R_BAD_L4);
		v->sport = uh->source;
		v->dport = uh->dest;
		if (land && v->sport == v->dport)
			DROP(R_LAND);
	} else if (v->proto == IPPROTO_ICMP || v->proto == IPPROTO_ICMPV6) {
		struct echo_hdr *ic = l4;

		if (len < sizeof(*ic) || (void *)(ic + 1) > end)
			DROP(R_BAD_L4);
		v->icmp = ic->type;
		if (ic->type == (v->proto == IPPROTO_ICMP ? ICMP4_ECHO_REQUEST : ICMPV6_ECHO_REQUEST))
			v->sport = ic->id;
		if (land)
			DROP(R_LAND);
	} else if (land) {
		DROP(R_LAND);
	}
	return -1;
}

/* Zero when rule r matches: every field a difference under its mask, the
 * port range two subtractions whose sign bit says "outside". One OR chain,
 * no branch per field (the verifier would refuse thousands of branches). */
static __always_inline __u64 differs(const struct rule *r, const struct view *v, __u32 port)
{
	__u64 d = r->family ^ v->family;

	d |= (r->proto ^ v->proto) & r->proto_mask;
	d |= (r->icmp_type ^ v->icmp) & r->icmp_mask;
	d |= (v->src[0] & r->mask[0]) ^ r->src[0];
	d |= (v->src[1] & r->mask[1]) ^ r->src[1];
	d |= (v->src[2] & r->mask[2]) ^ r->src[2];
	d |= (v->src[3] & r->mask[3]) ^ r->src[3];
	d |= (((__u64)((__s64)port - r->dport_lo)) | ((__u64)((__s64)r->dport_hi - port))) >> 63;
	return d;
}

SEC("xdp")
int naive_xdp(struct xdp_md *ctx)
{
	struct view v = { .icmp = 255 };
	int verdict = inspect(ctx, &v);

	if (verdict >= 0)
		return verdict;

	__u32 port = (v.proto == IPPROTO_TCP || v.proto == IPPROTO_UDP) ? bpf_ntohs(v.dport) : 0;
	__u8 action = RULE_NONE;

	for (__u32 i = 0; i < NRULES; i++) {
		__u32 k = i;
		struct rule *r = bpf_map_lookup_elem(&rules, &k);

		if (!r || r->action == RULE_NONE)
			break;
		if (!differs(r, &v, port)) {
			action = r->action;
			break;
		}
	}
	if (action == RULE_DENY)
		DROP(R_BLOCKED);

	/* Established: anything with ports or an echo id, but never a bare
	 * SYN (always a new attempt). */
	int tracked = v.proto == IPPROTO_TCP || v.proto == IPPROTO_UDP ||
		      (v.proto == IPPROTO_ICMP && v.icmp == ICMP4_ECHO_REQUEST) ||
		      (v.proto == IPPROTO_ICMPV6 && v.icmp == ICMPV6_ECHO_REQUEST);
	int bare_syn = v.proto == IPPROTO_TCP && (v.flags & (F_SYN | F_ACK)) == F_SYN;
	struct flow4 k4 = {};
	struct flow6 k6 = {};
	void *ct = &ct4, *key = &k4;

	if (v.family == 4) {
		k4.src = v.src[0];
		k4.dst = v.dst[0];
		k4.sport = v.sport;
		k4.dport = v.dport;
		k4.proto = v.proto;
	} else {
		__builtin_memcpy(k6.src, v.src, 16);
		__builtin_memcpy(k6.dst, v.dst, 16);
		k6.sport = v.sport;
		k6.dport = v.dport;
		k6.proto = v.proto;
		ct = &ct6;
		key = &k6;
	}
	if (tracked && !bare_syn) {
		struct flow_state *st = bpf_map_lookup_elem(ct, key);

		if (st && still_alive(st, v.proto, v.flags))
			PASS(R_ESTABLISHED);
	}
	if (action == RULE_NONE)
		DROP(R_DEFAULT);
	if (action == RULE_LIMIT) {
		int ok = v.family == 4 ? take_token(&ssh4, &v.src[0]) : take_token(&ssh6, v.src);

		if (!ok)
			DROP(R_RATE);
	}
	if (tracked)
		track(ct, key, v.proto, v.flags);
	PASS(R_ALLOWED);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* benches/xdp/ref_xdp.c — the reference policy (benches/reference.pf)
 * written by hand for speed: what an expert would ship, the yardstick for
 * the compiler's output.
 *
 * First decision wins: ARP and NDP pass, invalid packets drop, blocklisted
 * sources drop (LPM trie), established flows pass (LRU conntrack), new SSH
 * connections take a token (LRU buckets), the allow rules are compares
 * against constants, everything else drops. IPv4 and IPv6 each have a
 * straight path; the common IPv4 header (0x45) skips the IHL arithmetic;
 * the only helper calls are map operations and the coarse clock. */
#include "shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BL_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm4);
	__type(value, __u8);
} block4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BL_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm6);
	__type(value, __u8);
} block6 SEC(".maps");

/* Keeps variable offsets bounded for the verifier (nothing in an XDP
 * buffer's linear part lies further in). */
#define L3_LIMIT 0xfff

static __always_inline int blocked4(__u32 src)
{
	struct lpm4 k = { .plen = 32 };

	__builtin_memcpy(k.addr, &src, 4);
	return bpf_map_lookup_elem(&block4, &k) != 0;
}

static __always_inline int blocked6(const void *src)
{
	struct lpm6 k = { .plen = 128 };

	__builtin_memcpy(k.addr, src, 16);
	return bpf_map_lookup_elem(&block6, &k) != 0;
}

static __always_inline int v4(void *l3, void *end)
{
	struct iphdr *ip = l3;

	if ((void *)(ip + 1) > end)
		DROP(R_BAD_L3);
	__u8 first = *(__u8 *)ip;
	__u32 hl = 20;

	if (first != 0x45) {
		if ((first >> 4) != 4 || (first & 0x0f) < 5)
			DROP(R_BAD_L3);
		hl = (__u32)(first & 0x0f) * 4;
	}
	__u32 total = bpf_ntohs(ip->tot_len);

	if (total < hl || l3 + total > end)
		DROP(R_BAD_L3);
	if (ip->frag_off & bpf_htons(0x3fff))
		DROP(R_FRAGMENT);

	__u32 src = ip->saddr;
	void *l4 = l3 + hl;
	__u32 len = total - hl;
	struct flow4 key = { .src = src, .dst = ip->daddr, .proto = ip->protocol };
	struct flow_state *st;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if (len < sizeof(*th) || (void *)(th + 1) > end)
			DROP(R_BAD_L4);
		__u8 flags = ((__u8 *)th)[13];

		if (th->doff < 5 || ((__u32)th->doff * 4) > len || bad_flags(flags) || !th->source ||
		    !th->dest)
			DROP(R_BAD_L4);
		if (src == key.dst && th->source == th->dest)
			DROP(R_LAND);
		if (blocked4(src))
			DROP(R_BLOCKED);
		key.sport = th->source;
		key.dport = th->dest;
		/* A bare SYN opens a connection: never established. */
		if ((flags & (F_SYN | F_ACK)) != F_SYN) {
			st = bpf_map_lookup_elem(&ct4, &key);
			if (st && still_alive(st, IPPROTO_TCP, flags))
				PASS(R_ESTABLISHED);
		}
		if (th->dest == bpf_htons(22)) {
			if (!take_token(&ssh4, &src))
				DROP(R_RATE);
		} else if (th->dest != bpf_htons(80) && th->dest != bpf_htons(443)) {
			DROP(R_DEFAULT);
		}
		track(&ct4, &key, IPPROTO_TCP, flags);
		PASS(R_ALLOWED);
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if (len < sizeof(*uh) || (void *)(uh + 1) > end || bpf_ntohs(uh->len) < sizeof(*uh) ||
		    !uh->source || !uh->dest)
			DROP(R_BAD_L4);
		if (src == key.dst && uh->source == uh->dest)
			DROP(R_LAND);
		if (blocked4(src))
			DROP(R_BLOCKED);
		key.sport = uh->source;
		key.dport = uh->dest;
		st = bpf_map_lookup_elem(&ct4, &key);
		if (st && still_alive(st, IPPROTO_UDP, 0))
			PASS(R_ESTABLISHED);
		/* allow udp from 10.0.0.0/8 to port 53 */
		if (uh->dest != bpf_htons(53) || (src & bpf_htonl(0xff000000)) != bpf_htonl(0x0a000000))
			DROP(R_DEFAULT);
		track(&ct4, &key, IPPROTO_UDP, 0);
		PASS(R_ALLOWED);
	}
	if (ip->protocol == IPPROTO_ICMP) {
		struct echo_hdr *ic = l4;

		if (len < sizeof(*ic) || (void *)(ic + 1) > end)
			DROP(R_BAD_L4);
		if (src == key.dst)
			DROP(R_LAND);
		if (blocked4(src))
			DROP(R_BLOCKED);
		if (ic->type != ICMP4_ECHO_REQUEST)
			DROP(R_DEFAULT);
		key.sport = ic->id;
		st = bpf_map_lookup_elem(&ct4, &key);
		if (st && still_alive(st, IPPROTO_ICMP, 0))
			PASS(R_ESTABLISHED);
		track(&ct4, &key, IPPROTO_ICMP, 0);
		PASS(R_ALLOWED);
	}
	/* Any other protocol: nothing to validate, no rule allows it. */
	if (src == key.dst)
		DROP(R_LAND);
	if (blocked4(src))
		DROP(R_BLOCKED);
	DROP(R_DEFAULT);
}

static __always_inline int v6(void *l3, void *end)
{
	struct ipv6hdr *ip = l3;

	if ((void *)(ip + 1) > end || ip->version != 6)
		DROP(R_BAD_L3);
	__u32 stop = sizeof(*ip) + bpf_ntohs(ip->payload_len);

	if (l3 + stop > end)
		DROP(R_BAD_L3);

	/* At most MAX_EXT_HDRS extension headers, inside the payload; a
	 * Fragment header means a fragment. */
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
		if (off > stop || off > L3_LIMIT)
			DROP(R_BAD_L3);
	}
	if (ipv6_ext(nh))
		DROP(R_BAD_L3);
	if (nh == IPPROTO_FRAGMENT)
		DROP(R_FRAGMENT);

	void *l4 = l3 + off;
	__u32 len = stop - off;
	__u32 *s = ip->saddr.in6_u.u6_addr32, *d = ip->daddr.in6_u.u6_addr32;
	int land = s[0] == d[0] && s[1] == d[1] && s[2] == d[2] && s[3] == d[3];
	struct flow6 key = { .proto = nh };
	struct flow_state *st;

	if (nh == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if (len < sizeof(*th) || (void *)(th + 1) > end)
			DROP(R_BAD_L4);
		__u8 flags = ((__u8 *)th)[13];

		if (th->doff < 5 || ((__u32)th->doff * 4) > len || bad_flags(flags) || !th->source ||
		    !th->dest)
			DROP(R_BAD_L4);
		if (land && th->source == th->dest)
			DROP(R_LAND);
		if (blocked6(s))
			DROP(R_BLOCKED);
		__builtin_memcpy(key.src, s, 16);
		__builtin_memcpy(key.dst, d, 16);
		key.sport = th->source;
		key.dport = th->dest;
		if ((flags & (F_SYN | F_ACK)) != F_SYN) {
			st = bpf_map_lookup_elem(&ct6, &key);
			if (st && still_alive(st, IPPROTO_TCP, flags))
				PASS(R_ESTABLISHED);
		}
		if (th->dest == bpf_htons(22)) {
			if (!take_token(&ssh6, key.src))
				DROP(R_RATE);
		} else if (th->dest != bpf_htons(80) && th->dest != bpf_htons(443)) {
			DROP(R_DEFAULT);
		}
		track(&ct6, &key, IPPROTO_TCP, flags);
		PASS(R_ALLOWED);
	}
	if (nh == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if (len < sizeof(*uh) || (void *)(uh + 1) > end || bpf_ntohs(uh->len) < sizeof(*uh) ||
		    !uh->source || !uh->dest)
			DROP(R_BAD_L4);
		if (land && uh->source == uh->dest)
			DROP(R_LAND);
		if (blocked6(s))
			DROP(R_BLOCKED);
		/* The DNS rule is IPv4-only: only an established flow passes. */
		__builtin_memcpy(key.src, s, 16);
		__builtin_memcpy(key.dst, d, 16);
		key.sport = uh->source;
		key.dport = uh->dest;
		st = bpf_map_lookup_elem(&ct6, &key);
		if (st && still_alive(st, IPPROTO_UDP, 0))
			PASS(R_ESTABLISHED);
		DROP(R_DEFAULT);
	}
	if (nh == IPPROTO_ICMPV6) {
		struct echo_hdr *ic = l4;

		if (len < sizeof(*ic) || (void *)(ic + 1) > end)
			DROP(R_BAD_L4);
		/* Neighbor discovery (133..137) with hop limit 255: like ARP. */
		if (ic->type >= 133 && ic->type <= 137 && ip->hop_limit == 255)
			PASS(R_NDP);
		if (land)
			DROP(R_LAND);
		if (blocked6(s))
			DROP(R_BLOCKED);
		if (ic->type != ICMPV6_ECHO_REQUEST)
			DROP(R_DEFAULT);
		__builtin_memcpy(key.src, s, 16);
		__builtin_memcpy(key.dst, d, 16);
		key.sport = ic->id;
		st = bpf_map_lookup_elem(&ct6, &key);
		if (st && still_alive(st, IPPROTO_ICMPV6, 0))
			PASS(R_ESTABLISHED);
		track(&ct6, &key, IPPROTO_ICMPV6, 0);
		PASS(R_ALLOWED);
	}
	if (land)
		DROP(R_LAND);
	if (blocked6(s))
		DROP(R_BLOCKED);
	DROP(R_DEFAULT);
}

SEC("xdp")
int ref_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u16 proto = 0;
	void *l3 = skip_l2(data, end, &proto);

	if (!l3)
		DROP(R_BAD_L2);
	if (proto == bpf_htons(ETH_P_IP))
		return v4(l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return v6(l3, end);
	if (proto == bpf_htons(ETH_P_ARP))
		PASS(R_ARP);
	DROP(R_DEFAULT);
}

char LICENSE[] SEC("license") = "GPL";

/* SPDX-License-Identifier: GPL-2.0 */
/* benches/xdp/shared.h — what ref_xdp.c and naive_xdp.c have in common:
 * the state maps (conntrack, SSH token buckets, counters) and the code that
 * uses them, so the two programs differ only in how they match rules. */
#ifndef BENCH_SHARED_H
#define BENCH_SHARED_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "layout.h"

#define ETH_QINQ 0x88A8
#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_ACK 0x10
#define ICMP4_ECHO_REQUEST 8

/* The 8 bytes of an ICMP echo header (linux/icmp.h pulls in libc headers
 * that do not build for BPF). */
struct echo_hdr {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u16 id;
	__u16 seq;
};

struct tag {
	__u16 tci;
	__u16 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT4_MAX);
	__type(key, struct flow4);
	__type(value, struct flow_state);
} ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT6_MAX);
	__type(key, struct flow6);
	__type(value, struct flow_state);
} ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RL_MAX);
	__type(key, __u32);
	__type(value, struct bucket);
} ssh4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, RL_MAX);
	__type(key, struct in6_addr);
	__type(value, struct bucket);
} ssh6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Counts the verdict under its reason and returns it. A per-CPU slot needs
 * no atomic add. */
static __always_inline int tally(__u32 reason, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &reason);

	if (n)
		*n += 1;
	return verdict;
}

#define DROP(r) return tally(r, XDP_DROP)
#define PASS(r) return tally(r, XDP_PASS)

/* Invalid TCP flag mixes: SYN+FIN, SYN+RST, FIN+RST, or none of SYN, ACK
 * and RST. FIN, SYN, RST and ACK index a 16-entry bit table
 * (index = FIN | SYN << 1 | RST << 2 | ACK << 3; bit set = invalid). */
static __always_inline int bad_flags(__u8 f)
{
	__u32 i = (f & 0x07) | ((f & F_ACK) >> 1);

	return (0xE8EB >> i) & 1;
}

/* One token from `key`'s bucket, 1 if there was one. Credit is time: it
 * grows by the nanoseconds elapsed up to the burst, a token costs
 * SSH_TOKEN_NS. Racing CPUs may lose or double a token (no lock). */
static __always_inline int take_token(void *map, const void *key)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct bucket *b = bpf_map_lookup_elem(map, key);

	if (!b) {
		struct bucket nb = { .stamp_ns = now, .credit_ns = SSH_BURST_NS - SSH_TOKEN_NS };

		bpf_map_update_elem(map, key, &nb, BPF_NOEXIST);
		return 1;
	}
	__u64 credit = b->credit_ns + (now > b->stamp_ns ? now - b->stamp_ns : 0);

	if (credit > SSH_BURST_NS)
		credit = SSH_BURST_NS;
	b->stamp_ns = now;
	if (credit < SSH_TOKEN_NS) {
		b->credit_ns = credit;
		return 0;
	}
	b->credit_ns = credit - SSH_TOKEN_NS;
	return 1;
}

/* Whether a conntrack entry is still alive, updating it on the way: TCP
 * moves from the SYN lifetime to established on its first packet without
 * SYN, FIN and RST shorten it. */
static __always_inline int still_alive(struct flow_state *s, __u8 proto, __u8 flags)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 age = now > s->seen_ns ? now - s->seen_ns : 0;

	if (age >= s->ttl_ns)
		return 0;
	if (age > TOUCH_NS)
		s->seen_ns = now;
	if (proto != IPPROTO_TCP)
		return 1;
	if (flags & F_RST) {
		if (s->ttl_ns > TTL_TCP_RST)
			s->ttl_ns = TTL_TCP_RST;
	} else if (flags & F_FIN) {
		if (s->ttl_ns > TTL_TCP_FIN)
			s->ttl_ns = TTL_TCP_FIN;
	} else if (!(flags & F_SYN) && s->ttl_ns == TTL_TCP_SYN) {
		s->ttl_ns = TTL_TCP_EST;
	}
	return 1;
}

/* Records an allowed flow. No lookup first: the packet was not
 * established, and an LRU update replaces a stale entry of the same key. */
static __always_inline void track(void *map, const void *key, __u8 proto, __u8 flags)
{
	struct flow_state s = { .seen_ns = bpf_ktime_get_coarse_ns() };

	if (proto == IPPROTO_TCP)
		s.ttl_ns = (flags & F_SYN) ? TTL_TCP_SYN : TTL_TCP_EST;
	else if (proto == IPPROTO_UDP)
		s.ttl_ns = TTL_UDP;
	else
		s.ttl_ns = TTL_ICMP;
	bpf_map_update_elem(map, key, &s, BPF_ANY);
}

static __always_inline int ipv6_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == IPPROTO_AH;
}

/* Ethernet and up to two VLAN tags: the ethertype behind them in *proto and
 * the L3 header's address, or 0 when the frame is too short or carries a
 * third tag. */
static __always_inline void *skip_l2(void *data, void *end, __u16 *proto)
{
	struct ethhdr *eth = data;
	void *p = eth + 1;

	if (p > end)
		return 0;
	*proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_QINQ))
			return p;
		struct tag *t = p;

		if (i == 2 || (void *)(t + 1) > end)
			return 0;
		*proto = t->proto;
		p = t + 1;
	}
	return p;
}

#endif

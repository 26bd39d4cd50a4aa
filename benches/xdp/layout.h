/* SPDX-License-Identifier: GPL-2.0 */
/* benches/xdp/layout.h — map sizes, keys and values of the benchmark's
 * hand-written XDP programs (ref_xdp.c, naive_xdp.c). The map filler
 * (benches/src/bin/xdpfill.rs) writes the same byte layouts; change both
 * together. Addresses and ports are in network byte order throughout. */
#ifndef BENCH_LAYOUT_H
#define BENCH_LAYOUT_H

#include <linux/types.h>

/* Map sizes. The blocklist trie holds the 100,000-prefix list with room to
 * spare; conntrack and rate-limit sizes are the language's defaults. */
#define BL_MAX  (1 << 17)
#define CT4_MAX (1 << 20)
#define CT6_MAX (1 << 18)
#define RL_MAX  65536

/* The reference policy's constants (benches/reference.pf). */
#define MAX_EXT_HDRS 4
#define SSH_TOKEN_NS 100000000ULL             /* 10/s: one token per 100 ms */
#define SSH_BURST_NS (10 * SSH_TOKEN_NS)      /* burst 10 */

/* Conntrack lifetimes (nf_conntrack's defaults, as Patronus uses them). */
#define SEC_NS         1000000000ULL
#define TTL_TCP_SYN    (120 * SEC_NS)
#define TTL_TCP_EST    (5ULL * 24 * 3600 * SEC_NS)
#define TTL_TCP_FIN    (120 * SEC_NS)
#define TTL_TCP_RST    (10 * SEC_NS)
#define TTL_UDP        (30 * SEC_NS)
#define TTL_ICMP       (30 * SEC_NS)
/* An entry's timestamp is rewritten at most once a second: a store on every
 * packet would only move its cache line between CPUs. */
#define TOUCH_NS       SEC_NS

struct lpm4 {
	__u32 plen;
	__u8 addr[4];
};

struct lpm6 {
	__u32 plen;
	__u8 addr[16];
};

/* The flow as the inbound packet carries it: remote source first. ICMP
 * echo: sport is the echo identifier, dport 0. */
struct flow4 {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 zero[3];
};

struct flow6 {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 zero[3];
};

struct flow_state {
	__u64 seen_ns;   /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC_COARSE */
	__u64 ttl_ns;
};

struct bucket {
	__u64 stamp_ns;
	__u64 credit_ns; /* 0 .. SSH_BURST_NS */
};

/* One entry of naive_xdp.c's rule array. Fields a rule ignores have a zero
 * mask or the full port range, so a rule is tested with arithmetic alone. */
enum rule_action { RULE_NONE = 0, RULE_DENY = 1, RULE_ALLOW = 2, RULE_LIMIT = 3 };

struct rule {
	__u8 action;
	__u8 family;     /* 4 or 6 */
	__u8 proto;
	__u8 proto_mask; /* 0xff: proto must equal; 0: any */
	__u8 icmp_type;
	__u8 icmp_mask;
	__u16 dport_lo;  /* host byte order, inclusive */
	__u16 dport_hi;
	__u16 pad;
	__u32 src[4];    /* already masked */
	__u32 mask[4];
};

/* Per-CPU counters, one per reason a verdict was given. */
enum reason {
	R_ARP, R_NDP, R_ESTABLISHED, R_ALLOWED,
	R_BAD_L2, R_BAD_L3, R_BAD_L4, R_FRAGMENT, R_LAND,
	R_BLOCKED, R_RATE, R_DEFAULT,
	R_COUNT,
};

#endif

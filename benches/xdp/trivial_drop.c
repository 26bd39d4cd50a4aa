// SPDX-License-Identifier: GPL-2.0
/* The floor: drops every frame untouched. Every figure is a ratio to it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";

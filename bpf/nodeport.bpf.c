/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort on the node's uplink: XDP first, and the same decision (include/nodeport.h) as a
 * tc classifier for devices without XDP. An object of its own, apart from lb.bpf.c: it shares
 * every map with it by pinned name, and the uplink program loads only where NodePort is wanted.
 *
 * Kernel floor: 6.1 (bpf_fib_lookup: 4.18; no kfuncs, no bpf_loop). aya 0.14 names the tc
 * section "classifier" (libbpf's "tc").
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "berth_abi.h"
#include "nodeport.h"
#include "skb_nat.h"

/* IPv4 TCP/UDP without IP options and not a later fragment (those carry no ports), with its
 * whole L4 header in the linear data; everything else is none of NodePort's business. */
static __always_inline int berth_np_parse(void *data, void *data_end, struct berth_np_tuple *t)
{
	struct iphdr *ip = berth_parse_ipv4_l4(data, data_end);
	__be16 *ports = data + L4_OFF;
	__u32 l4_len;

	if (!ip)
		return -1;
	if (ip->protocol == IPPROTO_TCP)
		l4_len = sizeof(struct tcphdr);
	else
		l4_len = sizeof(struct udphdr);
	if (data + L4_OFF + l4_len > data_end)
		return -1;
	t->tot_len = bpf_ntohs(ip->tot_len);
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = ports[0];
	t->dport = ports[1];
	t->proto = ip->protocol;
	if (t->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + L4_OFF;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		t->closing = tcp->fin || tcp->rst;
	}
	return 0;
}

/* ---- XDP ------------------------------------------------------------------------------- */

/* Rewrites addresses and ports in place with incremental checksums. A UDP checksum of 0 (none)
 * stays 0, and a computed 0 is sent as 0xffff (RFC 768). */
static __always_inline int berth_xdp_rewrite(struct xdp_md *ctx, const struct berth_np_tuple *t,
					     const struct berth_np_nat *nat)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + IP_OFF;
	struct tcphdr *tcp = data + L4_OFF;
	struct udphdr *udp = data + L4_OFF;
	__be16 *ports = data + L4_OFF;
	__sum16 *check;
	__u16 sum;

	if ((void *)(ports + 2) > data_end)
		return -1;
	if (t->proto == IPPROTO_TCP) {
		if ((void *)(tcp + 1) > data_end)
			return -1;
		check = &tcp->check;
	} else {
		if ((void *)(udp + 1) > data_end)
			return -1;
		check = &udp->check;
	}
	if (t->proto == IPPROTO_TCP || *check) {
		sum = *check;
		sum = berth_csum_update32(sum, t->saddr, nat->saddr);
		sum = berth_csum_update32(sum, t->daddr, nat->daddr);
		sum = berth_csum_update16(sum, t->sport, nat->sport);
		sum = berth_csum_update16(sum, t->dport, nat->dport);
		if (t->proto == IPPROTO_UDP && !sum)
			sum = 0xffff;
		*check = sum;
	}
	sum = ip->check;
	sum = berth_csum_update32(sum, t->saddr, nat->saddr);
	ip->check = berth_csum_update32(sum, t->daddr, nat->daddr);
	ip->saddr = nat->saddr;
	ip->daddr = nat->daddr;
	ports[0] = nat->sport;
	ports[1] = nat->dport;
	return 0;
}

/* Routes the rewritten packet out by itself: TTL, MACs, then back out of the uplink or into
 * the FIB's interface, whose redirect bpf_redirect_map() has set up. */
static __always_inline int berth_xdp_out(struct xdp_md *ctx, struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	__u32 check;

	if ((void *)(ip + 1) > data_end)
		return XDP_DROP;
	if (ip->ttl <= 1)
		return XDP_PASS; /* the kernel sends the ICMP time exceeded */
	ip->ttl--;
	check = ip->check;
	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xffff));
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return XDP_REDIRECT;
}

SEC("xdp")
int berth_xdp_nodeport(struct xdp_md *ctx)
{
	struct berth_np_tuple t = {};
	struct berth_np_nat nat = {};
	struct bpf_fib_lookup fib;
	enum berth_np_verdict verdict;

	if (berth_np_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &t))
		return XDP_PASS;
	verdict = berth_np_decide(ctx, ctx->ingress_ifindex, &t, &nat, &fib);
	/* Into another device only where berth_xdp_devs says frames are welcome (the lower bits
	 * of the flags are what bpf_redirect_map returns without an entry). Elsewhere a packet
	 * with the client's source is rewritten and left to the kernel to route (LOCAL); a SNATed
	 * one goes on as if its neighbour were unknown. */
	if (verdict == BERTH_NP_FORWARD && fib.ifindex != ctx->ingress_ifindex &&
	    bpf_redirect_map(&BERTH_MAP_XDP_DEVS, fib.ifindex, XDP_PASS) != XDP_REDIRECT)
		verdict = nat.saddr == t.saddr ? BERTH_NP_LOCAL : BERTH_NP_NO_NEIGH;
	/* Without a neighbour entry, the packet goes on untranslated: the tc twin on this device
	 * (when attached) translates it again from the entries written here and resolves the
	 * neighbour; otherwise the kernel answers it as a closed port. */
	if (verdict == BERTH_NP_CONTINUE || verdict == BERTH_NP_NO_NEIGH)
		return XDP_PASS;
	if (verdict == BERTH_NP_DROP || berth_xdp_rewrite(ctx, &t, &nat))
		return XDP_DROP;
	if (verdict == BERTH_NP_LOCAL)
		return XDP_PASS;
	return berth_xdp_out(ctx, &fib);
}

/* Lets a veth peer run NAPI, which native XDP_TX and redirects into a veth need (design.md
 * §6); passes everything. */
SEC("xdp")
int berth_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* ---- tc -------------------------------------------------------------------------------- */

/* berth_skb_rewrite, and nothing at all when neither address nor port changes. */
static __always_inline int berth_tc_rewrite_one(struct __sk_buff *skb, __u8 proto, int addr_off,
						int port_off, __be32 old_addr, __be32 new_addr,
						__be16 old_port, __be16 new_port)
{
	if (old_addr == new_addr && old_port == new_port)
		return 0;
	return berth_skb_rewrite(skb, proto, addr_off, port_off, old_addr, new_addr, old_port,
				 new_port);
}

static __always_inline int berth_tc_out(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
					int resolve)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + IP_OFF;
	__be16 old, new;
	__u8 ttl;

	if ((void *)(ip + 1) > data_end)
		return TC_ACT_SHOT;
	ttl = ip->ttl;
	if (ttl <= 1)
		return TC_ACT_OK;
	/* ttl and protocol share a 16-bit word of the header checksum. */
	old = bpf_htons((__u16)ttl << 8);
	new = bpf_htons((__u16)(ttl - 1) << 8);
	ttl--;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)) ||
	    bpf_skb_store_bytes(skb, IP_TTL_OFF, &ttl, sizeof(ttl), 0))
		return TC_ACT_SHOT;
	if (resolve)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib->smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* The tc twin of berth_xdp_nodeport, for tcx ingress on an uplink without XDP. */
SEC("classifier")
int berth_tc_nodeport(struct __sk_buff *skb)
{
	struct berth_np_tuple t = {};
	struct berth_np_nat nat = {};
	struct bpf_fib_lookup fib;
	enum berth_np_verdict verdict;

	if (berth_np_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &t))
		return TCX_NEXT;
	verdict = berth_np_decide(skb, skb->ifindex, &t, &nat, &fib);
	if (verdict == BERTH_NP_CONTINUE)
		return TCX_NEXT;
	if (verdict == BERTH_NP_DROP ||
	    berth_tc_rewrite_one(skb, t.proto, IP_SADDR_OFF, L4_SPORT_OFF, t.saddr, nat.saddr,
				 t.sport, nat.sport) ||
	    berth_tc_rewrite_one(skb, t.proto, IP_DADDR_OFF, L4_DPORT_OFF, t.daddr, nat.daddr,
				 t.dport, nat.dport))
		return TC_ACT_SHOT;
	if (verdict == BERTH_NP_LOCAL)
		return TC_ACT_OK;
	return berth_tc_out(skb, &fib, verdict == BERTH_NP_NO_NEIGH);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

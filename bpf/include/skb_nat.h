/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing and skb address/port rewriting shared by lb.bpf.c's per-packet program and
 * nodeport.bpf.c: Ethernet + IPv4 without options + TCP/UDP, at fixed offsets.
 */
#ifndef BERTH_SKB_NAT_H
#define BERTH_SKB_NAT_H

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

/* From linux/bpf.h of 6.6+; the values are also what the legacy tc path understands
 * (TC_ACT_UNSPEC continues with the next filter, TC_ACT_SHOT drops). */
#ifndef TCX_NEXT
#define TCX_NEXT TC_ACT_UNSPEC
#define TCX_DROP TC_ACT_SHOT
#endif

#define IP_OFF ETH_HLEN
#define L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_TTL_OFF (IP_OFF + offsetof(struct iphdr, ttl))
#define IP_SADDR_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define L4_SPORT_OFF L4_OFF
#define L4_DPORT_OFF (L4_OFF + 2)

/* The IPv4 header of a frame carrying TCP or UDP, without IP options and not a later fragment
 * (those carry no ports), with both ports in the linear data; NULL for anything else. */
static __always_inline struct iphdr *berth_parse_ipv4_l4(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	__be16 *ports = data + L4_OFF;

	if ((void *)(ports + 2) > data_end)
		return NULL;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    (ip->frag_off & bpf_htons(0x1fff)))
		return NULL;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return NULL;
	return ip;
}

/* Rewrites one address and one port (source or destination) through the skb helpers and fixes
 * the IPv4 header checksum and the TCP/UDP checksum, whose pseudo-header covers the address.
 * The helpers also keep CHECKSUM_PARTIAL and CHECKSUM_COMPLETE packets right. A UDP checksum
 * of 0 (none) stays 0. Returns non-zero when a helper failed; the caller drops the packet then. */
static __always_inline int berth_skb_rewrite(struct __sk_buff *skb, __u8 proto, int addr_off,
					     int port_off, __be32 old_addr, __be32 new_addr,
					     __be16 old_port, __be16 new_port)
{
	int csum_off = L4_OFF + (proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						      : offsetof(struct udphdr, check));
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				BPF_F_PSEUDO_HDR | mangled | sizeof(new_addr)))
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0))
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0))
		return -1;
	return 0;
}

#endif /* BERTH_SKB_NAT_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services: socket-level load balancing on the pods' cgroup2 (translation once, at connect or
 * sendmsg time) and a per-packet DNAT path for tcx ingress on the pods' host-side veths, for
 * traffic the socket hooks cannot see. One object, so every program shares the pinned maps.
 *
 * Kernel floor: 6.1 for the programs (bpf_get_netns_cookie on sock_addr: 5.7; no kfuncs, no
 * bpf_loop). Attaching the classifier as tcx needs 6.6; the loader documents the fallback.
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
#include "lb_maps.h"
#include "lb_select.h"
#include "skb_nat.h"

#define SOCK_ALLOW 1
#define SOCK_REFUSE 0 /* connect()/sendmsg() fail with EPERM */

/* ---- socket hooks ---------------------------------------------------------------------- */

/* Rewrites a frontend destination to a backend and remembers the pair for the reverse hooks.
 * Refuses frontends without ready backends so the client fails at once instead of timing out. */
static __always_inline int berth_sock_translate(struct bpf_sock_addr *ctx)
{
	__u8 proto = ctx->protocol;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	struct berth_sk_revnat_key rkey = {};
	struct berth_sk_revnat_value rval = {};
	struct berth_svc_value *svc;
	struct berth_backend *backend;
	__u32 id;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_ALLOW;
	svc = berth_lookup_frontend(addr, port, proto);
	if (!svc)
		return SOCK_ALLOW;
	if (svc->count == 0)
		return SOCK_REFUSE;
	id = berth_choose_backend(svc, bpf_get_netns_cookie(ctx), bpf_get_prandom_u32());
	if (!id)
		return SOCK_REFUSE;
	backend = berth_backend_by_id(id);
	if (!backend)
		return SOCK_REFUSE;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = backend->addr;
	rkey.port = backend->port;
	rval.addr = addr;
	rval.port = port;
	rval.svc_id = svc->id;
	bpf_map_update_elem(&BERTH_MAP_SK_REVNAT, &rkey, &rval, BPF_ANY);

	ctx->user_ip4 = backend->addr;
	ctx->user_port = backend->port;
	return SOCK_ALLOW;
}

/* Shows the frontend again where the socket would reveal the backend. */
static __always_inline int berth_sock_revnat(struct bpf_sock_addr *ctx)
{
	struct berth_sk_revnat_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct berth_sk_revnat_value *val = bpf_map_lookup_elem(&BERTH_MAP_SK_REVNAT, &key);

	if (val) {
		ctx->user_ip4 = val->addr;
		ctx->user_port = val->port;
	}
	return SOCK_ALLOW;
}

SEC("cgroup/connect4")
int berth_connect4(struct bpf_sock_addr *ctx)
{
	return berth_sock_translate(ctx);
}

SEC("cgroup/sendmsg4")
int berth_sendmsg4(struct bpf_sock_addr *ctx)
{
	return berth_sock_translate(ctx);
}

SEC("cgroup/recvmsg4")
int berth_recvmsg4(struct bpf_sock_addr *ctx)
{
	return berth_sock_revnat(ctx);
}

SEC("cgroup/getpeername4")
int berth_getpeer4(struct bpf_sock_addr *ctx)
{
	return berth_sock_revnat(ctx);
}

/* ---- per-packet path ------------------------------------------------------------------- */

struct berth_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

/* Client -> frontend: reuse the flow's backend while it exists, else choose one and record the
 * forward and reverse entries, then DNAT. */
static __always_inline int berth_tc_dnat(struct __sk_buff *skb, struct berth_tuple *t,
					 struct berth_svc_value *svc)
{
	struct berth_ct_key fkey = {
		.saddr = t->saddr, .daddr = t->daddr, .sport = t->sport, .dport = t->dport,
		.proto = t->proto, .dir = BERTH_CT_FORWARD,
	};
	struct berth_ct_key rkey = { .proto = t->proto, .dir = BERTH_CT_REVERSE };
	struct berth_ct_value fval = {}, rval = {};
	struct berth_ct_value *ct;
	struct berth_backend *backend;
	__u64 now = bpf_ktime_get_ns();
	__be32 addr;
	__be16 port;
	__u32 id;

	if (svc->count == 0)
		return TCX_DROP;
	ct = bpf_map_lookup_elem(&BERTH_MAP_CT, &fkey);
	if (ct && ct->svc_id == svc->id && berth_backend_by_id(ct->backend_id)) {
		ct->last_seen_ns = now;
		addr = ct->nat_addr;
		port = ct->nat_port;
	} else {
		id = berth_choose_backend(svc, t->saddr, bpf_get_hash_recalc(skb));
		backend = id ? berth_backend_by_id(id) : NULL;
		if (!backend)
			return TCX_DROP;
		addr = backend->addr;
		port = backend->port;
		fval.nat_addr = addr;
		fval.nat_port = port;
		fval.backend_id = id;
		fval.svc_id = svc->id;
		fval.last_seen_ns = now;
		rkey.saddr = addr;
		rkey.daddr = t->saddr;
		rkey.sport = port;
		rkey.dport = t->sport;
		rval.nat_addr = t->daddr;
		rval.nat_port = t->dport;
		rval.backend_id = id;
		rval.svc_id = svc->id;
		rval.last_seen_ns = now;
		/* Reverse first: a reply must never find a forward entry without its reverse. */
		if (bpf_map_update_elem(&BERTH_MAP_CT, &rkey, &rval, BPF_ANY) ||
		    bpf_map_update_elem(&BERTH_MAP_CT, &fkey, &fval, BPF_ANY))
			return TCX_DROP;
	}
	if (berth_skb_rewrite(skb, t->proto, IP_DADDR_OFF, L4_DPORT_OFF, t->daddr, addr, t->dport,
			      port))
		return TCX_DROP;
	return TCX_NEXT;
}

/* Backend -> client: show the frontend as the source again. */
static __always_inline int berth_tc_revnat(struct __sk_buff *skb, struct berth_tuple *t)
{
	struct berth_ct_key key = {
		.saddr = t->saddr, .daddr = t->daddr, .sport = t->sport, .dport = t->dport,
		.proto = t->proto, .dir = BERTH_CT_REVERSE,
	};
	struct berth_ct_value *ct = bpf_map_lookup_elem(&BERTH_MAP_CT, &key);
	__be32 addr;
	__be16 port;

	if (!ct)
		return TCX_NEXT;
	ct->last_seen_ns = bpf_ktime_get_ns();
	addr = ct->nat_addr;
	port = ct->nat_port;
	if (berth_skb_rewrite(skb, t->proto, IP_SADDR_OFF, L4_SPORT_OFF, t->saddr, addr, t->sport,
			      port))
		return TCX_DROP;
	return TCX_NEXT;
}

/* tcx ingress on a pod's host-side veth: IPv4 TCP/UDP without IP options; everything else (and
 * non-first fragments, which carry no ports) continues untouched. The kernel routes the
 * rewritten packet. */
SEC("classifier")
int berth_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = berth_parse_ipv4_l4(data, data_end);
	__be16 *ports = data + L4_OFF;
	struct berth_svc_value *svc;
	struct berth_tuple t = {};

	if (!ip)
		return TCX_NEXT;
	t.saddr = ip->saddr;
	t.daddr = ip->daddr;
	t.sport = ports[0];
	t.dport = ports[1];
	t.proto = ip->protocol;

	svc = berth_lookup_frontend(t.daddr, t.dport, t.proto);
	if (svc)
		return berth_tc_dnat(skb, &t, svc);
	return berth_tc_revnat(skb, &t);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

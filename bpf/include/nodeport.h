/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NodePort on the node's uplink: the decision, shared by the XDP program and its tc twin in
 * nodeport.bpf.c. Each program parses the packet, asks berth_np_decide() what to do with it,
 * then rewrites and forwards it with the means of its own context.
 *
 * Two paths, chosen per flow by a FIB lookup towards the chosen backend:
 * - LOCAL: the backend is directly on another interface of this node (a pod's veth). Only
 *   the destination is rewritten (the pod sees the client's address). With the pod's MAC known
 *   the program forwards the packet itself (XDP: a redirect into the pod's veth, when that
 *   device is in berth_xdp_devs); otherwise the kernel routes it on. The pod's reply (backend
 *   -> client) meets lb.bpf.c's tcx program on the pod's host veth, which finds the REVERSE
 *   entry written here and shows nodeIP:nodePort as source.
 * - SNAT: the backend is behind a gateway (another node's pod). Source becomes this node's
 *   address and a port allocated per flow, destination the backend, and the packet leaves the
 *   way it came (XDP_TX) or through the FIB's interface (redirect). The backend's reply comes
 *   back to nodeIP:port on the uplink and is reverse-translated here, in both addresses.
 *
 * A NodePort without ready backends is left to the kernel untouched: nothing listens on the
 * port, so TCP gets a RST and UDP an ICMP port unreachable at once (never a silent drop).
 */
#ifndef BERTH_NODEPORT_H
#define BERTH_NODEPORT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "berth_abi.h"
#include "lb_maps.h"
#include "lb_select.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Tries per new SNAT flow before giving up on a port (then the packet is dropped and the
 * client retries). */
#define BERTH_SNAT_TRIES 8
#define BERTH_SNAT_RANGE (BERTH_SNAT_PORT_MAX - BERTH_SNAT_PORT_MIN + 1)
/* A SNAT port is taken back from a flow idle this long, or this soon after its FIN or RST
 * (the backend's TIME_WAIT then guards the reuse: a new SYN is accepted over TIME_WAIT). */
#define BERTH_SNAT_IDLE_NS (300 * BERTH_NS_PER_SEC)
#define BERTH_SNAT_CLOSED_NS (10 * BERTH_NS_PER_SEC)

struct berth_np_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u16 tot_len; /* the IP packet's length, host order (the FIB checks it against the MTU) */
	__u8 proto;
	__u8 closing; /* TCP FIN or RST */
};

enum berth_np_verdict {
	BERTH_NP_CONTINUE, /* not a NodePort packet, or one the kernel should answer: untouched */
	BERTH_NP_DROP,     /* a helper or map write failed mid-way */
	BERTH_NP_LOCAL,    /* rewrite, then let the kernel route it */
	BERTH_NP_FORWARD,  /* rewrite, then forward it with the FIB's result */
	BERTH_NP_NO_NEIGH, /* to forward, but the next hop's MAC is not known yet */
};

/* The verdict for a FIB lookup towards the rewritten destination. Without a neighbour entry
 * XDP cannot forward. A SNATed packet then goes to the tc twin, which resolves the neighbour
 * with bpf_redirect_neigh: the kernel would drop it, its source being a local address. A
 * packet with the client's source (LOCAL) the kernel routes and resolves by itself. So does
 * every lookup that fails otherwise (a local destination, a packet over the MTU). */
static __always_inline enum berth_np_verdict berth_np_out_verdict(long fib_ret, int snat)
{
	if (fib_ret == BPF_FIB_LKUP_RET_SUCCESS)
		return BERTH_NP_FORWARD;
	if (fib_ret == BPF_FIB_LKUP_RET_NO_NEIGH && snat)
		return BERTH_NP_NO_NEIGH;
	return BERTH_NP_LOCAL;
}

/* The rewrite: the packet's new source and destination. */
struct berth_np_nat {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

/* A flow hash for Maglev: the same 5-tuple always picks the same table entry (murmur3's
 * finaliser over the mixed fields). */
static __always_inline __u32 berth_np_hash(const struct berth_np_tuple *t)
{
	__u32 h = t->saddr * 0x9e3779b1U;

	h ^= t->daddr + 0x7f4a7c15U + (h << 6) + (h >> 2);
	h ^= (((__u32)t->sport << 16) | t->dport) + 0x7f4a7c15U + (h << 6) + (h >> 2);
	h ^= t->proto;
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

static __always_inline struct berth_ct_key berth_np_ct_key(__be32 saddr, __be32 daddr,
							   __be16 sport, __be16 dport,
							   __u8 proto, __u8 dir)
{
	struct berth_ct_key key = {
		.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport,
		.proto = proto, .dir = dir,
	};

	return key;
}

/* A FIB lookup from `ifindex` for src -> dst; fills `fib` (egress ifindex, MACs). */
static __always_inline long berth_np_fib(void *ctx, struct bpf_fib_lookup *fib, __u32 ifindex,
					 const struct berth_np_tuple *t, __be32 saddr,
					 __be32 daddr, __be16 sport, __be16 dport)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->tot_len = t->tot_len;
	fib->l4_protocol = t->proto;
	fib->sport = sport;
	fib->dport = dport;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

static __always_inline int berth_np_reclaimable(const struct berth_ct_value *in, __u64 now)
{
	__u64 idle = now - in->last_seen_ns;

	return idle > BERTH_SNAT_IDLE_NS ||
	       ((in->flags & BERTH_CT_F_CLOSING) && idle > BERTH_SNAT_CLOSED_NS);
}

/* Claims a free SNAT port towards backend:bport by inserting its SNAT_IN entry (the claim and
 * the record are one write). Returns the port (network order) or 0. */
static __always_inline __be16 berth_np_snat_port(const struct berth_np_tuple *t, __be32 backend,
						 __be16 bport, __u32 hash, __u64 now)
{
	struct berth_ct_value in = {
		.nat_addr = t->saddr, .nat_port = t->sport, .last_seen_ns = now,
	};

#pragma unroll
	for (int i = 0; i < BERTH_SNAT_TRIES; i++) {
		__u16 port = BERTH_SNAT_PORT_MIN + (hash + i * 7919U) % BERTH_SNAT_RANGE;
		struct berth_ct_key key = berth_np_ct_key(backend, t->daddr, bport,
							  bpf_htons(port), t->proto,
							  BERTH_CT_SNAT_IN);
		struct berth_ct_value *old;

		if (!bpf_map_update_elem(&BERTH_MAP_CT, &key, &in, BPF_NOEXIST))
			return bpf_htons(port);
		old = bpf_map_lookup_elem(&BERTH_MAP_CT, &key);
		if (old && berth_np_reclaimable(old, now) &&
		    !bpf_map_update_elem(&BERTH_MAP_CT, &key, &in, BPF_EXIST))
			return bpf_htons(port);
	}
	return 0;
}

/* Client -> nodeIP:nodePort. `fib` is left holding the lookup towards the rewritten
 * destination when the verdict is BERTH_NP_FORWARD. */
static __always_inline enum berth_np_verdict
berth_np_forward(void *ctx, __u32 ifindex, const struct berth_np_tuple *t,
		 struct berth_svc_value *svc, struct berth_np_nat *nat, struct bpf_fib_lookup *fib)
{
	struct berth_ct_key fkey = berth_np_ct_key(t->saddr, t->daddr, t->sport, t->dport,
						   t->proto, BERTH_CT_FORWARD);
	struct berth_ct_key okey = fkey;
	struct berth_ct_key rkey;
	struct berth_ct_value fval = {}, rval = {}, oval = {};
	struct berth_ct_value *ct, *out;
	struct berth_backend *backend;
	__u64 now = bpf_ktime_get_ns();
	__u32 hash, id;
	__be16 port;
	long ret;

	okey.dir = BERTH_CT_SNAT_OUT;
	nat->saddr = t->saddr;
	nat->sport = t->sport;

	ct = bpf_map_lookup_elem(&BERTH_MAP_CT, &fkey);
	if (ct && ct->svc_id == svc->id && berth_backend_by_id(ct->backend_id)) {
		ct->last_seen_ns = now;
		nat->daddr = ct->nat_addr;
		nat->dport = ct->nat_port;
		out = bpf_map_lookup_elem(&BERTH_MAP_CT, &okey);
		if (!out)
			goto forward; /* LOCAL: the client's address stays */
		out->last_seen_ns = now;
		nat->saddr = out->nat_addr;
		nat->sport = out->nat_port;
		if (t->closing) {
			struct berth_ct_key ikey = berth_np_ct_key(nat->daddr, nat->saddr,
								   nat->dport, nat->sport,
								   t->proto, BERTH_CT_SNAT_IN);
			struct berth_ct_value *in = bpf_map_lookup_elem(&BERTH_MAP_CT, &ikey);

			if (in)
				in->flags |= BERTH_CT_F_CLOSING;
		}
		goto forward;
	}

	hash = berth_np_hash(t);
	id = berth_choose_backend(svc, t->saddr, hash);
	backend = id ? berth_backend_by_id(id) : NULL;
	if (!backend)
		return BERTH_NP_CONTINUE;
	nat->daddr = backend->addr;
	nat->dport = backend->port;
	fval.nat_addr = backend->addr;
	fval.nat_port = backend->port;
	fval.backend_id = id;
	fval.svc_id = svc->id;
	fval.last_seen_ns = now;
	rval.nat_addr = t->daddr;
	rval.nat_port = t->dport;
	rval.backend_id = id;
	rval.svc_id = svc->id;
	rval.last_seen_ns = now;

	ret = berth_np_fib(ctx, fib, ifindex, t, t->saddr, nat->daddr, t->sport, nat->dport);
	if ((ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    (fib->ifindex != ifindex && fib->ipv4_dst == nat->daddr)) {
		/* LOCAL: the backend is on a link of this node's without a gateway (a pod's veth);
		 * the reply comes from backend to client through that veth. A backend behind a
		 * gateway (another node's pod, whichever link leads there) takes SNAT below, so its
		 * reply returns here rather than straight to a client its node cannot route to.
		 * `fib` already holds the lookup for the rewritten packet. */
		rkey = berth_np_ct_key(nat->daddr, t->saddr, nat->dport, t->sport, t->proto,
				       BERTH_CT_REVERSE);
		if (bpf_map_update_elem(&BERTH_MAP_CT, &rkey, &rval, BPF_ANY) ||
		    bpf_map_update_elem(&BERTH_MAP_CT, &fkey, &fval, BPF_ANY))
			return BERTH_NP_DROP;
		return berth_np_out_verdict(ret, 0);
	}

	/* SNAT: the reply comes from backend to nodeIP:port through the uplink. */
	port = berth_np_snat_port(t, nat->daddr, nat->dport, hash, now);
	if (!port)
		return BERTH_NP_DROP;
	rkey = berth_np_ct_key(nat->daddr, t->daddr, nat->dport, port, t->proto,
			       BERTH_CT_REVERSE);
	oval.nat_addr = t->daddr;
	oval.nat_port = port;
	oval.backend_id = id;
	oval.svc_id = svc->id;
	oval.last_seen_ns = now;
	/* Reverse entries first: a reply must never find a forward entry without its reverse. */
	if (bpf_map_update_elem(&BERTH_MAP_CT, &rkey, &rval, BPF_ANY) ||
	    bpf_map_update_elem(&BERTH_MAP_CT, &okey, &oval, BPF_ANY) ||
	    bpf_map_update_elem(&BERTH_MAP_CT, &fkey, &fval, BPF_ANY))
		return BERTH_NP_DROP;
	nat->saddr = t->daddr;
	nat->sport = port;

forward:
	ret = berth_np_fib(ctx, fib, ifindex, t, nat->saddr, nat->daddr, nat->sport, nat->dport);
	return berth_np_out_verdict(ret, nat->saddr != t->saddr);
}

/* Backend -> nodeIP:SNAT port on the uplink: back to nodeIP:nodePort -> client. */
static __always_inline enum berth_np_verdict
berth_np_reverse(void *ctx, __u32 ifindex, const struct berth_np_tuple *t,
		 struct berth_np_nat *nat, struct bpf_fib_lookup *fib)
{
	struct berth_ct_key key = berth_np_ct_key(t->saddr, t->daddr, t->sport, t->dport,
						  t->proto, BERTH_CT_SNAT_IN);
	struct berth_ct_value *in, *rev;
	__u64 now;

	in = bpf_map_lookup_elem(&BERTH_MAP_CT, &key);
	if (!in)
		return BERTH_NP_CONTINUE;
	key.dir = BERTH_CT_REVERSE;
	rev = bpf_map_lookup_elem(&BERTH_MAP_CT, &key);
	if (!rev)
		return BERTH_NP_CONTINUE;
	now = bpf_ktime_get_ns();
	in->last_seen_ns = now;
	rev->last_seen_ns = now;
	if (t->closing)
		in->flags |= BERTH_CT_F_CLOSING;
	nat->saddr = rev->nat_addr;
	nat->sport = rev->nat_port;
	nat->daddr = in->nat_addr;
	nat->dport = in->nat_port;
	return berth_np_out_verdict(berth_np_fib(ctx, fib, ifindex, t, nat->saddr, nat->daddr,
						 nat->sport, nat->dport),
				    1);
}

/* What to do with an IPv4 TCP/UDP packet that arrived on the uplink `ifindex`. */
static __always_inline enum berth_np_verdict
berth_np_decide(void *ctx, __u32 ifindex, const struct berth_np_tuple *t,
		struct berth_np_nat *nat, struct bpf_fib_lookup *fib)
{
	struct berth_node_addr_key node = { .addr = t->daddr };
	struct berth_svc_key key = { .addr = 0, .port = t->dport, .proto = t->proto };
	struct berth_svc_value *svc;

	if (!bpf_map_lookup_elem(&BERTH_MAP_NODE_ADDRS, &node))
		return BERTH_NP_CONTINUE;
	svc = bpf_map_lookup_elem(&BERTH_MAP_SVC, &key);
	if (svc && (svc->flags & BERTH_SVC_NODEPORT)) {
		if (svc->count == 0)
			return BERTH_NP_CONTINUE;
		return berth_np_forward(ctx, ifindex, t, svc, nat, fib);
	}
	return berth_np_reverse(ctx, ifindex, t, nat, fib);
}

/* RFC 1624 incremental update of a 16-bit one's complement checksum for a 32-bit field. The
 * sum is byte-order neutral, so network-order fields go in as they are. */
static __always_inline __u16 berth_csum_update32(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + (__u16)~(from >> 16);
	sum += (__u16)to + (__u16)(to >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u16 berth_csum_update16(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + to;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif /* BERTH_NODEPORT_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frontend lookup and backend choice, shared by the socket hooks and the packet path.
 */
#ifndef BERTH_LB_SELECT_H
#define BERTH_LB_SELECT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "berth_abi.h"
#include "lb_maps.h"

#define BERTH_NS_PER_SEC 1000000000ULL

/* The frontend for addr:port/proto: an exact (ClusterIP) match first, then a NodePort frontend
 * when addr is one of this node's addresses or 127.0.0.1. */
static __always_inline struct berth_svc_value *
berth_lookup_frontend(__be32 addr, __be16 port, __u8 proto)
{
	struct berth_svc_key key = { .addr = addr, .port = port, .proto = proto };
	struct berth_node_addr_key node = { .addr = addr };
	struct berth_svc_value *svc;

	svc = bpf_map_lookup_elem(&BERTH_MAP_SVC, &key);
	if (svc)
		return svc;
	if (addr != bpf_htonl(0x7f000001) && !bpf_map_lookup_elem(&BERTH_MAP_NODE_ADDRS, &node))
		return NULL;
	key.addr = 0;
	svc = bpf_map_lookup_elem(&BERTH_MAP_SVC, &key);
	if (svc && (svc->flags & BERTH_SVC_NODEPORT))
		return svc;
	return NULL;
}

static __always_inline struct berth_backend *berth_backend_by_id(__u32 id)
{
	struct berth_backend_key key = { .id = id };

	return bpf_map_lookup_elem(&BERTH_MAP_BACKENDS, &key);
}

/* A backend id for svc (count > 0): the client's affine backend while it is fresh and still
 * exists, else a Maglev table entry chosen by hash, else a random slot. Returns 0 when the maps
 * are mid-update (a slot or table entry without a backend); the caller then refuses. */
static __always_inline __u32 berth_choose_backend(struct berth_svc_value *svc, __u64 client,
						  __u32 hash)
{
	struct berth_affinity_key akey = { .client = client, .svc_id = svc->id };
	struct berth_affinity_value aval = {};
	struct berth_slot_key skey = { .svc_id = svc->id };
	struct berth_slot_value *slot;
	__u64 now = bpf_ktime_get_ns();
	__u32 id = 0;

	if (svc->flags & BERTH_SVC_AFFINITY) {
		struct berth_affinity_value *prev = bpf_map_lookup_elem(&BERTH_MAP_AFFINITY, &akey);

		if (prev && now - prev->last_used_ns <=
				    (__u64)svc->affinity_timeout * BERTH_NS_PER_SEC &&
		    berth_backend_by_id(prev->backend_id))
			id = prev->backend_id;
	}
	if (!id && (svc->flags & BERTH_SVC_MAGLEV)) {
		__u32 svc_id = svc->id;
		struct berth_maglev_value *table = bpf_map_lookup_elem(&BERTH_MAP_MAGLEV, &svc_id);

		if (table) {
			__u32 index = hash % BERTH_MAGLEV_SIZE;

			/* The verifier does not bound a modulo; keep clang from dropping the check
			 * it needs instead. */
			asm volatile("" : "+r"(index));
			if (index < BERTH_MAGLEV_SIZE)
				id = table->backend_ids[index];
		}
	}
	if (!id) {
		skey.slot = bpf_get_prandom_u32() % svc->count + 1;
		slot = bpf_map_lookup_elem(&BERTH_MAP_SLOTS, &skey);
		if (!slot)
			return 0;
		id = slot->backend_id;
	}
	if (svc->flags & BERTH_SVC_AFFINITY) {
		aval.backend_id = id;
		aval.last_used_ns = now;
		bpf_map_update_elem(&BERTH_MAP_AFFINITY, &akey, &aval, BPF_ANY);
	}
	return id;
}

#endif /* BERTH_LB_SELECT_H */

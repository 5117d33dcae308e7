/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The Service maps, declared once for lb.bpf.c. Every map is pinned by name, so a second load
 * (an agent restart, another object) reuses the same kernel maps and their contents.
 *
 * The maps the agent writes are hashes without preallocation: most clusters use a small part
 * of BERTH_MAX_*, and a preallocated 262144-entry hash would pin memory for nothing. The LRU
 * maps the programs write must be preallocated (the kernel requires it for LRU).
 */
#ifndef BERTH_LB_MAPS_H
#define BERTH_LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "berth_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, BERTH_MAX_SERVICES);
	__type(key, struct berth_svc_key);
	__type(value, struct berth_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_SVC SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, BERTH_MAX_BACKENDS);
	__type(key, struct berth_slot_key);
	__type(value, struct berth_slot_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_SLOTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, BERTH_MAX_BACKENDS);
	__type(key, struct berth_backend_key);
	__type(value, struct berth_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_BACKENDS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, BERTH_MAX_MAGLEV);
	__type(key, __u32); /* service id */
	__type(value, struct berth_maglev_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_MAGLEV SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BERTH_MAX_AFFINITY);
	__type(key, struct berth_affinity_key);
	__type(value, struct berth_affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_AFFINITY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BERTH_MAX_SK_REVNAT);
	__type(key, struct berth_sk_revnat_key);
	__type(value, struct berth_sk_revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_SK_REVNAT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BERTH_MAX_CT);
	__type(key, struct berth_ct_key);
	__type(value, struct berth_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_CT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BERTH_MAX_NODE_ADDRS);
	__type(key, struct berth_node_addr_key);
	__type(value, struct berth_node_addr_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_NODE_ADDRS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, BERTH_MAX_XDP_DEVS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} BERTH_MAP_XDP_DEVS SEC(".maps");

#endif /* BERTH_LB_MAPS_H */

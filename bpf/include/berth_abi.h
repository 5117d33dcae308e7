/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ABI between Berth's BPF programs and the `dataplane` crate: map names, key and value
 * layouts, flags. dataplane/src/abi.rs mirrors every struct here with #[repr(C)] and checks
 * sizes and offsets in its tests; change both together.
 *
 * Addresses and ports are in network byte order (__be32/__be16) everywhere, as the kernel hands
 * them to the programs (bpf_sock_addr.user_ip4/user_port, iphdr, tcphdr).
 *
 * Model (Cilium's, smaller):
 *   frontend (VIP or NodePort, port, proto) --berth_svc--> service id + backend count
 *   (service id, slot 1..=count)            --berth_slots--> backend id
 *   backend id                              --berth_backends--> backend address, port
 * A frontend with count == 0 has no ready endpoints: connections are refused at once.
 * One endpoint change is a few writes: the slot list is compacted by moving the last slot into
 * the freed one, then the frontend's count is written.
 */
#ifndef BERTH_ABI_H
#define BERTH_ABI_H

#include <linux/types.h>

/* Map names (BPF object names are at most 15 bytes). All are pinned by name under
 * <bpffs>/berth/, so every object and every agent restart shares them. */
#define BERTH_MAP_SVC        berth_svc
#define BERTH_MAP_SLOTS      berth_slots
#define BERTH_MAP_BACKENDS   berth_backends
#define BERTH_MAP_MAGLEV     berth_maglev
#define BERTH_MAP_AFFINITY   berth_affinity
#define BERTH_MAP_SK_REVNAT  berth_sk_revnat
#define BERTH_MAP_CT         berth_ct
#define BERTH_MAP_NODE_ADDRS berth_nodeaddrs
#define BERTH_MAP_XDP_DEVS   berth_xdp_devs

#define BERTH_MAX_SERVICES   65536   /* frontends */
#define BERTH_MAX_BACKENDS   262144  /* slots and backends */
#define BERTH_MAX_AFFINITY   65536
#define BERTH_MAX_SK_REVNAT  262144
#define BERTH_MAX_CT         262144
#define BERTH_MAX_NODE_ADDRS 64
#define BERTH_MAX_XDP_DEVS   65536   /* one per pod veth, plus the uplinks */
#define BERTH_MAX_MAGLEV     1024    /* frontends with BERTH_SVC_MAGLEV */

/* Maglev lookup table size per NodePort frontend: a prime (Maglev paper: M prime, M >> N). */
#define BERTH_MAGLEV_SIZE    1021

/* berth_svc_value.flags */
#define BERTH_SVC_AFFINITY   (1 << 0) /* sessionAffinity: ClientIP */
#define BERTH_SVC_NODEPORT   (1 << 1) /* addr is 0: matches every address in berth_nodeaddrs */
#define BERTH_SVC_MAGLEV     (1 << 2) /* pick backends from berth_maglev, not at random */

/* berth_svc: frontend -> service. addr is the ClusterIP (or externalIP / load-balancer IP);
 * 0 for a NodePort frontend. proto is IPPROTO_TCP or IPPROTO_UDP. */
struct berth_svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct berth_svc_value {
	__u32 id;               /* unique per frontend, never 0 */
	__u16 count;            /* backends in slots 1..=count; 0: refuse */
	__u16 flags;            /* BERTH_SVC_* */
	__u32 affinity_timeout; /* seconds, with BERTH_SVC_AFFINITY */
	__u32 pad;
};

/* berth_slots: (service id, slot) -> backend id. Slot 0 is never used. */
struct berth_slot_key {
	__u32 svc_id;
	__u32 slot;
};

struct berth_slot_value {
	__u32 backend_id;
};

/* berth_backends: backend id -> address. Ids are unique per (addr, port, proto) and never 0. */
struct berth_backend_key {
	__u32 id;
};

struct berth_backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 flags; /* reserved: 0 */
};

/* berth_maglev: service id -> BERTH_MAGLEV_SIZE backend ids (Maglev permutation fill). */
struct berth_maglev_value {
	__u32 backend_ids[BERTH_MAGLEV_SIZE];
};

/* berth_affinity (LRU): (service id, client) -> chosen backend. The client is the netns cookie
 * for the socket hooks (one per pod) and the source address for packet paths. */
struct berth_affinity_key {
	__u64 client;
	__u32 svc_id;
	__u32 pad;
};

struct berth_affinity_value {
	__u32 backend_id;
	__u32 pad;
	__u64 last_used_ns; /* bpf_ktime_get_ns() */
};

/* berth_sk_revnat (LRU): what connect4/sendmsg4 translated, so recvmsg4 and getpeername4 show
 * the service address again. */
struct berth_sk_revnat_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__be32 addr;  /* backend */
	__be16 port;
	__u16 pad;
};

struct berth_sk_revnat_value {
	__be32 addr; /* frontend */
	__be16 port;
	__u16 pad;
	__u32 svc_id;
};

/* berth_ct (LRU): per-packet connection tracking for the tc and XDP paths. Only the BPF
 * programs write it; the agent reads it for diagnostics. */
#define BERTH_CT_FORWARD 0 /* key is client -> frontend; value: the chosen backend */
#define BERTH_CT_REVERSE 1 /* key is backend -> client (as seen after NAT); value: the frontend */
/* NodePort flows whose backend sits behind the uplink are SNATed to the node address and a
 * port of their own, so replies come back here (nodeport.bpf.c). Two more entries per flow: */
#define BERTH_CT_SNAT_OUT 2 /* key is client -> frontend; value: node address and SNAT port */
#define BERTH_CT_SNAT_IN 3  /* key is backend -> node:SNAT port; value: the client */

/* SNAT ports: above Linux's default ip_local_port_range (32768-60999), so they never collide
 * with the node's own connections, and above the NodePort range. */
#define BERTH_SNAT_PORT_MIN 61000
#define BERTH_SNAT_PORT_MAX 65535

/* berth_ct_value.flags */
#define BERTH_CT_F_CLOSING (1 << 0) /* a TCP FIN or RST was seen: the SNAT port frees soon */

struct berth_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* BERTH_CT_* */
	__u16 pad;
};

struct berth_ct_value {
	__be32 nat_addr; /* forward: backend; reverse: frontend */
	__be16 nat_port;
	__u16 flags;     /* BERTH_CT_F_* */
	__u32 backend_id;
	__u32 svc_id;
	__u64 last_seen_ns;
};

/* berth_nodeaddrs: this node's addresses, which NodePort frontends match. */
struct berth_node_addr_key {
	__be32 addr;
};

struct berth_node_addr_value {
	__u32 ifindex; /* where it lives; 0 when unknown */
};

/* berth_xdp_devs (a DEVMAP_HASH): ifindex -> struct bpf_devmap_val { .ifindex = the same }.
 * The devices native XDP may redirect frames into: pods' host veths, whose pod ends have NAPI
 * (podnet turns GRO on there), and NodePort uplinks with XDP attached. A redirect into any
 * other device could be dropped unseen, so NodePort XDP leaves such packets to the kernel. */

#endif /* BERTH_ABI_H */

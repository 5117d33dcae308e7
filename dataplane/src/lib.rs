//! Berth's data plane: pod networking over netlink and Services forwarded by the BPF programs in
//! `bpf/`, loaded with aya. Not yet built: see the data-plane issue.

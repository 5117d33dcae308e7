//! `berth shim`: the per-pod process that holds the pod's namespaces and is its containers' parent.

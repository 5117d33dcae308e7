//! Berth's kubelet: runs pods' containers itself with Linux namespaces, cgroups and overlayfs
//! from OCI images. Unsafe code lives only in its `sys` module. Not yet built: see the kubelet
//! issue.

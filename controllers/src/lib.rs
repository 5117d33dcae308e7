//! Berth's controllers (deployment, replicaset, job, endpointslice, garbage collector, namespace,
//! node lifecycle, node IPAM), each an API client on informers and rate-limited work queues.
//! Not yet built: see the scheduler-and-controllers issue.

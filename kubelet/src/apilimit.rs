//! A cap on the kubelet's concurrent requests to the API server. kube's client keeps one HTTP/1.1
//! connection per request in flight and keeps them idle for 90 s, so a burst of pods (each worker
//! posting events and status at once) opened about 250 TLS connections, and their buffers,
//! freed later, stayed in the allocator's arenas: some 10 MiB of the kubelet's resident memory at
//! 100 pods. A few requests at a time on reused connections serve a burst as fast, since the
//! API server has the same cores to answer them with.

use std::sync::Arc;

use kube::client::Body;
use tokio::sync::Semaphore;

/// Requests in flight at once; watches count only until their response headers arrive.
pub const MAX_IN_FLIGHT: usize = 16;

/// `client`, with at most `max` of its requests waiting for a response at a time (the others
/// wait their turn). A watch holds its slot only until the API server answers it, not while it
/// streams, so any number of watches run beside the cap.
pub fn limit_in_flight(client: kube::Client, max: usize) -> kube::Client {
    let default_namespace = client.default_namespace().to_owned();
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let (client, slots) = (client.clone(), Arc::clone(&slots));
        async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await.ok();
            client.send(request).await
        }
    });
    kube::Client::new(service, default_namespace)
}

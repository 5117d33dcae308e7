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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn at_most_max_requests_reach_the_server_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            // The fake API server answers only as the test hands out permits.
            let gate = Arc::new(Semaphore::new(0));
            let (f, m, g) = (in_flight.clone(), most.clone(), gate.clone());
            let server = tower::service_fn(move |_: http::Request<Body>| {
                let (f, m, g) = (f.clone(), m.clone(), g.clone());
                async move {
                    let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    g.acquire().await.expect("open").forget();
                    f.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(Vec::new())))
                }
            });
            let client = limit_in_flight(kube::Client::new(server, "default"), 2);
            let requests: Vec<_> = (0..5)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let request = http::Request::get("/api").body(Body::from(Vec::new()));
                        client.send(request.unwrap()).await.map(|r| r.status())
                    })
                })
                .collect();
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                in_flight.load(Ordering::SeqCst),
                2,
                "two wait on the server"
            );
            gate.add_permits(5);
            for r in requests {
                assert_eq!(r.await.unwrap().unwrap(), http::StatusCode::OK);
            }
            assert_eq!(most.load(Ordering::SeqCst), 2);
        });
    }
}

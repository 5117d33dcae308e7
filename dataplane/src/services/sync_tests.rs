use std::net::Ipv4Addr;

use serde_json::json;

use super::*;
use crate::abi::{self, SvcKey};
use crate::services::desired::tests::{service, slice, Ep};
use crate::services::memory::MemoryTables;

fn ready(addr: &'static str) -> Ep<'static> {
    (addr, "n1", Some(true), None, None)
}

/// Service `name` on `ip`, port 80 named "http".
fn http_service(name: &str, ip: &str) -> Service {
    service(
        name,
        json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}),
    )
}

fn web(ip: &str) -> Service {
    http_service("web", ip)
}

/// The "web-a" slice of "web": port "http" 8080 on each of `addrs`, all ready.
fn web_a(addrs: &[&'static str]) -> EndpointSlice {
    let endpoints: Vec<Ep<'static>> = addrs.iter().map(|a| ready(a)).collect();
    slice("web", "web-a", "http", 8080, &endpoints)
}

fn frontend(ip: [u8; 4]) -> SvcKey {
    SvcKey::new(Ipv4Addr::from(ip), 80, abi::PROTO_TCP)
}

fn sync() -> ServiceSync<MemoryTables> {
    ServiceSync::new(Programmer::new(MemoryTables::checked()), "n1")
}

/// Both initial lists, with `services` and `slices`.
fn listed(s: &mut ServiceSync<MemoryTables>, services: Vec<Service>, slices: Vec<EndpointSlice>) {
    s.on_service(Event::Init);
    for svc in services {
        s.on_service(Event::InitApply(svc));
    }
    s.on_service(Event::InitDone);
    s.on_slice(Event::Init);
    for sl in slices {
        s.on_slice(Event::InitApply(sl));
    }
    s.on_slice(Event::InitDone);
}

fn count(s: &ServiceSync<MemoryTables>, key: &SvcKey) -> Option<u16> {
    s.programmer().tables().svc.get(key).map(|v| v.count)
}

#[test]
fn nothing_is_programmed_until_both_lists_are_complete() {
    let mut s = sync();
    s.on_service(Event::Init);
    s.on_service(Event::InitApply(web("10.96.0.10")));
    s.on_service(Event::InitDone);
    assert_eq!(s.progress().applied, 0);
    assert!(s.programmer().tables().svc.is_empty());
    assert!(!s.progress().synced);
    s.on_slice(Event::Init);
    let sl = web_a(&["10.244.0.1", "10.244.0.2"]);
    s.on_slice(Event::InitApply(sl));
    s.on_slice(Event::InitDone);
    let p = s.progress();
    assert!(p.synced);
    assert_eq!((p.applied, p.stats.frontends, p.stats.backends), (1, 1, 2));
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(2));
}

#[test]
fn a_slice_change_reprograms_only_its_service() {
    let mut s = sync();
    let other = http_service("api", "10.96.0.11");
    let sl = web_a(&["10.244.0.1"]);
    listed(&mut s, vec![web("10.96.0.10"), other], vec![sl]);
    let before = s.progress().applied;
    let sl = web_a(&["10.244.0.1", "10.244.0.2"]);
    s.on_slice(Event::Apply(sl.clone()));
    assert_eq!(s.progress().applied, before + 1);
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(2));
    s.on_slice(Event::Delete(sl));
    assert_eq!(
        count(&s, &frontend([10, 96, 0, 10])),
        Some(0),
        "frontend stays, refusing"
    );
    assert_eq!(s.progress().stats.backends, 0);
    assert_eq!(s.programmer().tables().violations(), &[] as &[String]);
}

#[test]
fn endpoints_from_several_slices_are_merged() {
    let mut s = sync();
    let a = web_a(&["10.244.0.1"]);
    let b = slice(
        "web",
        "web-b",
        "http",
        8080,
        &[ready("10.244.0.2"), ready("10.244.0.1")],
    );
    listed(&mut s, vec![web("10.96.0.10")], vec![a, b]);
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(2));
}

#[test]
fn a_relabelled_slice_moves_to_its_new_service() {
    let mut s = sync();
    let other = http_service("api", "10.96.0.11");
    let sl = slice("web", "shared", "http", 8080, &[ready("10.244.0.1")]);
    listed(&mut s, vec![web("10.96.0.10"), other], vec![sl]);
    let moved = slice("api", "shared", "http", 8080, &[ready("10.244.0.1")]);
    s.on_slice(Event::Apply(moved));
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(0));
    assert_eq!(count(&s, &frontend([10, 96, 0, 11])), Some(1));
}

#[test]
fn service_changes_and_deletes_are_programmed() {
    let mut s = sync();
    let sl = web_a(&["10.244.0.1"]);
    listed(&mut s, vec![web("10.96.0.10")], vec![sl]);
    s.on_service(Event::Apply(web("10.96.0.20")));
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), None);
    assert_eq!(count(&s, &frontend([10, 96, 0, 20])), Some(1));
    s.on_service(Event::Delete(web("10.96.0.20")));
    assert!(s.programmer().tables().svc.is_empty());
    assert_eq!(s.progress().stats, Stats::default());
}

#[test]
fn a_relist_removes_services_that_disappeared() {
    let mut s = sync();
    let other = http_service("api", "10.96.0.11");
    let sl = web_a(&["10.244.0.1"]);
    listed(&mut s, vec![web("10.96.0.10"), other.clone()], vec![sl]);
    assert_eq!(s.progress().stats.services, 2);
    // The watch restarts; "web" was deleted while it was down.
    s.on_service(Event::Init);
    s.on_service(Event::InitApply(other));
    assert_eq!(
        s.progress().stats.services,
        2,
        "nothing changes before InitDone"
    );
    s.on_service(Event::InitDone);
    assert_eq!(s.progress().stats.services, 1);
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), None);
    // The slices relist without web's slice: its backend goes.
    s.on_slice(Event::Init);
    s.on_slice(Event::InitDone);
    assert_eq!(s.progress().stats.backends, 0);
    assert_eq!(s.programmer().tables().violations(), &[] as &[String]);
}

#[test]
fn failed_programming_is_retried() {
    let mut tables = MemoryTables::checked();
    tables.fail_at = Some(2);
    let mut s = ServiceSync::new(Programmer::new(tables), "n1");
    let sl = web_a(&["10.244.0.1", "10.244.0.2"]);
    listed(&mut s, vec![web("10.96.0.10")], vec![sl]);
    assert_eq!(s.progress().failing, 1);
    s.retry_failing();
    assert_eq!(s.progress().failing, 0);
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(2));
}

#[test]
fn a_frontend_freed_by_one_service_goes_to_the_one_waiting_for_it() {
    let mut s = sync();
    let twin = service(
        "twin",
        json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}),
    );
    let a = web_a(&["10.244.0.1"]);
    let b = slice(
        "twin",
        "twin-a",
        "http",
        8080,
        &[ready("10.244.0.2"), ready("10.244.0.3")],
    );
    listed(&mut s, vec![twin.clone(), web("10.96.0.10")], vec![a, b]);
    let first = count(&s, &frontend([10, 96, 0, 10]));
    s.on_service(Event::Delete(if first == Some(1) {
        web("10.96.0.10")
    } else {
        twin
    }));
    let expected = if first == Some(1) { Some(2) } else { Some(1) };
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), expected);
}

#[tokio::test]
async fn run_service_sync_stops_on_shutdown() {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    let client = Client::try_from(config).expect("client");
    let (tx, rx) = watch::channel(SyncProgress::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let programmer = run_service_sync(
            client,
            "n1",
            Programmer::new(MemoryTables::checked()),
            tx,
            async {
                let _ = stopped.await;
            },
        )
        .await;
        programmer.stats()
    });
    stop.send(()).expect("stop");
    let stats = task.await.expect("task");
    assert_eq!(stats, Stats::default());
    assert!(!rx.borrow().synced);
}

#[test]
fn a_restarted_agent_rewrites_nothing_and_drops_what_went_away() {
    let api = http_service("api", "10.96.0.11");
    let web_slice = web_a(&["10.244.0.1"]);
    let mut s = sync();
    listed(
        &mut s,
        vec![web("10.96.0.10"), api],
        vec![web_slice.clone()],
    );
    let tables = s.into_programmer().into_tables();
    let snapshot = tables.snapshot();
    let mut tables = tables;
    tables.take_writes();
    // "api" was deleted while the agent was down.
    let mut s = ServiceSync::new(Programmer::adopt(tables, snapshot), "n1");
    listed(&mut s, vec![web("10.96.0.10")], vec![web_slice]);
    let t = s.programmer().tables();
    assert_eq!(t.writes, 1, "only the removed service's frontend");
    assert_eq!(count(&s, &frontend([10, 96, 0, 10])), Some(1));
    assert_eq!(count(&s, &frontend([10, 96, 0, 11])), None);
    assert_eq!(s.progress().stats.frontends, 1);
}

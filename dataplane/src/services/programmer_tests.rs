use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::*;
use crate::services::memory::MemoryTables;

fn backend(i: u32) -> BackendAddr {
    let addr = Ipv4Addr::from(0x0af4_0000 + i); // 10.244.x.y
    BackendAddr::new(addr, 8080, abi::PROTO_TCP)
}

fn cluster_ip(svc: u32, backends: impl IntoIterator<Item = u32>) -> Frontend {
    let mut backends: Vec<BackendAddr> = backends.into_iter().map(backend).collect();
    backends.sort();
    Frontend {
        key: SvcKey::new(Ipv4Addr::from(0x0a60_0000 + svc), 80, abi::PROTO_TCP),
        flags: 0,
        affinity_timeout: 0,
        backends,
    }
}

fn node_port(port: u16, backends: impl IntoIterator<Item = u32>) -> Frontend {
    Frontend {
        key: SvcKey::new(Ipv4Addr::UNSPECIFIED, port, abi::PROTO_TCP),
        flags: abi::SVC_NODEPORT | abi::SVC_MAGLEV,
        ..cluster_ip(0, backends)
    }
}

fn svc(i: u32) -> ServiceKey {
    ServiceKey::new("default", format!("s{i}"))
}

/// The backends a reader of the maps finds for `key`, sorted.
fn programmed(t: &MemoryTables, key: &SvcKey) -> Option<Vec<BackendAddr>> {
    let value = t.svc.get(key)?;
    let mut out: Vec<BackendAddr> = (1..=u32::from(value.count))
        .map(|slot| {
            let s = t.slots[&SlotKey {
                svc_id: value.id,
                slot,
            }];
            let b = t.backends[&BackendKey { id: s.backend_id }];
            BackendAddr::new(b.ip(), b.host_port(), b.proto)
        })
        .collect();
    out.sort();
    Some(out)
}

fn assert_programmed(p: &Programmer<MemoryTables>, frontends: &[Frontend]) {
    let t = p.tables();
    assert_eq!(t.violations(), &[] as &[String]);
    for fe in frontends {
        assert_eq!(
            programmed(t, &fe.key).as_ref(),
            Some(&fe.backends),
            "{:?}",
            fe.key
        );
        let value = t.svc[&fe.key];
        assert_eq!(
            (value.flags, value.affinity_timeout),
            (fe.flags, fe.affinity_timeout)
        );
        if fe.flags & abi::SVC_MAGLEV != 0 && !fe.backends.is_empty() {
            let table = &t.maglev[&value.id];
            let mut ids: Vec<u32> = table.backend_ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), fe.backends.len(), "maglev covers every backend");
        }
    }
    // No leftovers: every slot belongs to a frontend's 1..=count, every backend is used.
    let slots: usize = t.svc.values().map(|v| usize::from(v.count)).sum();
    assert_eq!(t.slots.len(), slots, "stray slots");
    let used: HashSet<u32> = t.slots.values().map(|s| s.backend_id).collect();
    assert_eq!(t.backends.len(), used.len(), "stray backends");
    let maglev = t
        .svc
        .values()
        .filter(|v| v.flags & abi::SVC_MAGLEV != 0)
        .count();
    assert!(t.maglev.len() <= maglev, "stray maglev tables");
}

#[test]
fn target_slots_moves_the_last_slot_into_a_hole() {
    assert_eq!(target_slots(&[1, 2, 3, 4], &[1, 2, 4]), [1, 2, 4]);
    assert_eq!(target_slots(&[1, 2, 3, 4], &[1, 3, 4]), [1, 4, 3]);
    assert_eq!(
        target_slots(&[1, 2, 3, 4], &[1, 2, 3, 4, 5]),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(target_slots(&[1, 2, 3, 4], &[1, 5, 3, 4]), [1, 5, 3, 4]);
    assert_eq!(target_slots(&[1, 2, 3, 4, 5], &[3, 4]), [4, 3]);
    assert_eq!(target_slots(&[1, 2, 2, 3], &[1, 2, 3]), [1, 2, 3]);
    assert_eq!(target_slots(&[], &[7, 8]), [7, 8]);
    assert!(target_slots(&[1, 2], &[]).is_empty());
}

#[test]
fn a_new_service_is_programmed_and_removed_without_leftovers() {
    let mut p = Programmer::new(MemoryTables::checked());
    let fes = [cluster_ip(1, 1..=3), node_port(30001, 1..=3)];
    p.apply(&svc(1), &fes).expect("apply");
    assert_programmed(&p, &fes);
    assert_eq!(
        p.stats(),
        Stats {
            services: 1,
            frontends: 2,
            backends: 3
        }
    );
    p.remove(&svc(1)).expect("remove");
    let t = p.tables();
    assert!(t.svc.is_empty() && t.slots.is_empty() && t.backends.is_empty() && t.maglev.is_empty());
    assert_eq!(p.stats(), Stats::default());
    assert_eq!(t.violations(), &[] as &[String]);
}

#[test]
fn adding_one_endpoint_to_ten_is_at_most_three_writes() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, 1..=10)]).expect("apply");
    p.tables_mut().take_writes();
    let fes = [cluster_ip(1, 1..=11)];
    p.apply(&svc(1), &fes).expect("apply");
    assert!(p.tables().writes <= 3, "{} writes", p.tables().writes);
    assert_programmed(&p, &fes);
}

#[test]
fn removing_one_endpoint_of_ten_is_at_most_four_writes() {
    for gone in [1, 5, 10] {
        let mut p = Programmer::new(MemoryTables::checked());
        p.apply(&svc(1), &[cluster_ip(1, 1..=10)]).expect("apply");
        p.tables_mut().take_writes();
        let fes = [cluster_ip(1, (1..=10).filter(|i| *i != gone))];
        p.apply(&svc(1), &fes).expect("apply");
        assert!(
            p.tables().writes <= 4,
            "removing {gone}: {} writes",
            p.tables().writes
        );
        assert_programmed(&p, &fes);
    }
}

#[test]
fn replacing_an_endpoint_rewrites_its_slot_in_place() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, 1..=10)]).expect("apply");
    p.tables_mut().take_writes();
    let fes = [cluster_ip(1, (1..=9).chain([42]))];
    p.apply(&svc(1), &fes).expect("apply");
    // Insert backend 42, overwrite the slot, remove backend 10; the count does not change.
    assert_eq!(p.tables().writes, 3);
    assert_programmed(&p, &fes);
}

#[test]
fn unchanged_service_writes_nothing() {
    let mut p = Programmer::new(MemoryTables::checked());
    let fes = [cluster_ip(1, 1..=5), node_port(30000, 1..=5)];
    p.apply(&svc(1), &fes).expect("apply");
    p.tables_mut().take_writes();
    p.apply(&svc(1), &fes).expect("apply");
    assert_eq!(p.tables().writes, 0);
}

#[test]
fn a_frontend_without_endpoints_stays_with_count_zero() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, 1..=3), node_port(30000, 1..=3)])
        .expect("apply");
    let fes = [cluster_ip(1, []), node_port(30000, [])];
    p.apply(&svc(1), &fes).expect("apply");
    assert_programmed(&p, &fes);
    let t = p.tables();
    assert_eq!(t.svc.len(), 2);
    assert!(t.svc.values().all(|v| v.count == 0));
    assert!(t.backends.is_empty());
}

#[test]
fn a_backend_shared_by_two_services_stays_until_both_drop_it() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, [1, 2])]).expect("apply");
    p.apply(&svc(2), &[cluster_ip(2, [2, 3])]).expect("apply");
    assert_eq!(p.stats().backends, 3);
    p.remove(&svc(1)).expect("remove");
    assert_eq!(p.stats().backends, 2);
    assert_programmed(&p, &[cluster_ip(2, [2, 3])]);
}

#[test]
fn a_port_change_replaces_the_frontend() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, 1..=2)]).expect("apply");
    let mut moved = cluster_ip(1, 1..=2);
    moved.key = SvcKey::new(moved.key.ip(), 8443, abi::PROTO_TCP);
    p.apply(&svc(1), std::slice::from_ref(&moved))
        .expect("apply");
    assert_programmed(&p, std::slice::from_ref(&moved));
    assert_eq!(p.tables().svc.len(), 1);
    assert_eq!(p.stats().frontends, 1);
}

#[test]
fn a_contested_frontend_goes_to_its_first_owner_then_is_released() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, [1])]).expect("apply");
    p.apply(&svc(2), &[cluster_ip(1, [2])]).expect("apply");
    assert_programmed(&p, &[cluster_ip(1, [1])]);
    assert!(p.take_released().is_empty());
    p.remove(&svc(1)).expect("remove");
    assert_eq!(p.take_released(), [svc(2)]);
    p.apply(&svc(2), &[cluster_ip(1, [2])]).expect("apply");
    assert_programmed(&p, &[cluster_ip(1, [2])]);
}

#[test]
fn exhausted_ids_are_an_error_not_a_panic() {
    let mut p = Programmer::with_limits(MemoryTables::checked(), 1, 2);
    let err = p
        .apply(&svc(1), &[cluster_ip(1, 1..=3)])
        .expect_err("backend ids");
    assert!(
        matches!(
            err,
            ProgramError::IdsExhausted {
                kind: "backend",
                ..
            }
        ),
        "{err}"
    );
    p.apply(&svc(1), &[cluster_ip(1, 1..=2)]).expect("apply");
    let err = p
        .apply(&svc(2), &[cluster_ip(2, [])])
        .expect_err("frontend ids");
    assert!(
        matches!(
            err,
            ProgramError::IdsExhausted {
                kind: "frontend",
                ..
            }
        ),
        "{err}"
    );
    assert_programmed(&p, &[cluster_ip(1, 1..=2)]);
}

/// A deterministic walk through changes: services come and go, endpoints scale up and down,
/// NodePorts with Maglev, backends shared between services.
fn scenario() -> Vec<(ServiceKey, Vec<Frontend>)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n) as u32
    };
    let mut steps = Vec::new();
    for _ in 0..300 {
        let s = rand(6);
        let fes = if rand(8) == 0 {
            Vec::new()
        } else {
            let lo = rand(20);
            let n = rand(12);
            let backends: Vec<u32> = (lo..lo + n).filter(|_| rand(4) != 0).collect();
            let mut fes = vec![cluster_ip(s, backends.clone())];
            if s % 2 == 0 {
                fes.push(node_port(30000 + s as u16, backends));
            }
            fes
        };
        steps.push((svc(s), fes));
    }
    steps
}

#[test]
fn every_write_keeps_the_maps_consistent() {
    let mut p = Programmer::new(MemoryTables::checked());
    let mut current: HashMap<ServiceKey, Vec<Frontend>> = HashMap::new();
    for (key, fes) in scenario() {
        p.apply(&key, &fes).expect("apply");
        current.insert(key, fes);
        let all: Vec<Frontend> = current.values().flatten().cloned().collect();
        assert_programmed(&p, &all);
    }
    for key in current.keys() {
        p.remove(key).expect("remove");
    }
    let t = p.tables();
    assert!(t.svc.is_empty() && t.slots.is_empty() && t.backends.is_empty() && t.maglev.is_empty());
    assert_eq!(t.violations(), &[] as &[String]);
}

#[test]
fn a_failed_write_is_finished_by_the_next_apply() {
    let steps = scenario();
    // Fail each write number in turn somewhere in the scenario.
    for fail_at in (1..250).step_by(17) {
        let mut tables = MemoryTables::checked();
        tables.fail_at = Some(fail_at);
        let mut p = Programmer::new(tables);
        let mut current: HashMap<ServiceKey, Vec<Frontend>> = HashMap::new();
        for (key, fes) in steps.iter().take(40) {
            if p.apply(key, fes).is_err() {
                p.apply(key, fes).expect("retry");
            }
            current.insert(key.clone(), fes.clone());
        }
        let all: Vec<Frontend> = current.values().flatten().cloned().collect();
        assert_programmed(&p, &all);
    }
}

#[test]
fn adding_one_service_at_ten_thousand() {
    let mut p = Programmer::new(MemoryTables::default());
    let start = Instant::now();
    for i in 0..10_000u32 {
        let base = i * 3;
        p.apply(&svc(i), &[cluster_ip(i, base..base + 3)])
            .expect("apply");
    }
    let programmed = start.elapsed();
    let before = p.tables_mut().take_writes();
    let start = Instant::now();
    p.apply(&svc(10_000), &[cluster_ip(10_000, 40_000..40_003)])
        .expect("apply");
    let one = start.elapsed();
    eprintln!(
        "programmer: 10000 services in {programmed:?} ({before} writes); one more in {one:?} ({} writes)",
        p.tables().writes
    );
    assert_eq!(p.tables().writes, 3 + 3 + 1);
    assert_eq!(p.stats().frontends, 10_001);
}

fn scenario_end() -> Vec<(ServiceKey, Vec<Frontend>)> {
    let mut current: BTreeMap<ServiceKey, Vec<Frontend>> = BTreeMap::new();
    for (key, fes) in scenario() {
        current.insert(key, fes);
    }
    current.into_iter().collect()
}

#[test]
fn an_adopted_programmer_rewrites_only_maglev_tables() {
    let end = scenario_end();
    let mut p = Programmer::new(MemoryTables::default());
    for (key, fes) in scenario() {
        p.apply(&key, &fes).expect("apply");
    }
    let mut tables = p.into_tables();
    let ids: HashMap<SvcKey, u32> = tables.svc.iter().map(|(k, v)| (*k, v.id)).collect();
    let snapshot = tables.snapshot();
    tables.take_writes();
    tables.check = true;
    let mut p = Programmer::adopt(tables, snapshot);
    for (key, fes) in &end {
        p.apply(key, fes).expect("apply");
    }
    p.remove_unclaimed().expect("cleanup");
    let all: Vec<Frontend> = end.iter().flat_map(|(_, f)| f.clone()).collect();
    assert_programmed(&p, &all);
    let maglev = all
        .iter()
        .filter(|f| f.flags & abi::SVC_MAGLEV != 0 && !f.backends.is_empty())
        .count();
    assert_eq!(p.tables().writes, maglev as u64, "only the Maglev tables");
    let after: HashMap<SvcKey, u32> = p.tables().svc.iter().map(|(k, v)| (*k, v.id)).collect();
    assert_eq!(after, ids, "frontends keep their ids");
}

#[test]
fn unclaimed_adopted_frontends_are_removed() {
    let mut p = Programmer::new(MemoryTables::checked());
    p.apply(&svc(1), &[cluster_ip(1, 1..=3), node_port(30001, 1..=3)])
        .expect("apply");
    p.apply(&svc(2), &[cluster_ip(2, 3..=5)]).expect("apply");
    let tables = p.into_tables();
    let snapshot = tables.snapshot();
    let mut p = Programmer::adopt(tables, snapshot);
    assert_eq!(
        p.stats(),
        Stats {
            services: 0,
            frontends: 3,
            backends: 5
        }
    );
    p.apply(&svc(2), &[cluster_ip(2, 3..=6)]).expect("apply");
    p.remove_unclaimed().expect("cleanup");
    assert_programmed(&p, &[cluster_ip(2, 3..=6)]);
    assert_eq!(
        p.stats(),
        Stats {
            services: 1,
            frontends: 1,
            backends: 4
        }
    );
}

#[test]
fn adopting_damaged_maps_ends_clean() {
    let mut p = Programmer::new(MemoryTables::default());
    p.apply(&svc(1), &[cluster_ip(1, 1..=3)]).expect("apply");
    p.apply(&svc(2), &[cluster_ip(2, 4..=5), node_port(30002, 4..=5)])
        .expect("apply");
    let mut tables = p.into_tables();
    // What an interrupted agent could leave: a stray slot past the count, slots and a Maglev
    // table of a frontend that is gone, a backend no slot names, a second frontend sharing an
    // id, a frontend with id 0.
    let id1 = tables.svc[&cluster_ip(1, []).key].id;
    let b1 = tables.slots[&SlotKey {
        svc_id: id1,
        slot: 1,
    }];
    tables.slots.insert(
        SlotKey {
            svc_id: id1,
            slot: 5,
        },
        b1,
    );
    tables.slots.insert(
        SlotKey {
            svc_id: 999,
            slot: 1,
        },
        b1,
    );
    tables.maglev.insert(
        999,
        Box::new(MaglevValue {
            backend_ids: [0; abi::MAGLEV_SIZE],
        }),
    );
    tables
        .backends
        .insert(BackendKey { id: 777 }, backend(77).to_abi());
    let shared = tables.svc[&cluster_ip(1, []).key];
    tables
        .svc
        .insert(cluster_ip(3, []).key, SvcValue { count: 0, ..shared });
    tables.svc.insert(
        cluster_ip(4, []).key,
        SvcValue {
            id: 0,
            count: 0,
            ..shared
        },
    );
    // The damage breaks the invariants already (shared id, id 0): check only the outcome.
    let snapshot = tables.snapshot();
    let mut p = Programmer::adopt(tables, snapshot);
    let fes = [
        vec![cluster_ip(1, 1..=6)],
        vec![cluster_ip(3, [9])],
        vec![cluster_ip(4, [])],
    ];
    for (i, f) in fes.iter().enumerate() {
        p.apply(&svc(10 + i as u32), f).expect("apply");
    }
    p.remove_unclaimed().expect("cleanup");
    let all: Vec<Frontend> = fes.concat();
    assert_programmed(&p, &all);
    let t = p.tables();
    t.check_invariants().expect("consistent at the end");
    assert!(t.maglev.is_empty());
    assert_eq!(t.svc.len(), 3);
    let ids: HashSet<u32> = t.svc.values().map(|v| v.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&0));
}

#[test]
fn duplicate_backends_take_one_slot() {
    let mut p = Programmer::new(MemoryTables::checked());
    let mut fe = cluster_ip(1, [1, 2]);
    fe.backends.push(backend(1));
    p.apply(&svc(1), std::slice::from_ref(&fe)).expect("apply");
    assert_programmed(&p, &[cluster_ip(1, [1, 2])]);
}

//! OOM kills: a counter to compare around an exit, and an fd that wakes a poll loop on each one.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::fs;
use super::manager::{CgroupManager, Ctl};
use super::CgroupError;
use crate::qos::QosClass;

/// Readable when the cgroup's OOM state changed: v2 an inotify watch on memory.events (any
/// change; compare [`CgroupManager::oom_kills`]), v1 an eventfd registered for OOM through
/// cgroup.event_control. Non-blocking; call [`OomEvents::drain`] after it polls readable.
#[derive(Debug)]
pub struct OomEvents {
    kind: Kind,
    path: PathBuf,
}

#[derive(Debug)]
enum Kind {
    Inotify(Inotify),
    /// The kernel keeps the registration while the eventfd is open; the control file is held
    /// only so the registration's two ends live exactly as long as each other.
    EventFd {
        efd: EventFd,
        _control: File,
    },
}

impl AsFd for OomEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Inotify(i) => i.as_fd(),
            Kind::EventFd { efd, .. } => efd.as_fd(),
        }
    }
}

impl OomEvents {
    /// Consumes what is pending; returns how many notifications there were (0 if none).
    pub fn drain(&self) -> Result<u64, CgroupError> {
        let notify = |source| CgroupError::Notify {
            call: "read",
            path: self.path.clone(),
            source,
        };
        match &self.kind {
            Kind::Inotify(i) => {
                let mut n = 0;
                loop {
                    match i.read_events() {
                        Ok(events) if !events.is_empty() => n += events.len() as u64,
                        Ok(_) | Err(Errno::EAGAIN) => return Ok(n),
                        Err(e) => return Err(notify(e)),
                    }
                }
            }
            Kind::EventFd { efd, .. } => match efd.read() {
                Ok(n) => Ok(n),
                Err(Errno::EAGAIN) => Ok(0),
                Err(e) => Err(notify(e)),
            },
        }
    }
}

impl CgroupManager {
    /// OOM kills in a container's cgroup so far (v2 memory.events `oom_kill`, v1
    /// memory.oom_control `oom_kill`): the shim compares it around an exit to say OOMKilled.
    pub fn oom_kills(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
    ) -> Result<u64, CgroupError> {
        let rel = self.container_rel(qos, pod_uid, container_dir)?;
        match self.ctl("memory") {
            Some(Ctl::V1(root)) => {
                fs::keyed_u64(&root.join(rel).join("memory.oom_control"), "oom_kill")
            }
            Some(Ctl::V2(root)) => fs::keyed_u64(&root.join(rel).join("memory.events"), "oom_kill"),
            None => Err(CgroupError::ControllerUnavailable {
                controller: "memory",
            }),
        }
    }

    /// An fd that becomes readable on the container's OOM events, for poll-based loops.
    pub fn oom_events(
        &self,
        qos: QosClass,
        pod_uid: &str,
        container_dir: &str,
    ) -> Result<OomEvents, CgroupError> {
        let rel = self.container_rel(qos, pod_uid, container_dir)?;
        match self.ctl("memory") {
            Some(Ctl::V1(root)) => v1_events(&root.join(rel)),
            Some(Ctl::V2(root)) => v2_events(&root.join(rel).join("memory.events")),
            None => Err(CgroupError::ControllerUnavailable {
                controller: "memory",
            }),
        }
    }
}

fn v2_events(events: &Path) -> Result<OomEvents, CgroupError> {
    let err = |call, source| CgroupError::Notify {
        call,
        path: events.to_owned(),
        source,
    };
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| err("inotify_init1", e))?;
    inotify
        .add_watch(events, AddWatchFlags::IN_MODIFY)
        .map_err(|e| err("inotify_add_watch", e))?;
    Ok(OomEvents {
        kind: Kind::Inotify(inotify),
        path: events.to_owned(),
    })
}

fn v1_events(dir: &Path) -> Result<OomEvents, CgroupError> {
    let control_path = dir.join("memory.oom_control");
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|source| CgroupError::Notify {
            call: "eventfd",
            path: control_path.clone(),
            source,
        })?;
    let control = File::open(&control_path).map_err(|source| CgroupError::Read {
        path: control_path.clone(),
        source,
    })?;
    let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    fs::write(&dir.join("cgroup.event_control"), registration)?;
    Ok(OomEvents {
        kind: Kind::EventFd {
            efd,
            _control: control,
        },
        path: control_path,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    use super::*;
    use crate::cgroup::testutil::Fake;
    use crate::cgroup::{Mode, Resources};

    fn readable(events: &OomEvents, timeout_ms: u16) -> bool {
        let mut fds = [PollFd::new(events.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(timeout_ms)).unwrap() == 1
    }

    #[test]
    fn v2_counter_and_inotify() {
        let f = Fake::new(Mode::V2, "cpu memory pids");
        f.mgr
            .ensure_container(QosClass::Burstable, "u", "c", &Resources::default())
            .unwrap();
        let events_file = f.path("unified/berth/kubepods/burstable/podu/c/memory.events");
        std::fs::write(&events_file, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        assert_eq!(f.mgr.oom_kills(QosClass::Burstable, "u", "c").unwrap(), 0);
        let events = f.mgr.oom_events(QosClass::Burstable, "u", "c").unwrap();
        assert!(!readable(&events, 0));
        assert_eq!(events.drain().unwrap(), 0);
        std::fs::write(&events_file, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(readable(&events, 5000));
        assert!(events.drain().unwrap() >= 1);
        assert!(!readable(&events, 0));
        assert_eq!(f.mgr.oom_kills(QosClass::Burstable, "u", "c").unwrap(), 1);
    }

    #[test]
    fn v1_counter_and_registration() {
        let f = Fake::new(Mode::V1, "");
        f.mgr
            .ensure_container(QosClass::Burstable, "u", "c", &Resources::default())
            .unwrap();
        let dir = f.path("memory/berth/kubepods/burstable/podu/c");
        std::fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        assert_eq!(f.mgr.oom_kills(QosClass::Burstable, "u", "c").unwrap(), 3);
        let events = f.mgr.oom_events(QosClass::Burstable, "u", "c").unwrap();
        let registration = f.read("memory/berth/kubepods/burstable/podu/c/cgroup.event_control");
        let fds: Vec<i32> = registration
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(fds.len(), 2);
        assert_eq!(fds[0], events.as_fd().as_raw_fd());
        assert_eq!(events.drain().unwrap(), 0);
    }

    #[test]
    fn no_memory_controller() {
        let f = Fake::new(Mode::V2, "pids");
        f.mgr
            .ensure_container(QosClass::Burstable, "u", "c", &Resources::default())
            .unwrap();
        assert!(matches!(
            f.mgr.oom_kills(QosClass::Burstable, "u", "c"),
            Err(CgroupError::ControllerUnavailable {
                controller: "memory"
            })
        ));
        assert!(f.mgr.oom_events(QosClass::Burstable, "u", "c").is_err());
    }
}

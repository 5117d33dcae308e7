//! Berth's scenario benchmark runners (`berth bench ...`): they drive real components and print
//! HDR-histogram percentiles with ratios against a baseline measured in the same run.
#![deny(unsafe_code)]

pub mod apiserver;
pub mod dataplane;
pub mod nodesim;
pub mod podstartup;
pub mod schedbench;
#[allow(unsafe_code)]
mod sys;

/// A short random tag for the names a runner gives what it makes (namespaces, cgroups,
/// directories), from the clock and the pid.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:04x}", std::process::id() & 0xfff, nanos & 0xffff)
}

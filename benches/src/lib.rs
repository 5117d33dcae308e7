//! Berth's scenario benchmark runners (`berth bench ...`): they drive real components and print
//! HDR-histogram percentiles with ratios against a baseline measured in the same run.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod dataplane;
pub mod nodesim;
pub mod podstartup;
pub mod schedbench;

//! placeholder
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use crate::runtime::{Informer, Runner, WorkQueue};
pub struct StatefulSets;
impl StatefulSets {
    pub fn register(_r: &mut Runner, _c: Client, _p: &mut Informer<Pod>, _q: WorkQueue<String>, _b: bool) {}
}

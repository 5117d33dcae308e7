//! Promises to aya that the BPF ABI structs may be copied to and from
//! the kernel as plain bytes.

use aya::Pod;

use crate::abi::{
    AffinityKey, AffinityValue, Backend, BackendKey, CtKey, CtValue, MaglevValue, NodeAddrKey,
    NodeAddrValue, SkRevnatKey, SkRevnatValue, SlotKey, SlotValue, SvcKey, SvcValue,
};

/// Implements `Pod` for structs that mirror `bpf/include/berth_abi.h`.
macro_rules! abi_pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            // SAFETY: the type is #[repr(C)], `Copy`, made only of integers (and arrays of
            // them) with explicit padding fields, so every byte is initialised and every bit
            // pattern the kernel hands back is a valid value (abi.rs tests pin the layout).
            unsafe impl Pod for $ty {}
        )+
    };
}

abi_pod!(
    SvcKey,
    SvcValue,
    SlotKey,
    SlotValue,
    BackendKey,
    Backend,
    MaglevValue,
    AffinityKey,
    AffinityValue,
    SkRevnatKey,
    SkRevnatValue,
    CtKey,
    CtValue,
    NodeAddrKey,
    NodeAddrValue,
);

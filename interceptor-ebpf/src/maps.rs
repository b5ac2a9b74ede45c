//! Every map of the kernel programs, in one place. All are pinned by name so that a restarted
//! daemon finds the same protected set, exemptions and settings, and the program attached by the
//! previous daemon keeps working (and keeps failing closed) in between.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, SockMap},
};
use interceptor_common::{
    DestKey, EVENTS_BYTES, ExemptKey, LISTENER_SLOTS, MAX_EXEMPT, MAX_PROTECTED, SETTINGS_SLOTS,
    counter,
};

/// Protected destinations (value unused).
#[map(name = "PROTECTED")]
pub static PROTECTED: HashMap<DestKey, u8> = HashMap::pinned(MAX_PROTECTED, 0);

/// Exact 4-tuples of the daemon's live upstream connections (value unused).
#[map(name = "EXEMPT")]
pub static EXEMPT: HashMap<ExemptKey, u8> = HashMap::pinned(MAX_EXEMPT, 0);

/// The daemon's listening sockets, one per address family.
#[map(name = "LISTENERS")]
pub static LISTENERS: SockMap = SockMap::pinned(LISTENER_SLOTS, 0);

/// Settings written by the daemon (flags word).
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<u32> = Array::pinned(SETTINGS_SLOTS, 0);

/// Per-CPU decision counters.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::SLOTS, 0);

/// Decisions for userspace to log and audit.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

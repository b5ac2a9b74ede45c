//! Types shared by the kernel programs (`interceptor-ebpf`) and the daemon (`interceptor`).
//!
//! Every type here is `#[repr(C)]`, has no padding and is `Copy`, because the same bytes are
//! read by the BPF verifier-checked programs and by userspace through the map syscalls.
//!
//! Addresses are stored as four `u32` words holding the address bytes in network order, exactly
//! as `struct bpf_sk_lookup` presents `local_ip6`/`remote_ip6` (and `local_ip4` in word 0), so the
//! kernel side copies them without any byte swapping. Ports are in host order.
#![no_std]

/// `AF_INET` as the kernel reports it in `bpf_sk_lookup.family`.
pub const AF_INET: u32 = 2;
/// `AF_INET6` as the kernel reports it in `bpf_sk_lookup.family`.
pub const AF_INET6: u32 = 10;

/// Names of the maps and programs, also their pin names under the pin directory.
pub mod names {
    pub const PROTECTED: &str = "PROTECTED";
    pub const EXEMPT: &str = "EXEMPT";
    pub const LISTENERS: &str = "LISTENERS";
    pub const SETTINGS: &str = "SETTINGS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const STEER_PROGRAM: &str = "steer";
    /// Pin name of the netns link that attaches the steering program.
    pub const STEER_LINK: &str = "steer_link";
}

/// Capacity of the `PROTECTED` map (protected listener addresses).
pub const MAX_PROTECTED: u32 = 1024;
/// Capacity of the `EXEMPT` map: one entry per live upstream connection of the daemon.
pub const MAX_EXEMPT: u32 = 65_536;
/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Keys of the `LISTENERS` sockmap: the daemon's listening socket for each family.
pub const LISTENER_V4: u32 = 0;
pub const LISTENER_V6: u32 = 1;
pub const LISTENER_SLOTS: u32 = 2;

/// Index of the flags word in the `SETTINGS` array.
pub const SETTINGS_FLAGS: u32 = 0;
pub const SETTINGS_SLOTS: u32 = 1;
/// Flag bit: while no listener is present, pass protected flows to the broker instead of
/// dropping them.
pub const FLAG_FAIL_OPEN: u32 = 1;

/// A protected destination: (family, address, port). An all-zero address protects the port on
/// every local address of that family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub family: u32,
    pub port: u32,
    pub addr: [u32; 4],
}

/// The exact 4-tuple of one of the daemon's own upstream connections, as seen by the receiving
/// side: `src` is the daemon's bound socket, `dst` the broker.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExemptKey {
    pub family: u32,
    pub src_port: u32,
    pub dst_port: u32,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
}

/// What the steering program did with one new connection.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Assigned to the daemon's listener.
    Steered = 1,
    /// Protected, no listener present, fail closed: dropped.
    DroppedNoListener = 2,
    /// Protected, no listener present, fail open: passed to the broker unchecked.
    PassedFailOpen = 3,
    /// The kernel refused the assignment (for example a listener of the wrong family): dropped.
    AssignFailed = 4,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Steered),
            2 => Some(Self::DroppedNoListener),
            3 => Some(Self::PassedFailOpen),
            4 => Some(Self::AssignFailed),
            _ => None,
        }
    }
}

/// One record on the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub family: u32,
    pub src_port: u32,
    pub dst_port: u32,
    pub src_addr: [u32; 4],
    pub dst_addr: [u32; 4],
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    pub const STEERED: u32 = 0;
    pub const DROPPED_NO_LISTENER: u32 = 1;
    pub const PASSED_FAIL_OPEN: u32 = 2;
    pub const EXEMPT_PASSED: u32 = 3;
    pub const ASSIGN_FAILED: u32 = 4;
    /// Events that did not fit in the ring buffer (the counters above still count them).
    pub const EVENTS_LOST: u32 = 5;
    pub const SLOTS: u32 = 6;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and made only of u32 fields with no padding.
    unsafe impl aya::Pod for super::DestKey {}
    unsafe impl aya::Pod for super::ExemptKey {}
    unsafe impl aya::Pod for super::Event {}
}

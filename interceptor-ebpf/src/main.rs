//! Kernel side of the interceptor.
//!
//! `steer` is an `sk_lookup` program attached to a network namespace. For every new TCP
//! connection whose destination is protected it picks the daemon's listening socket instead of
//! the broker's, so the accepted socket keeps the original destination as its local address.
//! The only flows that reach the broker directly are the daemon's own upstream connections,
//! listed by exact 4-tuple in `EXEMPT`. With no listener present (daemon down) protected flows
//! are dropped, unless the fail-open flag is set.
#![no_std]
#![no_main]

mod maps;

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_map_lookup_elem, bpf_sk_release},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use interceptor_common::{
    AF_INET, AF_INET6, DestKey, Event, EventKind, ExemptKey, FLAG_FAIL_OPEN, LISTENER_V4,
    LISTENER_V6, SETTINGS_FLAGS, counter,
};
use maps::{COUNTERS, EVENTS, EXEMPT, LISTENERS, PROTECTED, SETTINGS};

const SK_DROP: u32 = 0;
const SK_PASS: u32 = 1;
const IPPROTO_TCP: u32 = 6;

#[sk_lookup]
pub fn steer(ctx: SkLookupContext) -> u32 {
    try_steer(&ctx)
}

/// The four-tuple of the connection being looked up, in the shared key layout.
struct Flow {
    family: u32,
    src_port: u32,
    dst_port: u32,
    src_addr: [u32; 4],
    dst_addr: [u32; 4],
}

fn try_steer(ctx: &SkLookupContext) -> u32 {
    // SAFETY: the kernel hands every sk_lookup program a valid, readable context.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    let family = lookup.family;
    let (src_addr, dst_addr) = match family {
        AF_INET => ([lookup.remote_ip4, 0, 0, 0], [lookup.local_ip4, 0, 0, 0]),
        AF_INET6 => (lookup.remote_ip6, lookup.local_ip6),
        _ => return SK_PASS,
    };
    let flow = Flow {
        family,
        src_port: u16::from_be(lookup.remote_port) as u32,
        dst_port: lookup.local_port,
        src_addr,
        dst_addr,
    };
    if !is_protected(&flow) {
        return SK_PASS;
    }
    let slot = if family == AF_INET {
        LISTENER_V4
    } else {
        LISTENER_V6
    };
    // An exemption counts only while the daemon is alive (its listener is present): after a
    // crash the 4-tuples of its closed upstream sockets could be bound by anyone, so they must
    // not open a way around the checks until the next daemon has cleared them.
    if is_exempt(&flow) && (listener_present(LISTENER_V4) || listener_present(LISTENER_V6)) {
        count(counter::EXEMPT_PASSED);
        return SK_PASS;
    }
    match LISTENERS.redirect_sk_lookup(ctx, slot, 0) {
        Ok(()) => {
            count(counter::STEERED);
            emit(EventKind::Steered, &flow);
            SK_PASS
        }
        Err(err) if err == -ENOENT => no_listener(&flow),
        Err(_) => {
            // A listener that the kernel will not take (wrong family, not listening): the
            // flow must not go around the daemon, so it is dropped.
            count(counter::ASSIGN_FAILED);
            emit(EventKind::AssignFailed, &flow);
            SK_DROP
        }
    }
}

const ENOENT: i32 = 2;

fn is_protected(flow: &Flow) -> bool {
    let exact = DestKey {
        family: flow.family,
        port: flow.dst_port,
        addr: flow.dst_addr,
    };
    // SAFETY: the value is a plain u8 read once; the map is never resized.
    if unsafe { PROTECTED.get(&exact) }.is_some() {
        return true;
    }
    let any_addr = DestKey {
        family: flow.family,
        port: flow.dst_port,
        addr: [0; 4],
    };
    // SAFETY: as above.
    unsafe { PROTECTED.get(&any_addr) }.is_some()
}

fn is_exempt(flow: &Flow) -> bool {
    let key = ExemptKey {
        family: flow.family,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        src_addr: flow.src_addr,
        dst_addr: flow.dst_addr,
    };
    // SAFETY: the value is a plain u8 read once.
    unsafe { EXEMPT.get(&key) }.is_some()
}

fn listener_present(slot: u32) -> bool {
    let map = core::ptr::from_ref(&LISTENERS).cast_mut().cast::<c_void>();
    // SAFETY: a sockmap lookup from sk_lookup returns a referenced socket or null; the
    // reference is released at once, only its presence matters.
    unsafe {
        let sk = bpf_map_lookup_elem(map, core::ptr::from_ref(&slot).cast::<c_void>());
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk);
    }
    true
}

fn no_listener(flow: &Flow) -> u32 {
    let flags = SETTINGS.get(SETTINGS_FLAGS).copied().unwrap_or(0);
    if flags & FLAG_FAIL_OPEN != 0 {
        count(counter::PASSED_FAIL_OPEN);
        emit(EventKind::PassedFailOpen, flow);
        SK_PASS
    } else {
        count(counter::DROPPED_NO_LISTENER);
        emit(EventKind::DroppedNoListener, flow);
        SK_DROP
    }
}

fn count(index: u32) {
    // Per-CPU slots: no atomics on the bpf target, and no contention either.
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map lookup and is this CPU's own slot.
        unsafe { *slot += 1 };
    }
}

fn emit(kind: EventKind, flow: &Flow) {
    let event = Event {
        kind: kind as u32,
        family: flow.family,
        src_port: flow.src_port,
        dst_port: flow.dst_port,
        src_addr: flow.src_addr,
        dst_addr: flow.dst_addr,
    };
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count(counter::EVENTS_LOST);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

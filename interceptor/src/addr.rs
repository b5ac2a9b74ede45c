//! Address newtypes, so a client address is never passed where an original destination is
//! meant, and conversions to the kernel maps' key layout.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use interceptor_common::{DestKey, ExemptKey, AF_INET, AF_INET6};

/// The address a client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The address a client connected to (the protected broker address), as the accepted socket's
/// local address shows it after sk_lookup steering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for OrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Undoes IPv4-mapped IPv6 (`::ffff:a.b.c.d`) so a flow is named by the family it really has.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn family(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// The address as the kernel lays it out: the bytes in network order, IPv4 in the first word.
pub fn to_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [word(0), word(4), word(8), word(12)]
        }
    }
}

pub fn from_words(family: u32, words: [u32; 4]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        AF_INET6 => {
            let mut o = [0u8; 16];
            for (chunk, word) in o.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

pub fn dest_key(addr: SocketAddr) -> DestKey {
    DestKey {
        family: family(addr.ip()),
        port: u32::from(addr.port()),
        addr: to_words(addr.ip()),
    }
}

/// The key of an upstream connection from `src` to `dst`, as the receiving side sees it.
pub fn exempt_key(src: SocketAddr, dst: SocketAddr) -> ExemptKey {
    ExemptKey {
        family: family(dst.ip()),
        src_port: u32::from(src.port()),
        dst_port: u32::from(dst.port()),
        src_addr: to_words(src.ip()),
        dst_addr: to_words(dst.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_words_keep_network_order_in_memory() {
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let words = to_words(ip);
        // The kernel's local_ip4 holds the bytes 127,0,0,2 in memory order.
        assert_eq!(words[0].to_ne_bytes(), [127, 0, 0, 2]);
        assert_eq!(from_words(AF_INET, words), Some(ip));
    }

    #[test]
    fn ipv6_round_trips() {
        for text in ["::1", "fe80::1:2:3:4", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(from_words(AF_INET6, to_words(ip)), Some(ip));
        }
        assert_eq!(from_words(99, [0; 4]), None);
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9092".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:9092".parse().unwrap());
        let v6: SocketAddr = "[::1]:9092".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn exempt_key_names_both_ends_exactly() {
        let key = exempt_key(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:9092".parse().unwrap(),
        );
        assert_eq!(key.family, AF_INET);
        assert_eq!((key.src_port, key.dst_port), (40000, 9092));
        assert_eq!(key.src_addr, key.dst_addr);
    }
}

//! Codec tests: hand-written packets of both versions (a comment per field), framing at every
//! cut, each malformed case with its reason code, and a seeded generator for round trips and
//! mutations.

use bytes::{Bytes, BytesMut};

use super::*;

const LIMITS: Limits = Limits {
    max_packet_bytes: 64 * 1024,
    max_topic_bytes: 256,
};

fn raw(bytes: &[u8]) -> RawPacket {
    let mut buf = BytesMut::from(bytes);
    let raw = split_packet(&mut buf, &LIMITS)
        .expect("frames")
        .expect("whole");
    assert!(buf.is_empty(), "bytes left after one packet");
    raw
}

fn decoded(bytes: &[u8], version: Version) -> Packet {
    decode(&raw(bytes), version, &LIMITS).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"))
}

fn encoded(p: &Packet, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(version, &mut out);
    out.to_vec()
}

/// Decodes, checks, and encodes back to the same bytes.
fn round_trip(bytes: &[u8], version: Version) -> Packet {
    let p = decoded(bytes, version);
    assert_eq!(encoded(&p, version), bytes, "{p:?}");
    p
}

fn error_of(bytes: &[u8], version: Version) -> DecodeError {
    match decode(&raw(bytes), version, &LIMITS) {
        Ok(p) => panic!("decoded {p:?} from {bytes:02x?}"),
        Err(e) => e,
    }
}

#[rustfmt::skip]
const CONNECT_V5: &[u8] = &[
    0x10, 0x35,                         // CONNECT, remaining length 53
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05,                               // level 5
    0xee,                               // username, password, will retain, will QoS 1, will, clean start
    0x00, 0x3c,                         // keep alive 60
    0x05,                               // properties: 5 bytes
    0x11, 0x00, 0x00, 0x01, 0x2c,       //   session expiry interval 300
    0x00, 0x02, b'c', b'1',             // client id "c1"
    0x05,                               // will properties: 5 bytes
    0x18, 0x00, 0x00, 0x00, 0x0a,       //   will delay interval 10
    0x00, 0x05, b'w', b'/', b'b', b'y', b'e', // will topic "w/bye"
    0x00, 0x04, b'g', b'o', b'n', b'e', // will payload "gone"
    0x00, 0x05, b'a', b'l', b'i', b'c', b'e', // username "alice"
    0x00, 0x05, b'e', b'y', b'J', b'.', b'.', // password (a token)
];

#[rustfmt::skip]
const CONNECT_V3: &[u8] = &[
    0x10, 0x19,                         // CONNECT, remaining length 25
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04,                               // level 4 (3.1.1)
    0xc2,                               // username, password, clean session
    0x00, 0x1e,                         // keep alive 30
    0x00, 0x03, b'd', b'e', b'v',       // client id "dev"
    0x00, 0x02, b'u', b'1',             // username "u1"
    0x00, 0x04, b'p', b'a', b's', b's', // password "pass"
];

#[test]
fn connects_of_both_versions_decode_and_encode_back() {
    let c = decode_connect(&raw(CONNECT_V5), &LIMITS).unwrap();
    assert_eq!(c.version, Version::V5);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "c1");
    assert_eq!(
        c.properties.u32_of(PropertyId::SessionExpiryInterval),
        Some(300)
    );
    let will = c.will.as_ref().unwrap();
    assert_eq!(
        (
            will.topic.as_str(),
            &will.payload[..],
            will.qos,
            will.retain
        ),
        ("w/bye", &b"gone"[..], QoS::AtLeastOnce, true)
    );
    assert_eq!(
        will.properties.u32_of(PropertyId::WillDelayInterval),
        Some(10)
    );
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password.as_deref(), Some(&b"eyJ.."[..]));
    assert_eq!(
        encoded(&Packet::Connect(c.clone()), Version::V5),
        CONNECT_V5
    );

    let c3 = decode_connect(&raw(CONNECT_V3), &LIMITS).unwrap();
    assert_eq!(c3.version, Version::V311);
    assert_eq!((c3.client_id.as_str(), c3.keep_alive), ("dev", 30));
    assert!(c3.will.is_none() && c3.properties.is_empty());
    assert_eq!(encoded(&Packet::Connect(c3), Version::V311), CONNECT_V3);
}

#[test]
fn payloads_and_passwords_are_slices_of_the_packet() {
    let r = raw(CONNECT_V5);
    let c = decode_connect(&r, &LIMITS).unwrap();
    let frame = r.frame.as_ptr() as usize..r.frame.as_ptr() as usize + r.frame.len();
    assert!(frame.contains(&(c.password.unwrap().as_ptr() as usize)));
    #[rustfmt::skip]
    let publish = [
        0x32, 0x0a,             // PUBLISH QoS 1, remaining length 10
        0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
        0x00, 0x07,             // packet id 7
        b'h', b'i', b'!',       // payload
    ];
    let r = raw(&publish);
    let Packet::Publish(p) = decode(&r, Version::V311, &LIMITS).unwrap() else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"hi!");
    assert_eq!(p.payload.as_ptr(), r.frame[9..].as_ptr());
}

#[test]
fn every_packet_of_both_versions_round_trips() {
    // v3.1.1
    round_trip(&[0x20, 0x02, 0x01, 0x00], Version::V311); // CONNACK, session present
    round_trip(&[0x30, 0x05, 0x00, 0x01, b't', b'x', b'y'], Version::V311); // PUBLISH QoS 0
    round_trip(
        &[0x3d, 0x07, 0x00, 0x01, b't', 0x00, 0x09, b'x', b'y'],
        Version::V311,
    ); // QoS 2, dup, retain
    round_trip(&[0x40, 0x02, 0x00, 0x09], Version::V311); // PUBACK 9
    round_trip(&[0x50, 0x02, 0x00, 0x09], Version::V311); // PUBREC
    round_trip(&[0x62, 0x02, 0x00, 0x09], Version::V311); // PUBREL (flags 0010)
    round_trip(&[0x70, 0x02, 0x00, 0x09], Version::V311); // PUBCOMP
    round_trip(
        &[0x82, 0x08, 0x00, 0x05, 0x00, 0x03, b'a', b'/', b'#', 0x01],
        Version::V311,
    ); // SUBSCRIBE
    round_trip(&[0x90, 0x04, 0x00, 0x05, 0x01, 0x80], Version::V311); // SUBACK
    round_trip(
        &[0xa2, 0x07, 0x00, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
        Version::V311,
    ); // UNSUBSCRIBE
    round_trip(&[0xb0, 0x02, 0x00, 0x05], Version::V311); // UNSUBACK
    round_trip(&[0xc0, 0x00], Version::V311); // PINGREQ
    round_trip(&[0xd0, 0x00], Version::V311); // PINGRESP
    round_trip(&[0xe0, 0x00], Version::V311); // DISCONNECT

    // v5
    #[rustfmt::skip]
    let connack = [
        0x20, 0x0a,             // CONNACK, remaining length 10
        0x00, 0x00,             // no session, success
        0x07,                   // properties: 7 bytes
        0x22, 0x00, 0x0a,       //   topic alias maximum 10
        0x12, 0x00, 0x01, b'x', //   assigned client id "x"
    ];
    let Packet::ConnAck(c) = round_trip(&connack, Version::V5) else {
        panic!()
    };
    assert_eq!(c.properties.u16_of(PropertyId::TopicAliasMaximum), Some(10));
    #[rustfmt::skip]
    let publish = [
        0x32, 0x10,             // PUBLISH QoS 1, remaining length 16
        0x00, 0x00,             // empty topic: the alias stands in
        0x00, 0x02,             // packet id 2
        0x0a,                   // properties: 10 bytes
        0x23, 0x00, 0x03,       //   topic alias 3
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        b'p',                   // payload
    ];
    let Packet::Publish(p) = round_trip(&publish, Version::V5) else {
        panic!()
    };
    assert_eq!((p.topic.as_str(), p.packet_id), ("", Some(2)));
    round_trip(&[0x40, 0x02, 0x00, 0x09], Version::V5); // PUBACK, short form
    round_trip(&[0x40, 0x03, 0x00, 0x09, 0x87], Version::V5); // PUBACK not authorized
                                                              // PUBREC 0x10 with a reason string "r".
    round_trip(
        &[0x50, 0x08, 0x00, 0x09, 0x10, 0x04, 0x1f, 0x00, 0x01, b'r'],
        Version::V5,
    );
    round_trip(&[0x62, 0x02, 0x00, 0x09], Version::V5); // PUBREL
    round_trip(&[0x70, 0x03, 0x00, 0x09, 0x92], Version::V5); // PUBCOMP id not found
    #[rustfmt::skip]
    let subscribe = [
        0x82, 0x0b,             // SUBSCRIBE, remaining length 11
        0x00, 0x05,             // packet id 5
        0x02, 0x0b, 0x07,       // properties: subscription identifier 7
        0x00, 0x03, b'a', b'/', b'+', // filter "a/+"
        0x2e,                   // retain handling 2, retain as published, no local, QoS 2
    ];
    let Packet::Subscribe(s) = round_trip(&subscribe, Version::V5) else {
        panic!()
    };
    let o = s.filters[0].1;
    assert_eq!(
        (o.qos, o.no_local, o.retain_as_published, o.retain_handling),
        (QoS::ExactlyOnce, true, true, 2)
    );
    round_trip(&[0x90, 0x05, 0x00, 0x05, 0x00, 0x02, 0x87], Version::V5); // SUBACK
    round_trip(
        &[0xa2, 0x06, 0x00, 0x05, 0x00, 0x00, 0x01, b'a'],
        Version::V5,
    ); // UNSUBSCRIBE
    round_trip(&[0xb0, 0x04, 0x00, 0x05, 0x00, 0x11], Version::V5); // UNSUBACK no subscription
    round_trip(&[0xe0, 0x00], Version::V5); // DISCONNECT, short form
    round_trip(&[0xe0, 0x01, 0x04], Version::V5); // DISCONNECT with will
    round_trip(
        &[0xe0, 0x06, 0x8e, 0x04, 0x1f, 0x00, 0x01, b'x'],
        Version::V5,
    ); // taken over
    round_trip(&[0xf0, 0x00], Version::V5); // AUTH success
    round_trip(
        &[0xf0, 0x08, 0x18, 0x06, 0x15, 0x00, 0x03, b'J', b'W', b'T'],
        Version::V5,
    ); // AUTH continue
}

#[test]
fn split_waits_for_whole_packets_and_refuses_what_cannot_be_one() {
    // Incomplete at every cut point.
    for cut in 0..CONNECT_V5.len() {
        let mut buf = BytesMut::from(&CONNECT_V5[..cut]);
        assert_eq!(split_packet(&mut buf, &LIMITS), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
    // Two packets in one buffer.
    let mut buf = BytesMut::from(&[0xc0, 0x00, 0xd0, 0x00][..]);
    assert_eq!(
        split_packet(&mut buf, &LIMITS)
            .unwrap()
            .unwrap()
            .packet_type,
        PacketType::PingReq
    );
    assert_eq!(
        split_packet(&mut buf, &LIMITS)
            .unwrap()
            .unwrap()
            .packet_type,
        PacketType::PingResp
    );
    assert_eq!(split_packet(&mut buf, &LIMITS), Ok(None));
    // A five-byte remaining length.
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
    assert_eq!(split_packet(&mut buf, &LIMITS), Err(FrameError::BadLength));
    // Over the limit: refused on the length alone.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x04][..]);
    let e = split_packet(&mut buf, &LIMITS).unwrap_err();
    assert_eq!(
        e,
        FrameError::TooLarge {
            size: 65_540,
            max: 65_536
        }
    );
    assert_eq!(e.reason_code(), reason::PACKET_TOO_LARGE);
    // Type 0.
    let mut buf = BytesMut::from(&[0x00, 0x00][..]);
    assert_eq!(
        split_packet(&mut buf, &LIMITS),
        Err(FrameError::ReservedType)
    );
    // A non-minimal length is accepted on decode.
    let r = raw(&[0xc0, 0x80, 0x00]);
    assert_eq!(decode(&r, Version::V311, &LIMITS), Ok(Packet::PingReq));
}

#[test]
fn malformed_packets_are_refused_with_their_reason_codes() {
    use reason::*;
    let v3 = Version::V311;
    let v5 = Version::V5;
    let cases: &[(&[u8], Version, u8)] = &[
        // PUBLISH QoS 3.
        (
            &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
            v3,
            MALFORMED_PACKET,
        ),
        // DUP on QoS 0.
        (&[0x38, 0x03, 0x00, 0x01, b't'], v3, MALFORMED_PACKET),
        // A wildcard in a topic name.
        (&[0x30, 0x03, 0x00, 0x01, b'#'], v3, TOPIC_NAME_INVALID),
        // Empty topic without an alias.
        (&[0x30, 0x03, 0x00, 0x00, 0x00], v5, PROTOCOL_ERROR),
        (&[0x30, 0x02, 0x00, 0x00], v3, PROTOCOL_ERROR),
        // Packet id 0.
        (
            &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
            v3,
            PROTOCOL_ERROR,
        ),
        // Topic bytes past the end.
        (&[0x30, 0x03, 0x00, 0x09, b't'], v3, MALFORMED_PACKET),
        // Invalid UTF-8 and U+0000 in a topic.
        (&[0x30, 0x03, 0x00, 0x01, 0xff], v3, MALFORMED_PACKET),
        (&[0x30, 0x03, 0x00, 0x01, 0x00], v3, MALFORMED_PACKET),
        // PUBREL with flags 0000, SUBSCRIBE with 0000.
        (&[0x60, 0x02, 0x00, 0x01], v3, MALFORMED_PACKET),
        (
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            v3,
            MALFORMED_PACKET,
        ),
        // SUBSCRIBE without filters, with QoS 3, with reserved bits (3.1.1), retain handling 3.
        (&[0x82, 0x02, 0x00, 0x01], v3, PROTOCOL_ERROR),
        (
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
            v3,
            MALFORMED_PACKET,
        ),
        (
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
            v3,
            MALFORMED_PACKET,
        ),
        (
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
            v5,
            MALFORMED_PACKET,
        ),
        // An empty filter.
        (
            &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            v3,
            MALFORMED_PACKET,
        ),
        // UNSUBSCRIBE without filters.
        (&[0xa2, 0x02, 0x00, 0x01], v3, PROTOCOL_ERROR),
        // Trailing bytes: PINGREQ with a body, 3.1.1 PUBACK with a reason, DISCONNECT 3.1.1.
        (&[0xc0, 0x01, 0x00], v3, MALFORMED_PACKET),
        (&[0x40, 0x03, 0x00, 0x01, 0x00], v3, MALFORMED_PACKET),
        (&[0xe0, 0x01, 0x00], v3, MALFORMED_PACKET),
        // AUTH in 3.1.1.
        (&[0xf0, 0x00], v3, PROTOCOL_ERROR),
        // 3.1.1 SUBACK code 3.
        (&[0x90, 0x03, 0x00, 0x01, 0x03], v3, MALFORMED_PACKET),
        // CONNACK with reserved flags.
        (&[0x20, 0x02, 0x02, 0x00], v3, MALFORMED_PACKET),
        // Properties: not allowed in the packet, repeated, longer than the packet, zero
        // where zero is an error, cut short, unknown.
        (
            &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            v5,
            PROTOCOL_ERROR,
        ),
        (
            &[0x30, 0x08, 0x00, 0x01, b't', 0x04, 0x01, 0x00, 0x01, 0x01],
            v5,
            PROTOCOL_ERROR,
        ),
        (
            &[0x30, 0x06, 0x00, 0x01, b't', 0x09, 0x01, 0x00],
            v5,
            MALFORMED_PACKET,
        ),
        (
            &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x00, b'p'],
            v5,
            PROTOCOL_ERROR,
        ),
        (
            &[0x82, 0x08, 0x00, 0x01, 0x01, 0x0b, 0x00, 0x01, b'a', 0x00],
            v5,
            MALFORMED_PACKET,
        ),
        (
            &[
                0x82, 0x09, 0x00, 0x01, 0x02, 0x0b, 0x00, 0x00, 0x01, b'a', 0x00,
            ],
            v5,
            PROTOCOL_ERROR,
        ),
        (&[0xe0, 0x03, 0x00, 0x01, 0x7f], v5, MALFORMED_PACKET),
        (&[0xe0, 0x03, 0x00, 0x09, 0x11], v5, MALFORMED_PACKET),
        // Payload format indicator 2.
        (
            &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x01, 0x02],
            v5,
            PROTOCOL_ERROR,
        ),
    ];
    for (bytes, version, code) in cases {
        let e = error_of(bytes, *version);
        assert_eq!(e.reason_code(), *code, "{bytes:02x?}: {e}");
    }
}

#[test]
fn connect_rules_of_each_version() {
    let bad = |bytes: &[u8]| decode_connect(&raw(bytes), &LIMITS).unwrap_err();
    // MQTT 3.1 (MQIsdp, level 3).
    let e = bad(&[
        0x10, 0x0e, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
    ]);
    assert!(matches!(
        e,
        DecodeError::UnsupportedVersion { level: 3, .. }
    ));
    assert_eq!(e.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
    // Level 6.
    let e = bad(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 0]);
    assert!(matches!(
        e,
        DecodeError::UnsupportedVersion { level: 6, .. }
    ));
    // Reserved flag.
    let e = bad(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 0]);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    // Will QoS without a will.
    let e = bad(&[
        0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x0a, 0, 60, 0, 0,
    ]);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    // Will QoS 3.
    let e = bad(&[
        0x10, 0x12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1e, 0, 60, 0, 0, 0, 1, b't', 0, 0, 0,
    ]);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    // A password without a username: malformed in 3.1.1, allowed in 5.
    let e = bad(&[
        0x10, 0x0f, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 0, 0, 1, b'p',
    ]);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    let ok = decode_connect(
        &raw(&[
            0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 60, 0, 0, 0, 0, 1, b'p',
        ]),
        &LIMITS,
    )
    .unwrap();
    assert_eq!(ok.password.as_deref(), Some(&b"p"[..]));
    // An empty client id without clean session (3.1.1): identifier rejected.
    let e = bad(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60, 0, 0]);
    assert_eq!(e, DecodeError::ClientIdRejected);
    // A will with a wildcard topic.
    let e = bad(&[
        0x10, 0x11, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x06, 0, 60, 0, 0, 0, 1, b'#', 0, 0,
    ]);
    assert_eq!(e.reason_code(), reason::TOPIC_NAME_INVALID);
    // Trailing bytes.
    let e = bad(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0, 9,
    ]);
    assert_eq!(e.reason_code(), reason::MALFORMED_PACKET);
    // A will property not allowed in a will (topic alias).
    let e = bad(&[
        0x10, 0x16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0, 0, 0, 3, 0x23, 0, 1, 0, 1,
        b't', 0, 0,
    ]);
    assert_eq!(e.reason_code(), reason::PROTOCOL_ERROR);
}

#[test]
fn topics_longer_than_the_limit_are_refused() {
    let small = Limits {
        max_packet_bytes: 1024,
        max_topic_bytes: 3,
    };
    let r = raw(&[0x30, 0x07, 0x00, 0x04, b'a', b'/', b'b', b'c', 0x00]);
    let e = decode(&r, Version::V5, &small).unwrap_err();
    assert_eq!(e.reason_code(), reason::TOPIC_NAME_INVALID);
    let r = raw(&[
        0x82, 0x09, 0x00, 0x01, 0x00, 0x04, b'a', b'/', b'b', b'c', 0x00,
    ]);
    let e = decode(&r, Version::V311, &small).unwrap_err();
    assert_eq!(e.reason_code(), reason::TOPIC_FILTER_INVALID);
}

/// xorshift64*: a small seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn text(&mut self, max: u64) -> String {
        let alphabet = ["a", "b", "/", "é", "x", "$", "7"];
        (0..self.below(max + 1))
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }

    fn topic(&mut self) -> String {
        format!("t{}", self.text(12))
    }

    fn qos(&mut self) -> QoS {
        QoS::from_u8(self.below(3) as u8).unwrap_or(QoS::AtMostOnce)
    }

    fn id(&mut self) -> u16 {
        1 + self.below(65_535) as u16
    }

    fn props(&mut self, version: Version, choices: &[PropertyId]) -> Properties {
        let mut p = Properties::default();
        if version == Version::V311 {
            return p;
        }
        for id in choices {
            if self.below(3) != 0 {
                continue;
            }
            p.items.push(match id {
                PropertyId::UserProperty => Property::UserProperty(self.text(4), self.text(4)),
                PropertyId::ReasonString | PropertyId::ContentType => {
                    Property::Utf8(*id, self.text(6))
                }
                PropertyId::CorrelationData => {
                    Property::Binary(*id, Bytes::from(self.text(5).into_bytes()))
                }
                PropertyId::MessageExpiryInterval | PropertyId::SessionExpiryInterval => {
                    Property::FourByte(*id, self.next() as u32)
                }
                PropertyId::SubscriptionIdentifier => {
                    Property::VarInt(*id, 1 + self.below(268_435_454) as u32)
                }
                PropertyId::ReceiveMaximum | PropertyId::TopicAliasMaximum => {
                    Property::TwoByte(*id, 1 + self.below(1000) as u16)
                }
                _ => Property::Byte(*id, self.below(2) as u8),
            });
        }
        p
    }

    fn packet(&mut self, version: Version) -> Packet {
        use PropertyId as P;
        let v5 = version == Version::V5;
        let code = |r: &mut Rng| {
            if v5 {
                [0, 0x10, 0x80, 0x87, 0x92][r.below(5) as usize]
            } else {
                0
            }
        };
        match self.below(14) {
            0 => {
                let will = self.coin().then(|| Will {
                    topic: self.topic(),
                    payload: Bytes::from(self.text(20).into_bytes()),
                    qos: self.qos(),
                    retain: self.coin(),
                    properties: self.props(version, &[P::ContentType, P::UserProperty]),
                });
                let username = self.coin().then(|| self.text(8));
                let may_have_password = username.is_some() || v5;
                let password = (may_have_password && self.coin())
                    .then(|| Bytes::from(self.text(30).into_bytes()));
                Packet::Connect(Connect {
                    version,
                    protocol_name: "MQTT".into(),
                    clean_start: true,
                    keep_alive: self.below(600) as u16,
                    properties: self.props(
                        version,
                        &[
                            P::SessionExpiryInterval,
                            P::ReceiveMaximum,
                            P::TopicAliasMaximum,
                            P::UserProperty,
                        ],
                    ),
                    client_id: self.text(10),
                    will,
                    username,
                    password,
                })
            }
            1 => Packet::ConnAck(ConnAck {
                session_present: self.coin(),
                reason_code: if v5 { code(self) } else { self.below(6) as u8 },
                properties: self.props(
                    version,
                    &[P::ReasonString, P::TopicAliasMaximum, P::UserProperty],
                ),
            }),
            2 => {
                let qos = self.qos();
                Packet::Publish(Publish {
                    dup: qos != QoS::AtMostOnce && self.coin(),
                    qos,
                    retain: self.coin(),
                    topic: self.topic(),
                    packet_id: (qos != QoS::AtMostOnce).then(|| self.id()),
                    properties: self.props(
                        version,
                        &[
                            P::PayloadFormatIndicator,
                            P::MessageExpiryInterval,
                            P::ContentType,
                            P::CorrelationData,
                            P::UserProperty,
                            P::SubscriptionIdentifier,
                        ],
                    ),
                    payload: Bytes::from(self.text(200).into_bytes()),
                })
            }
            n @ 3..=6 => {
                let ack = Ack {
                    packet_id: self.id(),
                    reason_code: code(self),
                    properties: self.props(version, &[P::ReasonString, P::UserProperty]),
                };
                match n {
                    3 => Packet::PubAck(ack),
                    4 => Packet::PubRec(ack),
                    5 => Packet::PubRel(ack),
                    _ => Packet::PubComp(ack),
                }
            }
            7 => Packet::Subscribe(Subscribe {
                packet_id: self.id(),
                properties: self.props(version, &[P::SubscriptionIdentifier, P::UserProperty]),
                filters: (0..1 + self.below(4))
                    .map(|_| {
                        (
                            self.topic(),
                            SubscriptionOptions {
                                qos: self.qos(),
                                no_local: v5 && self.coin(),
                                retain_as_published: v5 && self.coin(),
                                retain_handling: if v5 { self.below(3) as u8 } else { 0 },
                            },
                        )
                    })
                    .collect(),
            }),
            8 => Packet::SubAck(SubAck {
                packet_id: self.id(),
                properties: self.props(version, &[P::ReasonString]),
                reason_codes: (0..1 + self.below(4))
                    .map(|_| [0, 1, 2, 0x80][self.below(4) as usize])
                    .collect(),
            }),
            9 => Packet::Unsubscribe(Unsubscribe {
                packet_id: self.id(),
                properties: self.props(version, &[P::UserProperty]),
                filters: (0..1 + self.below(4)).map(|_| self.topic()).collect(),
            }),
            10 => Packet::UnsubAck(UnsubAck {
                packet_id: self.id(),
                properties: self.props(version, &[P::ReasonString]),
                reason_codes: if v5 {
                    (0..1 + self.below(3))
                        .map(|_| [0, 0x11][self.below(2) as usize])
                        .collect()
                } else {
                    Vec::new()
                },
            }),
            11 => {
                if self.coin() {
                    Packet::PingReq
                } else {
                    Packet::PingResp
                }
            }
            12 => Packet::Disconnect(Disconnect {
                reason_code: code(self),
                properties: self.props(version, &[P::ReasonString, P::SessionExpiryInterval]),
            }),
            _ if v5 => Packet::Auth(Auth {
                reason_code: [0, 0x18, 0x19][self.below(3) as usize],
                properties: self.props(version, &[P::ReasonString, P::UserProperty]),
            }),
            _ => Packet::PingReq,
        }
    }
}

#[test]
fn generated_packets_round_trip_and_mutations_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let big = Limits {
        max_packet_bytes: 1 << 20,
        max_topic_bytes: 1024,
    };
    for i in 0..6_000 {
        let version = if i % 2 == 0 {
            Version::V5
        } else {
            Version::V311
        };
        let p = rng.packet(version);
        let bytes = encoded(&p, version);
        let mut buf = BytesMut::from(&bytes[..]);
        let r = split_packet(&mut buf, &big).unwrap().unwrap();
        assert!(buf.is_empty());
        let back = decode(&r, version, &big).unwrap_or_else(|e| panic!("{e}: {p:?}"));
        assert_eq!(back, p, "{bytes:02x?}");
        // Flip, drop or insert bytes: any answer but a panic.
        let mut m = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            if m.is_empty() {
                break;
            }
            let at = rng.below(m.len() as u64) as usize;
            match rng.below(3) {
                0 => m[at] ^= 1 << rng.below(8),
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, rng.next() as u8),
            }
        }
        let mut buf = BytesMut::from(&m[..]);
        while let Ok(Some(r)) = split_packet(&mut buf, &big) {
            let _ = decode(&r, Version::V5, &big);
            let _ = decode(&r, Version::V311, &big);
            let _ = decode_connect(&r, &big);
        }
    }
}

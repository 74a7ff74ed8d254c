use bytes::BytesMut;
use proptest::prelude::*;

use super::negotiate::parse_list_for_tests;
use super::*;

const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

fn takeover() -> DeflateParams {
    DeflateParams::default()
}

fn no_takeover() -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateParams::default()
    }
}

fn state(role: Role, params: DeflateParams) -> DeflateState {
    DeflateState::new(role, params, &DeflateConfig::default())
}

/// Inflates one message arriving in `frames`.
fn inflate(s: &mut DeflateState, frames: &[&[u8]], max: usize) -> Result<Vec<u8>, Error> {
    let mut out = BytesMut::new();
    for (i, frame) in frames.iter().enumerate() {
        s.decompress(frame, i + 1 == frames.len(), &mut out, max)?;
    }
    Ok(out.to_vec())
}

fn deflate(s: &mut DeflateState, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    s.compress(payload, &mut out);
    out.to_vec()
}

// RFC 7692 §7.2.3: examples.

#[test]
fn rfc_hello() {
    // §7.2.3.1: "0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00", whole and fragmented.
    for params in [takeover(), no_takeover()] {
        let mut s = state(Role::Client, params);
        assert_eq!(inflate(&mut s, &[HELLO], 100).unwrap(), b"Hello");
        assert_eq!(inflate(&mut s, &[&HELLO[..3], &HELLO[3..]], 100).unwrap(), b"Hello");
        assert_eq!(inflate(&mut s, &[&[], HELLO, &[]], 100).unwrap(), b"Hello");
    }
}

#[test]
fn rfc_sharing_the_window() {
    // §7.2.3.2: the second "Hello" with context takeover refers to the first.
    let mut s = state(Role::Server, takeover());
    assert_eq!(inflate(&mut s, &[HELLO], 100).unwrap(), b"Hello");
    assert_eq!(inflate(&mut s, &[&[0xf2, 0x00, 0x11, 0x00, 0x00]], 100).unwrap(), b"Hello");
    assert!(s.holds_state());
}

#[test]
fn rfc_stored_block() {
    // §7.2.3.3: "DEFLATE Block with No Compression".
    let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
    let mut s = state(Role::Server, no_takeover());
    assert_eq!(inflate(&mut s, &[&stored], 100).unwrap(), b"Hello");
}

#[test]
fn rfc_bfinal() {
    // §7.2.3.4: "DEFLATE Block with "BFINAL" Set to 1"; the stream then ends, and the next
    // message starts a new one.
    let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    for params in [takeover(), no_takeover()] {
        let mut s = state(Role::Server, params);
        assert_eq!(inflate(&mut s, &[&final_block], 100).unwrap(), b"Hello");
        assert_eq!(inflate(&mut s, &[&final_block[..4], &final_block[4..]], 100).unwrap(), b"Hello");
        assert_eq!(inflate(&mut s, &[HELLO], 100).unwrap(), b"Hello");
    }
}

#[test]
fn rfc_two_blocks() {
    // §7.2.3.5: "Two DEFLATE Blocks in One Message".
    let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
    let mut s = state(Role::Server, no_takeover());
    assert_eq!(inflate(&mut s, &[&two], 100).unwrap(), b"Hello");
}

#[test]
fn our_hello() {
    // zlib's fixed-Huffman output for "Hello" is the RFC's at every level that compresses.
    for level in 1..=9 {
        let config = DeflateConfig::default().level(level);
        let mut s = DeflateState::new(Role::Server, no_takeover(), &config);
        assert_eq!(deflate(&mut s, b"Hello"), HELLO, "level {level}");
    }
    let mut s = state(Role::Server, takeover());
    assert_eq!(deflate(&mut s, b"Hello"), HELLO);
    let second = deflate(&mut s, b"Hello");
    let mut r = state(Role::Client, takeover());
    assert_eq!(inflate(&mut r, &[HELLO], 100).unwrap(), b"Hello");
    assert_eq!(inflate(&mut r, &[&second], 100).unwrap(), b"Hello");
}

#[test]
fn empty_message_is_one_zero_byte() {
    // §7.2.3.6: "0xc1 0x01 0x00".
    for params in [takeover(), no_takeover()] {
        let mut s = state(Role::Server, params);
        let mut r = state(Role::Client, params);
        for payload in [&b""[..], b"Hello", b"", b"", b"Hello"] {
            let wire = deflate(&mut s, payload);
            if payload.is_empty() {
                assert_eq!(wire, [0]);
            }
            assert_eq!(inflate(&mut r, &[&wire], 100).unwrap(), payload);
        }
    }
}

#[test]
fn corrupt_data() {
    let bad = Error::Protocol(ProtocolError::BadCompressedData);
    // BTYPE 11 is reserved.
    let mut s = state(Role::Server, no_takeover());
    assert_eq!(inflate(&mut s, &[&[0xff, 0xff]], 100), Err(bad));
    let mut s = state(Role::Server, takeover());
    assert_eq!(inflate(&mut s, &[HELLO], 100).unwrap(), b"Hello");
    assert_eq!(inflate(&mut s, &[&[0x07], &[0xff]], 100), Err(bad));
    assert!(!s.holds_state(), "a failed connection keeps nothing");
    // A stored block whose NLEN is not the complement of LEN.
    assert_eq!(inflate(&mut s, &[&[0x00, 0x05, 0x00, 0xfa, 0xfe]], 100), Err(bad));
}

#[test]
fn window_bits_are_honoured() {
    // Noise repeated at a distance of exactly one window: a compressor limited to `bits` cannot
    // reach the copy (zlib's reach is the window less 262 bytes), one with a window twice as
    // large can.
    let mut seed = 0x2545_f491_u32;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for bits in 8..=15u8 {
        let text = noise(1 << bits).repeat(6);
        let at = |bits: u8| {
            let params = DeflateParams { client_max_window_bits: bits, ..no_takeover() };
            let wire = deflate(&mut state(Role::Client, params), &text);
            assert_eq!(inflate(&mut state(Role::Server, params), &[&wire], 1 << 20).unwrap(), text);
            wire.len()
        };
        match bits {
            8 => assert!(at(8) > text.len(), "stored blocks"),
            15 => assert!(at(15) > text.len() * 9 / 10),
            _ => assert!(at(bits) > text.len() * 9 / 10 && at(bits + 1) < text.len() / 2, "{bits} bits"),
        }
    }
}

#[test]
fn shared_compression_matches_connections() {
    let payload = b"{\"room\":\"lobby\",\"text\":\"hello hello hello hello\"}".repeat(40);
    let mut shared = BytesMut::new();
    compress_shared(&payload, 1, 15, &mut shared);
    let mut s = state(Role::Server, DeflateParams { server_no_context_takeover: true, ..takeover() });
    assert_eq!(s.shared_compression(), Some((1, 15)));
    assert_eq!(deflate(&mut s, &payload), shared);
    assert_eq!(deflate(&mut s, &payload), shared, "reset between messages");
    let mut r = state(Role::Client, takeover());
    assert_eq!(inflate(&mut r, &[&shared], 1 << 20).unwrap(), payload);
    assert_eq!(state(Role::Server, takeover()).shared_compression(), None);
}

#[test]
fn interleaved_connections_share_the_inflater() {
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(100);
    let mut sender = state(Role::Client, no_takeover());
    let wire = deflate(&mut sender, &text);
    let mut a = state(Role::Server, no_takeover());
    let mut b = state(Role::Server, no_takeover());
    let mut out_a = BytesMut::new();
    for (i, piece) in wire.chunks(7).enumerate() {
        a.decompress(piece, (i + 1) * 7 >= wire.len(), &mut out_a, 1 << 20).unwrap();
        // b's whole messages go through the thread's inflater between a's frames.
        assert_eq!(inflate(&mut b, &[&wire], 1 << 20).unwrap(), text);
        assert!(!b.holds_state());
    }
    assert_eq!(out_a, text[..]);
    assert!(!a.holds_state());
}

#[test]
fn idle_connections_hold_nothing() {
    for role in [Role::Server, Role::Client] {
        let mut s = state(role, no_takeover());
        assert!(!s.holds_state());
        let wire = deflate(&mut s, &[b'x'; 5000]);
        assert!(!s.holds_state());
        assert_eq!(inflate(&mut s, &[&wire], 1 << 20).unwrap(), [b'x'; 5000]);
        assert!(!s.holds_state());
        s.decompress(&wire[..3], false, &mut BytesMut::new(), 1 << 20).unwrap();
        assert!(s.holds_state(), "a fragmented message keeps its inflater until the end");
    }
    // Server compressing with takeover keeps a compressor; the default config does not.
    let mut s = state(Role::Server, takeover());
    deflate(&mut s, b"Hello");
    assert!(s.holds_state());
    assert!(!state(Role::Server, takeover()).holds_state());
}

#[test]
fn threshold() {
    let s = DeflateState::new(Role::Server, takeover(), &DeflateConfig::default().threshold(10));
    assert!(!s.should_compress(9));
    assert!(s.should_compress(10));
}

#[test]
fn bomb_is_stopped_at_the_limit() {
    // 50 MiB of zeros, deflated as one MiB whose window is empty, then 49 times one MiB
    // whose window holds only zeros (each piece ends at a sync flush, so they concatenate).
    let mib = vec![0u8; 1 << 20];
    let mut c = new_deflater(9, 15);
    let (mut first, mut next) = (BytesMut::new(), BytesMut::new());
    deflate_message(&mut c, &mib, &mut first);
    deflate_message(&mut c, &mib, &mut next);
    let bomb = |mibs: usize| -> Vec<u8> {
        let mut wire = [first.to_vec(), TAIL.to_vec()].concat();
        (1..mibs).for_each(|_| wire.extend_from_slice(&[&next[..], &TAIL].concat()));
        wire.truncate(wire.len() - TAIL.len());
        wire
    };
    let mut s = state(Role::Server, no_takeover());
    assert_eq!(inflate(&mut s, &[&bomb(3)], 4 << 20).unwrap(), vec![0; 3 << 20]);
    let wire = bomb(50);
    assert!(wire.len() < 100_000, "{}", wire.len());
    let max = 1 << 20;
    for params in [takeover(), no_takeover()] {
        for frame in [wire.len(), 1000] {
            let mut s = state(Role::Server, params);
            let mut out = BytesMut::new();
            let mut result = Ok(());
            for (i, piece) in wire.chunks(frame).enumerate() {
                result = s.decompress(piece, (i + 1) * frame >= wire.len(), &mut out, max);
                if result.is_err() {
                    break;
                }
            }
            match result {
                Err(Error::Capacity(CapacityError::MessageTooLarge { size, max: m })) => {
                    assert_eq!((size, m), (max as u64 + 1, max));
                }
                other => panic!("{other:?}"),
            }
            assert!(out.len() <= max + 1);
            assert!(out.capacity() <= max + 64 * 1024, "{}", out.capacity());
        }
    }
}

#[test]
fn limit_is_exact() {
    let payload = vec![7u8; 70_000];
    let mut wire = BytesMut::new();
    compress_shared(&payload, 6, 15, &mut wire);
    let mut s = state(Role::Server, no_takeover());
    assert_eq!(inflate(&mut s, &[&wire], 70_000).unwrap(), payload);
    assert!(matches!(
        inflate(&mut s, &[&wire], 69_999),
        Err(Error::Capacity(CapacityError::MessageTooLarge { size: 70_000, max: 69_999 }))
    ));
}

fn messages() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<usize>)>> {
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b' ')], 0..3000),
        "[a-z ]{0,40}".prop_map(|s| s.repeat(50).into_bytes()),
    ];
    proptest::collection::vec((payload, proptest::collection::vec(0usize..4000, 0..4)), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(msgs in messages(), server_reset: bool, client_reset: bool, level in 0u32..=9,
                  bits in 8u8..=15) {
        let params = DeflateParams {
            server_no_context_takeover: server_reset,
            client_no_context_takeover: client_reset,
            server_max_window_bits: bits.max(9),
            client_max_window_bits: bits,
        };
        let config = DeflateConfig::default().level(level);
        for (from, to) in [(Role::Server, Role::Client), (Role::Client, Role::Server)] {
            let mut tx = DeflateState::new(from, params, &config);
            let mut rx = DeflateState::new(to, params, &config);
            for (payload, cuts) in &msgs {
                let wire = deflate(&mut tx, payload);
                let mut cuts = cuts.iter().map(|&c| c.min(wire.len())).collect::<Vec<_>>();
                cuts.sort_unstable();
                cuts.push(wire.len());
                let mut start = 0;
                let frames: Vec<&[u8]> = cuts.iter().map(|&end| { let f = &wire[start..end]; start = end; f }).collect();
                prop_assert_eq!(&inflate(&mut rx, &frames, 1 << 20).unwrap(), payload);
            }
        }
    }
}

// Negotiation.

fn server(config: &DeflateConfig, headers: &[&str]) -> Option<String> {
    config.negotiate(headers.iter().map(|h| h.as_bytes())).map(|p| p.to_header_value())
}

#[test]
fn server_negotiation() {
    let d = DeflateConfig::default();
    let plain = DeflateConfig::default().server_no_context_takeover(false);
    let snct = Some("permessage-deflate; server_no_context_takeover");
    let cases: &[(&DeflateConfig, &[&str], Option<&str>)] = &[
        (&d, &[], None),
        (&d, &[""], None),
        (&d, &["x-webkit-deflate-frame"], None),
        (&plain, &["permessage-deflate"], Some("permessage-deflate")),
        (&d, &["permessage-deflate"], snct),
        (&d, &["Permessage-Deflate; Client_Max_Window_Bits"], snct),
        (&d, &["permessage-deflate; client_max_window_bits"], snct),
        (
            &d,
            &["permessage-deflate; client_max_window_bits=10"],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
        ),
        (
            &d,
            &["permessage-deflate;client_max_window_bits=\"10\""],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
        ),
        (
            &d,
            &["permessage-deflate; client_max_window_bits = \"1\\0\" "],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
        ),
        (
            &d,
            &["permessage-deflate; client_max_window_bits=8"],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=8"),
        ),
        (
            &d,
            &["permessage-deflate; server_max_window_bits=9"],
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9"),
        ),
        (&d, &["permessage-deflate; server_max_window_bits=15"], snct),
        (
            &d,
            &["permessage-deflate; client_no_context_takeover"],
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        // Declined offers.
        (&d, &["permessage-deflate; server_max_window_bits=8"], None),
        (&d, &["permessage-deflate; server_max_window_bits=16"], None),
        (&d, &["permessage-deflate; server_max_window_bits=7"], None),
        (&d, &["permessage-deflate; server_max_window_bits=abc"], None),
        (&d, &["permessage-deflate; server_max_window_bits=09"], None),
        (&d, &["permessage-deflate; server_max_window_bits=+9"], None),
        (&d, &["permessage-deflate; server_max_window_bits"], None),
        (&d, &["permessage-deflate; client_max_window_bits=16"], None),
        (&d, &["permessage-deflate; client_max_window_bits="], None),
        (&d, &["permessage-deflate; server_no_context_takeover=1"], None),
        (&d, &["permessage-deflate; client_no_context_takeover=\"\""], None),
        (&d, &["permessage-deflate; foo"], None),
        (&d, &["permessage-deflate; client_max_window_bits; client_max_window_bits"], None),
        (&d, &["permessage-deflate; server_no_context_takeover; SERVER_NO_CONTEXT_TAKEOVER"], None),
        (&d, &["permessage-deflate; client_max_window_bits=\"10"], None),
        (&d, &["permessage-deflate x"], None),
        // The first acceptable offer wins, across elements and headers.
        (
            &d,
            &["permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9"],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=9"),
        ),
        (
            &d,
            &[
                "foo; a=\"x,y\", permessage-deflate; bar, , permessage-deflate; server_max_window_bits=10, permessage-deflate",
            ],
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
        ),
        (&d, &["permessage-deflate; client_max_window_bits=\"x,y\", permessage-deflate"], snct),
        (
            &d,
            &["permessage-deflate; foo", "x", "permessage-deflate; client_max_window_bits=11"],
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=11"),
        ),
    ];
    for (config, headers, expected) in cases {
        assert_eq!(server(config, headers).as_deref(), *expected, "{headers:?}");
    }
}

#[test]
fn server_configuration_limits() {
    let c = DeflateConfig::default()
        .server_max_window_bits(10)
        .client_max_window_bits(12)
        .client_no_context_takeover(true);
    let answer = |h: &str| server(&c, &[h]);
    assert_eq!(
        answer("permessage-deflate; client_max_window_bits").as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        )
    );
    assert_eq!(
        answer("permessage-deflate; server_max_window_bits=9; client_max_window_bits=14").as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12"
        )
    );
    // Without client_max_window_bits in the offer the answer may not limit the client.
    let p = c.negotiate([&b"permessage-deflate"[..]]).unwrap();
    assert_eq!(p.client_max_window_bits, 15);
    assert_eq!(p.server_max_window_bits, 10);
    // An offered server_max_window_bits=15 is echoed by negotiate_response.
    let (p, value) = DeflateConfig::default()
        .negotiate_response([&b"permessage-deflate; server_max_window_bits=15"[..]])
        .unwrap();
    assert_eq!(p.server_max_window_bits, 15);
    assert_eq!(value, "permessage-deflate; server_no_context_takeover; server_max_window_bits=15");
}

#[test]
fn client_offer() {
    assert_eq!(
        DeflateConfig::default().client_offer(),
        "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    );
    let c = DeflateConfig::default()
        .server_no_context_takeover(false)
        .client_no_context_takeover(true)
        .server_max_window_bits(10)
        .client_max_window_bits(11);
    assert_eq!(
        c.client_offer(),
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11"
    );
    // Our own server accepts our own offer.
    let p = DeflateConfig::default().negotiate([c.client_offer().as_bytes()]).unwrap();
    assert_eq!(c.accept_response([p.to_header_value().as_bytes()]), Ok(Some(p)));
}

#[test]
fn client_accept_response() {
    use NegotiationError::*;
    let d = DeflateConfig::default();
    let plain = DeflateConfig::default().server_no_context_takeover(false);
    let limited = plain.clone().server_max_window_bits(10).client_max_window_bits(12);
    let p = |snct, cnct, s, c| DeflateParams {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: s,
        client_max_window_bits: c,
    };
    type Accepted = Result<Option<DeflateParams>, NegotiationError>;
    let cases: &[(&DeflateConfig, &[&str], Accepted)] = &[
        (&d, &[], Ok(None)),
        (&d, &[" , "], Ok(None)),
        (&d, &["permessage-deflate; server_no_context_takeover"], Ok(Some(p(true, false, 15, 15)))),
        (
            &d,
            &["PERMESSAGE-DEFLATE; Server_No_Context_Takeover; client_max_window_bits=\"9\""],
            Ok(Some(p(true, false, 15, 9))),
        ),
        (&plain, &["permessage-deflate"], Ok(Some(p(false, false, 15, 15)))),
        (
            &plain,
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            Ok(Some(p(true, true, 15, 15))),
        ),
        (
            &plain,
            &["permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"],
            Ok(Some(p(false, false, 8, 8))),
        ),
        (&limited, &["permessage-deflate; server_max_window_bits=9"], Ok(Some(p(false, false, 9, 12)))),
        (
            &limited,
            &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"],
            Ok(Some(p(false, false, 10, 12))),
        ),
        // Failures.
        (&d, &["permessage-deflate"], Err(NotHonoured)),
        (&limited, &["permessage-deflate"], Err(NotHonoured)),
        (&limited, &["permessage-deflate; server_max_window_bits=11"], Err(NotHonoured)),
        (
            &limited,
            &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=13"],
            Err(NotHonoured),
        ),
        (&plain, &["permessage-deflate; client_max_window_bits"], Err(InvalidValue)),
        (&plain, &["permessage-deflate; server_max_window_bits=16"], Err(InvalidValue)),
        (&plain, &["permessage-deflate; server_max_window_bits"], Err(InvalidValue)),
        (&plain, &["permessage-deflate; client_no_context_takeover=x"], Err(InvalidValue)),
        (&plain, &["permessage-deflate; foo"], Err(UnknownParameter)),
        (
            &plain,
            &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"],
            Err(DuplicateParameter),
        ),
        (&plain, &["permessage-deflate, permessage-deflate"], Err(DuplicateExtension)),
        (&plain, &["permessage-deflate", "permessage-deflate"], Err(DuplicateExtension)),
        (&plain, &["x-webkit-deflate-frame"], Err(UnexpectedExtension)),
        (&plain, &["permessage-deflate; =1"], Err(Malformed)),
        (&plain, &["permessage-deflate; x=\"1"], Err(Malformed)),
    ];
    for (config, headers, expected) in cases {
        assert_eq!(config.accept_response(headers.iter().map(|h| h.as_bytes())), *expected, "{headers:?}");
    }
}

#[test]
fn list_grammar() {
    let names = |v: &str| -> Vec<Option<String>> { parse_list_for_tests(v.as_bytes()) };
    assert_eq!(
        names("a, b ;x=1 ;y=\"q\\\"z\", c"),
        [Some("a".into()), Some("b;x=1;y=q\"z".into()), Some("c".into())]
    );
    assert_eq!(names("a;, b"), [None, Some("b".into())]);
    assert_eq!(names("\"a,b\", c"), [None, Some("c".into())]);
    assert_eq!(names("a; x=\"1,2\" y, c"), [None, Some("c".into())]);
    assert_eq!(names(",,\t,"), Vec::<Option<String>>::new());
}

#[test]
fn state_is_small_and_send() {
    fn send<T: Send>() {}
    send::<DeflateState>();
    assert!(size_of::<DeflateState>() <= 48, "{}", size_of::<DeflateState>());
}

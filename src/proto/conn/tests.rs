use super::*;
use proptest::prelude::*;

fn server() -> Connection {
    Connection::new(Role::Server, Config::default(), None)
}

fn client() -> Connection {
    Connection::new(Role::Client, Config::default(), None)
}

/// Feeds `bytes` to `conn` in chunks of the given sizes (cycled), collecting every event.
fn feed_chunked(conn: &mut Connection, bytes: &[u8], chunks: &[usize]) -> Vec<Event> {
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(bytes.len()).max(1);
        let end = (pos + n).min(bytes.len());
        input.extend_from_slice(&bytes[pos..end]);
        pos = end;
        i += 1;
        while let Some(event) = conn.poll_event(&mut input) {
            events.push(event);
        }
    }
    events
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    feed_chunked(conn, bytes, &[])
}

fn transmit(conn: &mut Connection) -> Vec<u8> {
    let mut out = BytesMut::new();
    conn.poll_transmit(&mut out);
    out.to_vec()
}

/// The close code in the first Close frame `conn` queued (unmasked: server role).
fn queued_close_code(conn: &mut Connection) -> Option<u16> {
    let out = transmit(conn);
    let (h, n) = FrameHeader::parse(&out).ok()??;
    assert_eq!(h.opcode, OpCode::Close);
    let mut body = out[n..n + h.payload_len as usize].to_vec();
    if let Some(key) = h.mask {
        apply_mask(&mut body, key, 0);
    }
    Some(u16::from_be_bytes([body[0], body[1]]))
}

/// A masked frame with first byte `first` (FIN, RSV bits and opcode as given, so reserved
/// values can be written too) and the shortest length encoding: what tests send as a client.
fn masked_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    crate::proto::mask::apply_mask_scalar(&mut out[start..], key, 0);
    out
}

fn masked(opcode_byte: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(opcode_byte, payload, [0x37, 0xfa, 0x21, 0x3d])
}

#[test]
fn rfc_6455_5_7_examples() {
    // A single-frame masked text message to a server.
    let mut s = server();
    let events = feed(&mut s, &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    assert_eq!(events, vec![Event::Text(Bytes::from_static(b"Hello"))]);
    // A single-frame unmasked text message to a client.
    let mut c = client();
    assert_eq!(feed(&mut c, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]), vec![Event::Text("Hello".into())]);
    // A fragmented unmasked text message.
    let mut c = client();
    let events = feed(&mut c, &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    assert_eq!(events, vec![Event::Text("Hello".into())]);
    // Unmasked ping, answered with an unmasked pong by a server... here a client answers masked.
    let mut c = client();
    assert_eq!(feed(&mut c, &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]), vec![Event::Ping("Hello".into())]);
    let pong = transmit(&mut c);
    let (h, n) = FrameHeader::parse(&pong).unwrap().unwrap();
    assert_eq!((h.opcode, h.payload_len, h.mask.is_some()), (OpCode::Pong, 5, true));
    let mut body = pong[n..].to_vec();
    apply_mask(&mut body, h.mask.unwrap(), 0);
    assert_eq!(body, b"Hello");
    // A masked ping to a server gets the unmasked pong of RFC 6455 §5.7.
    let mut s = server();
    assert_eq!(feed(&mut s, &masked(0x89, b"Hello")), vec![Event::Ping("Hello".into())]);
    assert_eq!(transmit(&mut s), [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    // A masked pong.
    let mut s = server();
    assert_eq!(
        feed(&mut s, &[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]),
        vec![Event::Pong("Hello".into())]
    );
    // 256 bytes and 64 KiB binary messages in single unmasked frames.
    for len in [256usize, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut frame =
            if len == 256 { vec![0x82, 0x7e, 0x01, 0x00] } else { vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0] };
        frame.extend_from_slice(&payload);
        let mut c = client();
        assert_eq!(feed(&mut c, &frame), vec![Event::Binary(payload.into())]);
    }
}

#[test]
fn unfragmented_message_is_a_slice_of_the_input() {
    let mut s = server();
    let mut input = BytesMut::from(&masked(0x82, &[7u8; 1000])[..]);
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    let Some(Event::Binary(payload)) = s.poll_event(&mut input) else { panic!("no message") };
    assert!(range.contains(&(payload.as_ptr() as usize)), "the payload was copied");
    assert_eq!(&payload[..], &[7u8; 1000][..]);
}

#[test]
fn the_first_frame_may_share_a_buffer_with_the_next() {
    let mut bytes = masked(0x81, b"one");
    bytes.extend(masked(0x81, b"two"));
    bytes.extend(&masked(0x81, b"three")[..4]);
    let mut s = server();
    let mut input = BytesMut::from(&bytes[..]);
    assert_eq!(s.poll_event(&mut input), Some(Event::Text("one".into())));
    assert_eq!(s.poll_event(&mut input), Some(Event::Text("two".into())));
    assert_eq!(s.poll_event(&mut input), None);
    assert_eq!(input.len(), 4, "a partial header is left in place");
    input.extend_from_slice(&masked(0x81, b"three")[4..]);
    assert_eq!(s.poll_event(&mut input), Some(Event::Text("three".into())));
    assert!(input.is_empty());
}

#[test]
fn control_frames_between_fragments() {
    let mut bytes = masked(0x01, b"Hel");
    bytes.extend(masked(0x89, b"p"));
    bytes.extend(masked(0x80, b"lo"));
    let mut s = server();
    assert_eq!(feed(&mut s, &bytes), vec![Event::Ping("p".into()), Event::Text("Hello".into())]);
}

fn failure_code(role: Role, bytes: &[u8], config: Config) -> (Error, Option<u16>) {
    let mut conn = Connection::new(role, config, None);
    let events = feed(&mut conn, bytes);
    let Some(Event::Failed(error)) = events.last().cloned() else { panic!("no failure in {events:?}") };
    assert!(conn.is_closed());
    (error, queued_close_code(&mut conn))
}

#[test]
fn protocol_errors_close_with_1002() {
    let cases: Vec<(Vec<u8>, ProtocolError)> = vec![
        (masked(0x83, b""), ProtocolError::ReservedOpcode(3)),
        (masked(0x8b, b""), ProtocolError::ReservedOpcode(0xb)),
        (masked(0xc1, b"x"), ProtocolError::ReservedBits),
        (masked(0xa1, b"x"), ProtocolError::ReservedBits),
        (masked(0x91, b"x"), ProtocolError::ReservedBits),
        (vec![0x81, 0x01, b'x'], ProtocolError::UnmaskedFrame),
        (masked(0x09, b""), ProtocolError::FragmentedControlFrame),
        (masked(0x80, b"x"), ProtocolError::UnexpectedContinuation),
        ([masked(0x01, b"a"), masked(0x81, b"b")].concat(), ProtocolError::ExpectedContinuation),
        (masked(0x88, &[0x03]), ProtocolError::CloseFrameTooShort),
        (masked(0x88, &[0x03, 0xed]), ProtocolError::InvalidCloseCode(1005)),
        (masked(0x88, &[0x03, 0xec]), ProtocolError::InvalidCloseCode(1004)),
        (masked(0x88, &[0x00, 0x00]), ProtocolError::InvalidCloseCode(0)),
        (masked(0x88, &[0x13, 0x88]), ProtocolError::InvalidCloseCode(5000)),
    ];
    for (bytes, expected) in cases {
        let (error, code) = failure_code(Role::Server, &bytes, Config::default());
        assert_eq!(error, Error::Protocol(expected));
        assert_eq!(code, Some(1002), "{expected:?}");
    }
    let mut too_long = vec![0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4];
    too_long.extend([0u8; 126]);
    assert_eq!(failure_code(Role::Server, &too_long, Config::default()).1, Some(1002));
    let high_bit = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(
        failure_code(Role::Server, &high_bit, Config::default()).0,
        ProtocolError::LengthHighBit.into()
    );
    // A masked frame to a client.
    let (error, code) = failure_code(Role::Client, &masked(0x81, b"x"), Config::default());
    assert_eq!((error, code), (ProtocolError::MaskedFrame.into(), Some(1002)));
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let cases = [
        masked(0x81, &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]),
        [masked(0x01, "κό".as_bytes()), masked(0x80, &[0xff])].concat(),
        [masked(0x01, &[0xce]), masked(0x80, &[])].concat(),
        masked(0x88, &[0x03, 0xe8, 0xff]),
    ];
    for bytes in cases {
        let (error, code) = failure_code(Role::Server, &bytes, Config::default());
        assert_eq!((error, code), (ProtocolError::InvalidUtf8.into(), Some(1007)));
    }
}

#[test]
fn invalid_utf8_fails_before_the_frame_ends() {
    // Autobahn 6.4.3: one frame, sent in pieces; the bad bytes are in the second piece.
    let mut payload = "κόσμε".as_bytes().to_vec();
    payload.extend([0xf4, 0x90, 0x80, 0x80]);
    payload.extend(b"edited");
    let frame = masked(0x81, &payload);
    let mut s = server();
    let mut input = BytesMut::from(&frame[..14]);
    assert_eq!(s.poll_event(&mut input), None);
    input.extend_from_slice(&frame[14..18]);
    assert!(matches!(s.poll_event(&mut input), Some(Event::Failed(_))), "must fail before the rest arrives");
}

#[test]
fn size_limits_close_with_1009_before_buffering() {
    let config = Config::default().max_message_size(1000);
    // One frame over the limit: refused from its header alone.
    let header_only = &masked(0x82, &[0u8; 1001])[..8];
    let (error, code) = failure_code(Role::Server, header_only, config.clone());
    assert_eq!(error, CapacityError::FrameTooLarge { size: 1001, max: 1000 }.into());
    assert_eq!(code, Some(1009));
    // Fragments adding up past the limit.
    let bytes = [masked(0x02, &[0u8; 600]), masked(0x80, &[0u8; 600])].concat();
    let (error, code) = failure_code(Role::Server, &bytes, config.clone());
    assert_eq!(error, CapacityError::MessageTooLarge { size: 1200, max: 1000 }.into());
    assert_eq!(code, Some(1009));
    // Too many fragments.
    let mut bytes = masked(0x02, b"");
    for _ in 0..5 {
        bytes.extend(masked(0x00, b""));
    }
    let (error, code) = failure_code(Role::Server, &bytes, Config::default().max_fragments(4));
    assert_eq!(error, CapacityError::TooManyFragments { max: 4 }.into());
    assert_eq!(code, Some(1009));
}

#[test]
fn close_handshake_initiated_by_the_peer() {
    let mut s = server();
    let events = feed(&mut s, &masked(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
    assert_eq!(events, vec![Event::Close { code: CloseCode::NORMAL, reason: "bye".into() }]);
    assert!(s.is_closed());
    assert_eq!(transmit(&mut s), [0x88, 0x02, 0x03, 0xe8], "the code is echoed");
    let mut out = BytesMut::new();
    assert_eq!(s.send(MessageKind::Text, b"late", &mut out), Err(SendError::Closed));
    assert!(out.is_empty());
    // Nothing is read after the close.
    assert!(feed(&mut s, &masked(0x81, b"after")).is_empty());
    // An empty close is answered with 1000.
    let mut s = server();
    let events = feed(&mut s, &masked(0x88, b""));
    assert_eq!(events, vec![Event::Close { code: CloseCode::NO_STATUS, reason: Bytes::new() }]);
    assert_eq!(transmit(&mut s), [0x88, 0x02, 0x03, 0xe8]);
}

#[test]
fn close_handshake_initiated_here() {
    let mut s = server();
    let mut out = BytesMut::new();
    s.close(CloseCode::GOING_AWAY, "restart", &mut out).unwrap();
    assert_eq!(&out[..4], &[0x88, 0x09, 0x03, 0xe9]);
    assert!(!s.can_send() && !s.is_closed());
    assert_eq!(s.close(CloseCode::NORMAL, "", &mut out), Err(SendError::Closed));
    // Data still arriving is read but not handed out; pings are not answered.
    let events =
        feed(&mut s, &[masked(0x81, b"in flight"), masked(0x89, b""), masked(0x88, &[0x03, 0xe9])].concat());
    assert_eq!(
        events,
        vec![Event::Ping(Bytes::new()), Event::Close { code: CloseCode::GOING_AWAY, reason: Bytes::new() }]
    );
    assert!(s.is_closed());
    assert!(transmit(&mut s).is_empty(), "no second close, no pong");
    assert_eq!(s.close(CloseCode(1005), "", &mut out), Err(SendError::Closed));
    let mut c = client();
    assert_eq!(c.close(CloseCode(1005), "", &mut out), Err(SendError::InvalidCloseCode));
    assert_eq!(c.close(CloseCode::NORMAL, &"x".repeat(124), &mut out), Err(SendError::ControlTooLong));
    assert_eq!(c.ping(&[0; 126], &mut out), Err(SendError::ControlTooLong));
}

#[test]
fn idle_connection_holds_no_heap() {
    let mut s = server();
    assert!(size_of::<Connection>() <= 160, "Connection is {} bytes", size_of::<Connection>());
    let events = feed(&mut s, &[masked(0x89, b"hb"), masked(0x01, b"frag"), masked(0x80, b"ment")].concat());
    assert_eq!(events.len(), 2);
    assert!(transmit(&mut s).len() > 2);
    assert!(s.pending.is_none(), "the reply queue is released");
    assert!(s.message.is_none() && s.frame.is_none());
}

#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        "\\PC{0,300}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Msg::Binary),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Msg::Ping),
    ]
}

/// What `from` sends for these messages, each data message cut into `frags` fragments.
fn encode_all(from: &mut Connection, msgs: &[Msg], frags: usize) -> (Vec<u8>, Vec<Event>) {
    let mut out = BytesMut::new();
    let mut expected = Vec::new();
    for m in msgs {
        match m {
            Msg::Ping(p) => {
                from.ping(p, &mut out).unwrap();
                expected.push(Event::Ping(p.clone().into()));
            }
            Msg::Text(t) if frags > 1 && !t.is_empty() => {
                // Hand-fragment: split on byte boundaries, even inside a code point.
                let b = t.as_bytes();
                let step = b.len().div_ceil(frags);
                let chunks: Vec<&[u8]> = b.chunks(step).collect();
                for (i, c) in chunks.iter().enumerate() {
                    let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
                    let fin = i + 1 == chunks.len();
                    let h =
                        FrameHeader { fin, mask: from.mask_key(), ..FrameHeader::new(op, c.len() as u64) };
                    h.encode(&mut out);
                    let start = out.len();
                    out.extend_from_slice(c);
                    if let Some(k) = h.mask {
                        apply_mask(&mut out[start..], k, 0);
                    }
                }
                expected.push(Event::Text(t.clone().into()));
            }
            Msg::Text(t) => {
                from.send(MessageKind::Text, t.as_bytes(), &mut out).unwrap();
                expected.push(Event::Text(t.clone().into()));
            }
            Msg::Binary(b) => {
                from.send(MessageKind::Binary, b, &mut out).unwrap();
                expected.push(Event::Binary(b.clone().into()));
            }
        }
    }
    (out.to_vec(), expected)
}

proptest! {
    #[test]
    fn events_do_not_depend_on_how_input_is_cut(msgs in proptest::collection::vec(msg(), 1..8),
                                                 chunks in proptest::collection::vec(1usize..40, 1..6),
                                                 frags in 1usize..4, to_server in any::<bool>()) {
        let (mut from, mut to) = if to_server { (client(), server()) } else { (server(), client()) };
        let (bytes, expected) = encode_all(&mut from, &msgs, frags);
        prop_assert_eq!(&feed(&mut to, &bytes), &expected);
        let mut to = if to_server { server() } else { client() };
        prop_assert_eq!(&feed_chunked(&mut to, &bytes, &chunks), &expected);
        let mut to = if to_server { server() } else { client() };
        prop_assert_eq!(&feed_chunked(&mut to, &bytes, &[1]), &expected);
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                    chunks in proptest::collection::vec(1usize..50, 1..4), server_role in any::<bool>()) {
        let role = if server_role { Role::Server } else { Role::Client };
        let mut conn = Connection::new(role, Config::default().max_message_size(4096), None);
        let events = feed_chunked(&mut conn, &bytes, &chunks);
        for (i, e) in events.iter().enumerate() {
            if matches!(e, Event::Failed(_) | Event::Close { .. }) {
                prop_assert_eq!(i + 1, events.len(), "events after the end");
            }
        }
    }
}

/// What an open connection's protocol state costs (it lives in every connection the reactor
/// holds): the limits, the frame in progress, the UTF-8 carry and three boxes that stay empty
/// while idle. Grows only on purpose.
#[test]
fn an_idle_connection_is_small() {
    use std::mem::size_of;
    assert_eq!(size_of::<Config>(), 12);
    let size = size_of::<Connection>();
    assert!(size <= 80, "Connection grew to {size} bytes");
    let conn = Connection::new(Role::Server, Config::default(), None);
    assert!(!conn.has_pending() && !conn.is_compressed());
}

//! The connection state machine, one for both roles.
//!
//! A [`Connection`] owns no socket and no buffer of input: the caller reads bytes into a
//! `BytesMut` it owns and lends it to [`poll_event`](Connection::poll_event), which consumes
//! whole frames from its front and leaves an unfinished frame's bytes in place for the next
//! call. What the connection must say by itself (a pong, the reply to a close, the close that
//! answers a protocol error) waits in a small queue that [`poll_transmit`](Connection::poll_transmit)
//! drains; what the application says goes through [`send`](Connection::send) and friends,
//! straight into the caller's output buffer.
//!
//! # Call order
//!
//! 1. Read bytes from the transport and append them to the input buffer.
//! 2. Call [`poll_event`](Connection::poll_event) until it returns `None`; act on each event
//!    (sending replies with [`send`](Connection::send) if you like).
//! 3. Call [`poll_transmit`](Connection::poll_transmit) and write out the output buffer.
//! 4. Keep the bytes `poll_event` left in the input buffer (a partial frame) for the next read.
//!    When [`is_closed`](Connection::is_closed) is true, flush and close the transport.
//!
//! # Memory
//!
//! An open, idle connection holds no heap memory: no read buffer (the caller's), no message
//! buffer (only while a fragmented or compressed message is unfinished), no zlib state (see
//! [`deflate`](crate::proto::deflate)), and an empty reply queue.

use bytes::{Buf, Bytes, BytesMut};

use super::Role;
use super::close::CloseCode;
use super::deflate::{DeflateParams, DeflateState};
use super::error::{CapacityError, Error, ProtocolError};
use super::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

pub use super::deflate::DeflateConfig;

#[cfg(test)]
mod tests;

/// Limits on what the peer may send.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload of one frame. Default 16 MiB: a frame is buffered whole before it is
    /// handed out, so this bounds what one unfinished frame can make the caller hold.
    pub max_frame_size: u32,
    /// Largest message, after reassembly and inflation. Default 16 MiB.
    pub max_message_size: u32,
    /// Most frames in one message. Default 131,072: enough for Autobahn 9.3/9.4 (4 MiB in
    /// 64-byte fragments), small enough that empty fragments cannot spin a worker for long.
    pub max_fragments: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_frame_size: 16 << 20, max_message_size: 16 << 20, max_fragments: 1 << 17 }
    }
}

impl Config {
    /// Sets [`max_message_size`](Self::max_message_size), and the frame limit with it
    /// (at most `u32::MAX`: larger values are clamped).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = clamp_u32(bytes);
        self.max_frame_size = self.max_message_size;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size) (clamped to `u32::MAX`).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = clamp_u32(bytes);
        self
    }

    /// Sets [`max_fragments`](Self::max_fragments) (clamped to `u32::MAX`).
    pub fn max_fragments(mut self, count: usize) -> Self {
        self.max_fragments = clamp_u32(count);
        self
    }
}

/// Limits are kept as `u32` (4 GiB is past any sane message): the config lives in every
/// connection, so its size counts per idle connection.
fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A data message's type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// UTF-8 text (opcode 0x1).
    Text,
    /// Binary data (opcode 0x2).
    Binary,
}

impl MessageKind {
    fn opcode(self) -> OpCode {
        match self {
            Self::Text => OpCode::Text,
            Self::Binary => OpCode::Binary,
        }
    }
}

/// What the peer said.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A whole text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping; the pong is already queued.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's Close frame. If this side had not sent one, the reply is queued. No event
    /// follows; flush, then close the transport (a client may wait for the server to do so).
    Close {
        /// The peer's code; [`CloseCode::NO_STATUS`] when the frame had none.
        code: CloseCode,
        /// The peer's reason, valid UTF-8.
        reason: Bytes,
    },
    /// The peer broke the protocol or a limit. A Close frame with the matching code (1002,
    /// 1007 or 1009) is queued; no event follows; flush, then close the transport.
    Failed(Error),
}

/// Why something could not be sent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// A Close frame was already sent: "The application MUST NOT send any more data frames
    /// after sending a Close frame." (RFC 6455 §5.5.1)
    Closed,
    /// A control frame payload over 125 bytes, or a close reason that does not fit.
    ControlTooLong,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Closed => "the connection is closing",
            Self::ControlTooLong => "control frame payload over 125 bytes",
            Self::InvalidCloseCode => "close code may not be sent",
        })
    }
}

impl std::error::Error for SendError {}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    /// Both directions open.
    Open,
    /// We sent a Close frame and wait for the peer's.
    CloseSent,
    /// Both Close frames exchanged: nothing more is read or sent, and the peer sends nothing
    /// more either.
    Closed,
    /// The connection failed (our Close, if any, is queued): nothing more is read or sent,
    /// though the peer may still be sending.
    Failed,
}

/// A frame whose header was consumed and whose payload is still arriving.
#[derive(Copy, Clone, Debug)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload bytes at the front of the input already unmasked and validated (text only).
    processed: usize,
}

/// A message spread over several frames, or compressed.
#[derive(Debug)]
struct Partial {
    kind: MessageKind,
    compressed: bool,
    fragments: usize,
    buf: BytesMut,
}

enum Step {
    Event(Event),
    Continue,
    NeedMore,
}

/// The WebSocket protocol for one connection, without I/O. See the [module docs](self).
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    frame: Option<FrameInProgress>,
    utf8: Utf8Validator,
    message: Option<Box<Partial>>,
    /// Boxed: most connections negotiate no compression, and the box keeps them small.
    deflate: Option<Box<DeflateState>>,
    config: Config,
    /// Frames the connection queued by itself; boxed on demand (replies are rare).
    pending: Option<Box<BytesMut>>,
}

impl Connection {
    /// A connection whose handshake is done, with `deflate` the negotiated permessage-deflate
    /// state (if any).
    pub fn new(role: Role, config: Config, deflate: Option<DeflateState>) -> Self {
        Self {
            role,
            state: State::Open,
            frame: None,
            utf8: Utf8Validator::new(),
            message: None,
            deflate: deflate.map(Box::new),
            config,
            pending: None,
        }
    }

    /// A connection using permessage-deflate with the negotiated `params`.
    pub fn with_deflate(role: Role, config: Config, params: DeflateParams, deflate: &DeflateConfig) -> Self {
        Self::new(role, config, Some(DeflateState::new(role, params, deflate)))
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// `Some((level, window_bits))` when this side compresses each message from a fresh
    /// context, so a frame compressed once by
    /// [`compress_shared`](crate::proto::deflate::compress_shared) with those settings (or a
    /// smaller window) may be sent on this connection as is.
    pub fn shared_compression(&self) -> Option<(u32, u8)> {
        self.deflate.as_deref().and_then(DeflateState::shared_compression)
    }

    /// Whether data may still be sent (no Close frame sent yet).
    #[must_use]
    pub fn can_send(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over: both Close frames exchanged, or failed. Flush what
    /// [`poll_transmit`](Self::poll_transmit) gives, then close the transport.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Failed)
    }

    /// Whether the close handshake completed: both Close frames went through, so the peer
    /// sends nothing more and the transport can be closed at once (RFC 6455 §5.5.1, §7.1.1).
    /// False for a connection that failed.
    #[must_use]
    pub fn close_handshake_done(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether more input is wanted (false once closed).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        !self.is_closed()
    }

    /// How many more bytes the frame being received needs, when its header has arrived; lets
    /// the caller reserve its input buffer once for a large frame (already checked against
    /// the frame limit).
    #[must_use]
    pub fn bytes_needed(&self, input: &BytesMut) -> Option<usize> {
        self.frame.map(|f| (f.header.payload_len as usize).saturating_sub(input.len()))
    }

    /// Whether a message is being reassembled, or a frame received, at this moment.
    #[must_use]
    pub fn is_mid_message(&self) -> bool {
        self.frame.is_some() || self.message.is_some()
    }

    /// Takes the next event out of `input`, consuming the bytes of the frames it used.
    ///
    /// Returns `None` when `input` holds no complete frame: keep the bytes left in `input`
    /// and call again once more arrive. After [`Event::Close`] or [`Event::Failed`], always
    /// `None`.
    ///
    /// An unfragmented, uncompressed message is handed out as a slice of `input` (unmasked in
    /// place): no copy.
    #[must_use]
    pub fn poll_event(&mut self, input: &mut BytesMut) -> Option<Event> {
        loop {
            if self.is_closed() {
                return None;
            }
            match self.step(input) {
                Ok(Step::Event(event)) => return Some(event),
                Ok(Step::Continue) => {}
                Ok(Step::NeedMore) => return None,
                Err(error) => return Some(self.fail(error)),
            }
        }
    }

    /// Moves the frames the connection queued by itself (pongs, close replies) to `out`.
    /// Returns whether it moved anything.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        // Taking the box releases the queue's memory: idle connections hold nothing.
        let Some(mut pending) = self.pending.take() else {
            return false;
        };
        if out.is_empty() {
            std::mem::swap(out, &mut *pending);
        } else {
            out.extend_from_slice(&pending);
        }
        true
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| !p.is_empty())
    }

    /// Appends one message, framed (compressed when negotiated and at or above the threshold;
    /// masked for a client), to `out`.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once a Close frame was sent.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        let opcode = kind.opcode();
        match &mut self.deflate {
            Some(deflate) if deflate.should_compress(payload.len()) => {
                // Leave room for the longest header, compress after it, then write the real
                // header right before the compressed bytes and close the gap.
                let start = out.len();
                out.resize(start + MAX_HEADER_LEN, 0);
                deflate.compress(payload, out);
                let body_len = out.len() - start - MAX_HEADER_LEN;
                let header = FrameHeader {
                    rsv1: true,
                    mask: self.mask_key(),
                    ..FrameHeader::new(opcode, body_len as u64)
                };
                let hlen = header.len();
                let mut head = [0u8; MAX_HEADER_LEN];
                header.encode(&mut &mut head[..]);
                let body = start + MAX_HEADER_LEN;
                out.copy_within(body.., start + hlen);
                out.truncate(start + hlen + body_len);
                out[start..start + hlen].copy_from_slice(&head[..hlen]);
                if let Some(key) = header.mask {
                    apply_mask(&mut out[start + hlen..], key, 0);
                }
            }
            _ => self.write_frame(opcode, payload, out),
        }
        Ok(())
    }

    /// Appends a ping to `out`.
    ///
    /// # Errors
    ///
    /// [`SendError::ControlTooLong`] over 125 bytes; [`SendError::Closed`] after a Close.
    pub fn ping(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        self.control(OpCode::Ping, payload, out)
    }

    /// Appends an unsolicited pong to `out` (a heartbeat that needs no answer).
    ///
    /// # Errors
    ///
    /// As [`ping`](Self::ping).
    pub fn pong(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        self.control(OpCode::Pong, payload, out)
    }

    /// Starts the closing handshake: appends a Close frame to `out`. Data events may still
    /// arrive until the peer's Close; then [`is_closed`](Self::is_closed) turns true.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if a Close frame was already sent, [`SendError::InvalidCloseCode`]
    /// for a code that may not go on the wire, [`SendError::ControlTooLong`] for a reason over
    /// 123 bytes.
    pub fn close(&mut self, code: CloseCode, reason: &str, out: &mut BytesMut) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode);
        }
        if reason.len() > 123 {
            return Err(SendError::ControlTooLong);
        }
        self.write_close(code, reason.as_bytes(), out);
        self.state = State::CloseSent;
        Ok(())
    }

    fn control(&mut self, opcode: OpCode, payload: &[u8], out: &mut BytesMut) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closed);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlTooLong);
        }
        self.write_frame(opcode, payload, out);
        Ok(())
    }

    fn write_close(&self, code: CloseCode, reason: &[u8], out: &mut BytesMut) {
        let mut body = [0u8; 125];
        body[..2].copy_from_slice(&code.0.to_be_bytes());
        let n = 2 + reason.len().min(123);
        body[2..n].copy_from_slice(&reason[..n - 2]);
        self.write_frame(OpCode::Close, &body[..n], out);
    }

    fn mask_key(&self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            // "The masking key MUST be derived from a strong source of entropy" (RFC 6455
            // §5.3): a thread-local ChaCha CSPRNG, seeded once, drawn in 64-byte blocks.
            Role::Client => Some(rand::random()),
        }
    }

    fn write_frame(&self, opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
        let header = FrameHeader { mask: self.mask_key(), ..FrameHeader::new(opcode, payload.len() as u64) };
        out.reserve(header.len() + payload.len());
        header.encode(out);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }

    fn fail(&mut self, error: Error) -> Event {
        if self.state == State::Open {
            let mut pending = self.pending.take().unwrap_or_default();
            self.write_close(CloseCode::from(&error), b"", &mut pending);
            self.pending = Some(pending);
        }
        self.state = State::Failed;
        self.frame = None;
        self.message = None;
        Event::Failed(error)
    }

    /// Checks what a frame header may say here, given the role, the negotiation and the
    /// message in progress.
    fn check_header(&self, h: &FrameHeader) -> Result<(), Error> {
        // "MUST be 0 unless an extension is negotiated that defines meanings for non-zero
        // values." (RFC 6455 §5.2)
        if h.rsv2 || h.rsv3 {
            return Err(ProtocolError::ReservedBits.into());
        }
        if h.rsv1 {
            if self.deflate.is_none() || h.opcode.is_control() {
                return Err(ProtocolError::ReservedBits.into());
            }
            if h.opcode == OpCode::Continuation {
                return Err(ProtocolError::CompressedContinuation.into());
            }
        }
        match (self.role, h.mask.is_some()) {
            // "The server MUST close the connection upon receiving a frame that is not
            // masked." / "A client MUST close a connection if it detects a masked frame."
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame.into()),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame.into()),
            _ => {}
        }
        let max_frame = self.config.max_frame_size as usize;
        if h.payload_len > max_frame as u64 {
            return Err(CapacityError::FrameTooLarge { size: h.payload_len, max: max_frame }.into());
        }
        let max_message = self.config.max_message_size as usize;
        match (h.opcode, &self.message) {
            (OpCode::Text | OpCode::Binary, Some(_)) => Err(ProtocolError::ExpectedContinuation.into()),
            (OpCode::Text | OpCode::Binary, None) if !h.rsv1 && h.payload_len > max_message as u64 => {
                Err(CapacityError::MessageTooLarge { size: h.payload_len, max: max_message }.into())
            }
            (OpCode::Continuation, None) => Err(ProtocolError::UnexpectedContinuation.into()),
            (OpCode::Continuation, Some(m)) => {
                let max = self.config.max_fragments as usize;
                if m.fragments >= max {
                    return Err(CapacityError::TooManyFragments { max }.into());
                }
                let size = m.buf.len() as u64 + h.payload_len;
                if !m.compressed && size > max_message as u64 {
                    return Err(CapacityError::MessageTooLarge { size, max: max_message }.into());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether the frame in progress carries uncompressed text, which is validated as it
    /// arrives so that bad UTF-8 fails fast.
    fn is_plain_text(&self, h: &FrameHeader) -> bool {
        match h.opcode {
            OpCode::Text => !h.rsv1,
            OpCode::Continuation => {
                self.message.as_ref().is_some_and(|m| m.kind == MessageKind::Text && !m.compressed)
            }
            _ => false,
        }
    }

    fn step(&mut self, input: &mut BytesMut) -> Result<Step, Error> {
        let mut frame = match self.frame {
            Some(frame) => frame,
            None => {
                let Some((header, hlen)) = FrameHeader::parse(input)? else {
                    return Ok(Step::NeedMore);
                };
                self.check_header(&header)?;
                input.advance(hlen);
                if matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                    self.utf8 = Utf8Validator::new();
                }
                FrameInProgress { header, processed: 0 }
            }
        };
        let header = frame.header;
        let len = header.payload_len as usize;
        if input.len() < len {
            if self.is_plain_text(&header) && input.len() > frame.processed {
                let seen = input.len();
                if let Some(key) = header.mask {
                    apply_mask(&mut input[frame.processed..seen], key, frame.processed);
                }
                self.utf8.feed(&input[frame.processed..seen]).map_err(|_| ProtocolError::InvalidUtf8)?;
                frame.processed = seen;
            }
            self.frame = Some(frame);
            return Ok(Step::NeedMore);
        }
        self.frame = None;
        let mut payload = input.split_to(len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload[frame.processed..], key, frame.processed);
        }
        let fresh = frame.processed;
        match header.opcode {
            OpCode::Text | OpCode::Binary => self.on_data(header, payload, fresh),
            OpCode::Continuation => self.on_continuation(header, payload, fresh),
            OpCode::Ping => {
                if self.state == State::Open {
                    let mut pending = self.pending.take().unwrap_or_default();
                    self.write_frame(OpCode::Pong, &payload, &mut pending);
                    self.pending = Some(pending);
                }
                Ok(Step::Event(Event::Ping(payload.freeze())))
            }
            OpCode::Pong => Ok(Step::Event(Event::Pong(payload.freeze()))),
            OpCode::Close => self.on_close(payload.freeze()),
        }
    }

    fn on_data(&mut self, h: FrameHeader, payload: BytesMut, fresh: usize) -> Result<Step, Error> {
        let kind = if h.opcode == OpCode::Text { MessageKind::Text } else { MessageKind::Binary };
        if h.fin && !h.rsv1 {
            if kind == MessageKind::Text {
                self.utf8.feed(&payload[fresh..]).map_err(|_| ProtocolError::InvalidUtf8)?;
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            return Ok(self.deliver(kind, payload.freeze()));
        }
        let mut message = Box::new(Partial { kind, compressed: h.rsv1, fragments: 1, buf: BytesMut::new() });
        if h.rsv1 {
            self.inflate(&mut message, &payload, h.fin)?;
        } else {
            if kind == MessageKind::Text {
                self.utf8.feed(&payload[fresh..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            // Keep the first fragment as it is; later fragments are appended to it.
            message.buf = payload;
        }
        if h.fin {
            return self.finish_message(*message);
        }
        self.message = Some(message);
        Ok(Step::Continue)
    }

    fn on_continuation(&mut self, h: FrameHeader, payload: BytesMut, fresh: usize) -> Result<Step, Error> {
        let Some(mut message) = self.message.take() else {
            return Err(ProtocolError::UnexpectedContinuation.into());
        };
        message.fragments += 1;
        if message.compressed {
            self.inflate(&mut message, &payload, h.fin)?;
        } else {
            if message.kind == MessageKind::Text {
                self.utf8.feed(&payload[fresh..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            message.buf.extend_from_slice(&payload);
        }
        if h.fin {
            return self.finish_message(*message);
        }
        self.message = Some(message);
        Ok(Step::Continue)
    }

    fn inflate(&mut self, message: &mut Partial, payload: &[u8], fin: bool) -> Result<(), Error> {
        let Some(deflate) = self.deflate.as_mut() else {
            return Err(ProtocolError::ReservedBits.into());
        };
        let before = message.buf.len();
        deflate.decompress(payload, fin, &mut message.buf, self.config.max_message_size as usize)?;
        if message.kind == MessageKind::Text {
            self.utf8.feed(&message.buf[before..]).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn finish_message(&mut self, message: Partial) -> Result<Step, Error> {
        if message.kind == MessageKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let Partial { kind, buf, .. } = message;
        Ok(self.deliver(kind, buf.freeze()))
    }

    fn deliver(&self, kind: MessageKind, payload: Bytes) -> Step {
        if self.state != State::Open {
            // After our Close, data is read (to find the peer's Close) but not handed out.
            return Step::Continue;
        }
        Step::Event(match kind {
            MessageKind::Text => Event::Text(payload),
            MessageKind::Binary => Event::Binary(payload),
        })
    }

    fn on_close(&mut self, payload: Bytes) -> Result<Step, Error> {
        // "If there is a body, the first two bytes of the body MUST be a 2-byte unsigned
        // integer ... Following the 2-byte integer, the body MAY contain UTF-8-encoded data"
        // (RFC 6455 §5.5.1)
        let (code, reason) = match payload.len() {
            0 => (CloseCode::NO_STATUS, Bytes::new()),
            1 => return Err(ProtocolError::CloseFrameTooShort.into()),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(ProtocolError::InvalidCloseCode(code.0).into());
                }
                let reason = payload.slice(2..);
                super::utf8::validate(&reason).map_err(|_| ProtocolError::InvalidUtf8)?;
                (code, reason)
            }
        };
        if self.state == State::Open {
            // "It SHOULD do so as soon as practical ... typically echos the status code it
            // received." An empty Close is answered with 1000.
            let reply = if code == CloseCode::NO_STATUS { CloseCode::NORMAL } else { code };
            let mut pending = self.pending.take().unwrap_or_default();
            self.write_close(reply, b"", &mut pending);
            self.pending = Some(pending);
        }
        self.state = State::Closed;
        self.message = None;
        Ok(Step::Event(Event::Close { code, reason }))
    }
}

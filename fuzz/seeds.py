#!/usr/bin/env python3
"""Writes the seed corpus: fuzz/corpus/<target>/seed-*. Run from anywhere; rewrites the seeds.

The input layouts (a leading mode byte, cut points ...) are documented on the entry points in
src/proto/fuzzing.rs and in fuzz/README.md.
"""
import pathlib

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7


def masked(first, payload):
    """A client frame: `first` byte, MASK, payload masked (payload under 126 bytes)."""
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([first, 0x80 | len(payload)]) + MASK + body


def plain(first, payload):
    return bytes([first, len(payload)]) + payload


HELLO_DEFLATE = bytes.fromhex("f248cdc9c90700")  # RFC 7692 §7.2.3.1
CLOSE_1000 = b"\x03\xe8"

RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

SEEDS = {
    "handshake_request": {
        "rfc6455": RFC_REQUEST,
        "deflate-offer": (
            b"GET http://example.com/ws?room=1 HTTP/1.1\r\nHost: example.com\r\n"
            b"Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, "
            b"permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits\r\n"
            b"Cookie: a=1; session=\"abc\"\r\nAuthorization: Bearer mF_9.B5f-4.1JqM==\r\n\r\n"
        )
        + masked(0x81, b"Hello"),
        "http10-post": b"POST /chat?x HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "version-8": RFC_REQUEST.replace(b"Version: 13", b"Version: 8"),
    },
    "handshake_response": {
        "101-deflate": (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
            b"client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9\r\n\r\n"
        )
        + plain(0x81, b"hi"),
        "101-plain": (
            b"HTTP/1.1 101 \r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        ),
        "404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    },
    # Mode byte: bit 0 client, bit 1 deflate, bit 2 default params, bit 3 tiny limits,
    # bits 4-6 chunking, bit 7 close after the first message.
    "connection": {
        "server-hello": b"\x00" + masked(0x81, b"Hello") + masked(0x88, CLOSE_1000),
        "server-fragments": b"\x10"
        + masked(0x01, b"Hel")
        + masked(0x89, b"ping")
        + masked(0x80, b"lo")
        + masked(0x02, b"\x00\x01")
        + masked(0x00, b"\x02")
        + masked(0x80, b"")
        + masked(0x88, b""),
        "server-deflate": b"\x72" + masked(0xC1, HELLO_DEFLATE) + masked(0x82, b"raw") + masked(0x88, CLOSE_1000),
        "client-deflate-takeover": b"\x07"
        + plain(0xC1, HELLO_DEFLATE)
        + plain(0xC1, bytes.fromhex("f200110000"))  # RFC 7692 §7.2.3.2, with context takeover
        + plain(0x41, HELLO_DEFLATE[:3])
        + plain(0x80, HELLO_DEFLATE[3:])
        + plain(0x88, CLOSE_1000 + b"bye"),
        "client-close-after-data": b"\xb1"
        + plain(0x81, "κόσμε".encode())
        + plain(0x89, b"Hello")
        + plain(0x8A, b"")
        + bytes([0x82, 0x7E, 0x00, 0x80])
        + bytes(range(128))
        + plain(0x88, b""),
        "tiny-limits": b"\x58" + masked(0x02, b"x" * 90) + masked(0x80, b"y" * 90) + masked(0x82, b"z" * 120),
    },
    # Mode byte (bits 0-1 frames, bit 2 client, bits 3-4 params, bits 5-6 level), two cut bytes.
    "deflate_inflate": {
        "hello": b"\x01\x60\xa0" + HELLO_DEFLATE,
        "stored": b"\x26\x40\xc0" + bytes.fromhex("000500faff48656c6c6f00"),  # RFC 7692 §7.2.3.3
        "bfinal": b"\x0c\x80\x80" + bytes.fromhex("f348cdc9c90700" "00"),  # §7.2.3.4
        "text": b"\x42\x30\xe0" + b"permessage-deflate round trip " * 6,
    },
    # Mode byte (low 3 bits: how many chunk lengths follow; bit 7: byte at a time).
    "utf8_incremental": {
        "kosme": b"\x03\x01\x02\x05" + "κόσμε 𝄞 héllo €".encode(),
        "bytewise": b"\x80" + "κόσμε".encode() + b"\xf4\x90\x80\x80",
        "surrogate": b"\x02\x01\x03ab\xed\xa0\x80c",
        "truncated": b"\x01\x00\xe2\x82",
    },
    "frame_header": {
        "masked-hello": masked(0x81, b"Hello"),
        "len16": bytes([0x82, 0x7E, 0x01, 0x00]),
        "len64-masked": bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]) + MASK + bytes(range(40)),
        "close": masked(0x88, CLOSE_1000),
        "compressed": masked(0xC1, HELLO_DEFLATE),
    },
}

for target, seeds in SEEDS.items():
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        assert len(data) < 1024, (target, name)
        (directory / f"seed-{name}").write_bytes(data)

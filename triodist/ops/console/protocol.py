"""The console's wire protocol, dnsdist's (1.7), without I/O: either client talks to
either server.

1. On connecting, the client sends a random 24-byte nonce; the server answers
   with its own.  Each side then derives two nonces from the pair: the one it
   reads with is the first half of its own nonce followed by the second half of
   the peer's, the one it writes with is the first half of the peer's followed
   by the second half of its own.  So each direction has its own nonce and the
   two ends agree on both.
2. Every message is a 4-byte big-endian length, then libsodium's
   ``crypto_secretbox`` of the text (the 16-byte MAC, then the ciphertext)
   under the shared key and that direction's nonce.  After each message the
   nonce's first four bytes, read as a big-endian counter, are incremented (a
   nonce is never used twice on a connection).
3. The client first sends an empty line and waits for the (empty) answer: a
   server that closes the connection instead holds another key.  A message of
   length 0 (not encrypted at all) is answered with length 0.

Imports nothing from triodist.
"""

from __future__ import annotations

import secrets
import struct

from nacl.bindings import crypto_secretbox, crypto_secretbox_open
from nacl.exceptions import CryptoError

KEY_BYTES = 32
NONCE_BYTES = 24
MAC_BYTES = 16

#: A message's length, before it on the wire.
LENGTH = struct.Struct("!I")
_COUNTER = struct.Struct("!I")


class ConsoleError(Exception):
    """A console conversation failed: closed, refused, or a message that does not decrypt."""


def merge_nonces(lower: bytes, higher: bytes) -> bytes:
    """The first half of ``lower`` and the second half of ``higher``."""
    half = NONCE_BYTES // 2
    return lower[:half] + higher[half:]


def increment_nonce(nonce: bytes) -> bytes:
    """The next nonce: the first four bytes are a big-endian counter (wrapping)."""
    (count,) = _COUNTER.unpack_from(nonce)
    return _COUNTER.pack((count + 1) & 0xFFFFFFFF) + nonce[_COUNTER.size :]


class SecretChannel:
    """One connection's encryption, either end, without I/O: ``seal`` what is sent,
    ``open`` what is received; each advances its own direction's nonce."""

    def __init__(self, key: bytes, ours: bytes, theirs: bytes) -> None:
        if len(key) != KEY_BYTES or len(ours) != NONCE_BYTES or len(theirs) != NONCE_BYTES:
            raise ValueError("a console key is 32 bytes and a nonce 24")
        self._key = key
        self._reading = merge_nonces(ours, theirs)
        self._writing = merge_nonces(theirs, ours)

    def seal(self, plaintext: bytes) -> bytes:
        # crypto_secretbox's output here is the MAC followed by the ciphertext: the
        # same bytes as crypto_secretbox_easy, which dnsdist uses.
        box = crypto_secretbox(plaintext, self._writing, self._key)
        self._writing = increment_nonce(self._writing)
        return box

    def open(self, box: bytes) -> bytes:
        if len(box) < MAC_BYTES:
            raise ConsoleError(f"Could not decrypt message of size {len(box)}")
        try:
            plaintext = crypto_secretbox_open(box, self._reading, self._key)
        except CryptoError:
            raise ConsoleError(
                "Could not decrypt message, please check that the key configured with "
                "setKey() is correct"
            ) from None
        self._reading = increment_nonce(self._reading)
        return plaintext


def frame(payload: bytes) -> bytes:
    """A message on the wire: its length (4 bytes, big-endian), then the message."""
    return LENGTH.pack(len(payload)) + payload


def text_to_wire(text: str) -> bytes:
    """Console text as bytes: UTF-8, with bytes that were not UTF-8 given back as they came."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def text_from_wire(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def check_crypto(key: bytes | None, message: bytes) -> str:
    """dnsdist's ``testCrypto()``: a round trip with two consecutive nonces."""
    if key is None or len(key) != KEY_BYTES:
        size = 0 if key is None else len(key)
        return (
            f"Crypto failed: Invalid encryption key of size {size}, use setKey() to set a valid key"
        )
    nonce = secrets.token_bytes(NONCE_BYTES)
    sender, receiver = SecretChannel(key, nonce, nonce), SecretChannel(key, nonce, nonce)
    try:
        for _ in range(2):
            if receiver.open(sender.seal(message)) != message:
                return "Crypto failed.. (the decoded value does not match the cleartext one)"
    except ConsoleError as exc:
        return f"Crypto failed: {exc}"
    return "Everything is ok!"

"""Encryption at rest for raw uploads: wrapped per-dataset keys and a streaming AEAD format.

Key hierarchy: the service's master key (``Settings.master_key()``) wraps one random data key per
dataset, and the wrapped key is stored with the dataset's row. Destroying the wrapped key makes
every file encrypted under that data key unreadable, backups included (cryptographic erase).

Stream format, version 1 (each chunk is AES-256-GCM ciphertext || 16-byte tag)::

    header   = b"DPS1" || version (1 byte) || salt (16 random bytes)
    file_key = HKDF-SHA256(data_key, salt=salt, info="dpsynth/stream/v1" || NUL || context)
    chunk_i  = AES-256-GCM(file_key, nonce=i as 12 bytes big-endian, plaintext_i,
                           aad=header || i (8 bytes) || final (1 byte) || context)

Every chunk holds exactly ``CHUNK_SIZE`` plaintext bytes except the last, which holds
``0..CHUNK_SIZE`` bytes (0 only for an empty stream) and always exists. We derive a per-file key
from a random salt rather than use a random nonce prefix with the data key: a counter nonce then
never repeats under one key however many files share a data key, and a chunk copied from another
file cannot authenticate. The index in nonce and AAD catches reordering, the final flag catches
truncation at a chunk boundary and appending, and the context binds a file to its dataset.
"""

from __future__ import annotations

import io
import os
import struct
from types import TracebackType
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
NONCE_SIZE = 12
MAGIC = b"DPS1"
VERSION = 1
HEADER = struct.Struct(">4sB16s")  # magic, version, salt
_STREAM_INFO = b"dpsynth/stream/v1\0"
_WRAP_VERSION = 1
_WRAP_AAD = b"dpsynth/wrap-key/v1\0"
_WRAPPED_SIZE = 1 + NONCE_SIZE + KEY_SIZE + TAG_SIZE


class DecryptionError(ValueError):
    """Ciphertext failed authentication: wrong key or context, or the data was modified."""


def new_data_key() -> bytes:
    """A fresh random 32-byte data key for one dataset."""
    return os.urandom(KEY_SIZE)


def _check_key(name: str, key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"the {name} must be {KEY_SIZE} bytes, got {len(key)}")


def _context_bytes(context: str) -> bytes:
    if not context:
        raise ValueError("context must be a non-empty string, such as the dataset id")
    return context.encode()


def wrap_key(master: bytes, data_key: bytes, *, context: str) -> bytes:
    """Encrypt ``data_key`` under ``master``; ``context`` (the dataset id) must match to unwrap.

    Returns:
        61 bytes: ``version || nonce || AES-256-GCM(data_key) || tag``.

    Raises:
        ValueError: a key is not 32 bytes or the context is empty.
    """
    _check_key("master key", master)
    _check_key("data key", data_key)
    nonce = os.urandom(NONCE_SIZE)
    sealed = AESGCM(master).encrypt(nonce, data_key, _WRAP_AAD + _context_bytes(context))
    return bytes([_WRAP_VERSION]) + nonce + sealed


def unwrap_key(master: bytes, wrapped: bytes, *, context: str) -> bytes:
    """Recover the 32-byte data key that :func:`wrap_key` wrapped with the same ``context``.

    Raises:
        DecryptionError: wrong master key or context, or ``wrapped`` is malformed or modified.
        ValueError: the master key is not 32 bytes or the context is empty.
    """
    _check_key("master key", master)
    aad = _WRAP_AAD + _context_bytes(context)
    if len(wrapped) != _WRAPPED_SIZE or wrapped[0] != _WRAP_VERSION:
        raise DecryptionError(
            f"the wrapped key for context {context!r} is malformed: expected {_WRAPPED_SIZE} bytes "
            f"starting with version {_WRAP_VERSION}, got {len(wrapped)} bytes"
        )
    try:
        return AESGCM(master).decrypt(wrapped[1 : 1 + NONCE_SIZE], wrapped[1 + NONCE_SIZE :], aad)
    except InvalidTag:
        raise DecryptionError(
            f"cannot unwrap the data key for context {context!r}: wrong master key or context, "
            "or the wrapped key was modified"
        ) from None


def _file_cipher(data_key: bytes, salt: bytes, context: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_STREAM_INFO + context)
    return AESGCM(hkdf.derive(data_key))


def _nonce(index: int) -> bytes:
    return struct.pack(">4xQ", index)


def _aad(header: bytes, index: int, final: bool, context: bytes) -> bytes:
    return header + struct.pack(">Q?", index, final) + context


def _read_exactly(raw: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at end of file (raw reads may return short)."""
    parts, got = [], 0
    while got < n:
        part = raw.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class EncryptingWriter:
    """A write-only binary stream that encrypts into ``raw_file`` one 1 MiB chunk at a time.

    At most one chunk of plaintext is held in memory. ``close()`` writes the final chunk; leaving a
    ``with`` block by an exception does not, so a half-written stream never decrypts. The raw file
    is not closed (like ``gzip.GzipFile(fileobj=...)``): its owner closes it.

    Args:
        raw_file: a binary file open for writing, e.g. from ``Storage.open_write``.
        data_key: the dataset's 32-byte data key.
        context: what the file belongs to (e.g. the dataset id); decrypting needs the same value.
    """

    def __init__(self, raw_file: IO[bytes], data_key: bytes, *, context: str) -> None:
        _check_key("data key", data_key)
        self._raw = raw_file
        self._context = _context_bytes(context)
        salt = os.urandom(HEADER.size - len(MAGIC) - 1)
        self._header = HEADER.pack(MAGIC, VERSION, salt)
        self._aead = _file_cipher(data_key, salt, self._context)
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        raw_file.write(self._header)

    @property
    def closed(self) -> bool:
        """Whether the stream was closed or aborted."""
        return self._closed

    def writable(self) -> bool:
        """Always true."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Accept all of ``data``, writing each chunk out as soon as more data follows it.

        Raises:
            ValueError: the stream is closed.
        """
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        accepted = len(view)
        while view:
            if len(self._buffer) == CHUNK_SIZE:
                self._emit(final=False)  # more data follows, so this full chunk is not the last
            take = CHUNK_SIZE - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
        return accepted

    def flush(self) -> None:
        """Flush the raw file; buffered plaintext stays until its chunk is complete."""
        self._raw.flush()

    def close(self) -> None:
        """Write the final chunk; closing twice is a no-op."""
        if self._closed:
            return
        self._emit(final=True)
        self._closed = True
        self._raw.flush()

    def abort(self) -> None:
        """Stop without the final chunk, so what was written fails to decrypt as truncated."""
        self._closed = True
        self._buffer = bytearray()

    def _emit(self, *, final: bool) -> None:
        aad = _aad(self._header, self._index, final, self._context)
        self._raw.write(self._aead.encrypt(_nonce(self._index), bytes(self._buffer), aad))
        self._index += 1
        self._buffer.clear()

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _open_stream(raw_file: IO[bytes], data_key: bytes, context: bytes) -> tuple[bytes, AESGCM]:
    """Read and check a stream's header; returns it and the stream's cipher."""
    _check_key("data key", data_key)
    header = _read_exactly(raw_file, HEADER.size)
    if len(header) < HEADER.size or not header.startswith(MAGIC):
        raise DecryptionError("not a dpsynth encrypted stream: the DPS1 header is missing")
    _, version, salt = HEADER.unpack(header)
    if version != VERSION:
        raise DecryptionError(f"encrypted stream version {version} is not supported; expected {VERSION}")
    return header, _file_cipher(data_key, salt, context)


class DecryptingReader(io.RawIOBase):
    """A readable binary stream over a file written by :class:`EncryptingWriter`.

    Each chunk is authenticated before any of its bytes are returned; tampering, a wrong key or
    context, or a missing final chunk raise :class:`DecryptionError`, and every later read raises
    again. A consumer must not act on what it read until it reached end of file without an error.
    Wrap it in ``io.BufferedReader`` for pandas, pyarrow or csv readers; it is not seekable. The
    arguments are those given to the writer; ``raw_file`` is positioned at the header and not closed.

    Raises:
        DecryptionError: the header is missing or of an unknown version.
    """

    def __init__(self, raw_file: IO[bytes], data_key: bytes, *, context: str) -> None:
        super().__init__()
        self._raw = raw_file
        self._context = _context_bytes(context)
        self._header, self._aead = _open_stream(raw_file, data_key, self._context)
        self._index = 0
        self._lookahead = b""
        self._plain = memoryview(b"")
        self._done = False
        self._error: DecryptionError | None = None

    def readable(self) -> bool:
        """Always true."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with verified plaintext; 0 means end of the stream.

        Raises:
            DecryptionError: the next chunk fails authentication or the stream is truncated.
        """
        if self.closed:
            raise ValueError("read from a closed DecryptingReader")
        if self._error is not None:
            raise DecryptionError(str(self._error))
        while not self._plain and not self._done:
            self._next_chunk()
        n = min(len(buffer), len(self._plain))
        memoryview(buffer).cast("B")[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def readall(self) -> bytes:
        """Read to the end of the stream (a chunk at a time rather than 8 KiB)."""
        parts = []
        while part := self.read(CHUNK_SIZE):
            parts.append(part)
        return b"".join(parts)

    def close(self) -> None:
        """Drop buffered plaintext; the raw file stays open for its owner to close."""
        self._plain = memoryview(b"")
        super().close()

    def _next_chunk(self) -> None:
        full = CHUNK_SIZE + TAG_SIZE
        block = self._lookahead + _read_exactly(self._raw, full - len(self._lookahead))
        # A full block is the last one only if nothing follows it: peek one byte to know.
        self._lookahead = _read_exactly(self._raw, 1) if len(block) == full else b""
        final = not self._lookahead
        try:
            if len(block) < TAG_SIZE:
                raise InvalidTag
            aad = _aad(self._header, self._index, final, self._context)
            plain = self._aead.decrypt(_nonce(self._index), block, aad)
        except InvalidTag:
            self._error = DecryptionError(
                f"encrypted stream for context {self._context.decode()!r} failed authentication at chunk "
                f"{self._index}: wrong data key or context, or the file was truncated or modified"
            )
            raise self._error from None
        self._index += 1
        self._done = final
        self._plain = memoryview(plain)


class SeekableDecryptingReader(io.RawIOBase):
    """Random access to a stream written by :class:`EncryptingWriter` (Parquet reads its footer first).

    Chunks have a fixed ciphertext size, so chunk ``i`` sits at a known offset and the last
    chunk is the one that ends the raw file; each chunk is authenticated (with its index
    and final flag) before any of its bytes are returned, so a truncated, reordered or
    modified file fails as it does with :class:`DecryptingReader`. Only the chunks a reader
    touches are checked. The raw file must be seekable; one chunk is cached.

    Raises:
        DecryptionError: the header is missing or the length cannot be a valid stream.
    """

    def __init__(self, raw_file: IO[bytes], data_key: bytes, *, context: str) -> None:
        super().__init__()
        self._raw = raw_file
        self._context = _context_bytes(context)
        self._header, self._aead = _open_stream(raw_file, data_key, self._context)
        body = raw_file.seek(0, io.SEEK_END) - HEADER.size
        full = CHUNK_SIZE + TAG_SIZE
        self._chunks = max(1, -(-body // full))
        self._last = body - (self._chunks - 1) * full
        if self._last < TAG_SIZE:
            raise DecryptionError("encrypted stream is truncated: its final chunk is missing")
        self._size = (self._chunks - 1) * CHUNK_SIZE + self._last - TAG_SIZE
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def tell(self) -> int:
        """The plaintext position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move within the plaintext, as ``io`` files do."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position with verified plaintext; 0 at the end."""
        if self.closed:
            raise ValueError("read from a closed SeekableDecryptingReader")
        if self._pos >= self._size:
            return 0
        index, offset = divmod(self._pos, CHUNK_SIZE)
        plain = self._chunk(index)
        n = min(len(buffer), len(plain) - offset)
        memoryview(buffer).cast("B")[:n] = plain[offset : offset + n]
        self._pos += n
        return n

    def close(self) -> None:
        """Drop the cached plaintext; the raw file stays open for its owner to close."""
        self._cached = None
        super().close()

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        final = index == self._chunks - 1
        self._raw.seek(HEADER.size + index * (CHUNK_SIZE + TAG_SIZE))
        block = _read_exactly(self._raw, self._last if final else CHUNK_SIZE + TAG_SIZE)
        try:
            plain = self._aead.decrypt(_nonce(index), block, _aad(self._header, index, final, self._context))
        except InvalidTag:
            raise DecryptionError(
                f"encrypted stream for context {self._context.decode()!r} failed authentication at chunk "
                f"{index}: wrong data key or context, or the file was truncated or modified"
            ) from None
        self._cached = (index, plain)
        return plain

import csv
import io
import random

import pandas as pd
import pytest

from service.core.crypto import (
    CHUNK_SIZE,
    HEADER,
    TAG_SIZE,
    DecryptingReader,
    DecryptionError,
    EncryptingWriter,
    SeekableDecryptingReader,
    new_data_key,
    unwrap_key,
    wrap_key,
)
from service.core.storage import Storage

CTX = "0b9e6a4c-4f31-4d55-9a38-2f8f3f6f0d11"
FULL = CHUNK_SIZE + TAG_SIZE
AUTH_ERROR = "failed authentication at chunk"


@pytest.fixture
def key():
    return new_data_key()


def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _encrypt(payload: bytes, key: bytes, context: str = CTX, pieces: int | None = None) -> bytes:
    raw = io.BytesIO()
    with EncryptingWriter(raw, key, context=context) as writer:
        if pieces is None:
            writer.write(payload)
        else:
            for start in range(0, len(payload), pieces):
                writer.write(payload[start : start + pieces])
    return raw.getvalue()


def _decrypt(blob: bytes, key: bytes, context: str = CTX) -> bytes:
    return DecryptingReader(io.BytesIO(blob), key, context=context).read()


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    body = blob[HEADER.size :]
    return blob[: HEADER.size], [body[i : i + FULL] for i in range(0, len(body), FULL)]


# --- key wrapping ---------------------------------------------------------------------------------


def test_new_data_key_is_32_random_bytes():
    keys = {new_data_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == 32 for k in keys)


def test_wrap_key_round_trip(key):
    master = new_data_key()
    wrapped = wrap_key(master, key, context=CTX)
    assert key not in wrapped
    assert wrapped != wrap_key(master, key, context=CTX)  # fresh nonce each time
    assert unwrap_key(master, wrapped, context=CTX) == key


def test_unwrap_key_wrong_master(key):
    wrapped = wrap_key(new_data_key(), key, context=CTX)
    with pytest.raises(DecryptionError, match="wrong master key or context"):
        unwrap_key(new_data_key(), wrapped, context=CTX)


def test_unwrap_key_wrong_context(key):
    master = new_data_key()
    wrapped = wrap_key(master, key, context=CTX)
    with pytest.raises(DecryptionError, match="cannot unwrap the data key for context 'other-dataset'"):
        unwrap_key(master, wrapped, context="other-dataset")


def test_unwrap_key_modified_or_malformed(key):
    master = new_data_key()
    wrapped = bytearray(wrap_key(master, key, context=CTX))
    wrapped[20] ^= 1
    with pytest.raises(DecryptionError, match="modified"):
        unwrap_key(master, bytes(wrapped), context=CTX)
    with pytest.raises(DecryptionError, match="malformed"):
        unwrap_key(master, bytes(wrapped[:-1]), context=CTX)


def test_decryption_error_is_value_error():
    assert issubclass(DecryptionError, ValueError)


def test_wrap_key_rejects_bad_arguments(key):
    with pytest.raises(ValueError, match="master key must be 32 bytes, got 16"):
        wrap_key(b"x" * 16, key, context=CTX)
    with pytest.raises(ValueError, match="data key must be 32 bytes, got 31"):
        wrap_key(key, b"x" * 31, context=CTX)
    with pytest.raises(ValueError, match="context must be a non-empty string"):
        wrap_key(key, key, context="")


# --- streaming format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, int(3.5 * CHUNK_SIZE)]
)
def test_round_trip(key, size):
    payload = _payload(size)
    blob = _encrypt(payload, key)
    n_chunks = max(1, -(-size // CHUNK_SIZE))
    assert len(blob) == HEADER.size + size + n_chunks * TAG_SIZE
    assert blob.startswith(b"DPS1\x01")
    assert _decrypt(blob, key) == payload


def test_round_trip_with_odd_write_and_read_sizes(key):
    payload = _payload(int(2.3 * CHUNK_SIZE), seed=1)
    blob = _encrypt(payload, key, pieces=100_003)
    reader = DecryptingReader(io.BytesIO(blob), key, context=CTX)
    parts = []
    while part := reader.read(77_777):
        parts.append(part)
    assert b"".join(parts) == payload
    assert reader.read() == b""


def test_same_payload_encrypts_differently(key):
    payload = _payload(1000)
    assert _encrypt(payload, key) != _encrypt(payload, key)


def test_writer_holds_at_most_one_chunk(key):
    class Recorder(io.BytesIO):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def write(self, data):
            self.sizes.append(len(data))
            return super().write(data)

    raw = Recorder()
    writer = EncryptingWriter(raw, key, context=CTX)
    written = 0
    for size in (int(3.5 * CHUNK_SIZE), 10, CHUNK_SIZE, 3 * CHUNK_SIZE + 5):
        writer.write(_payload(size))
        written += size
        out_plain = sum(s - TAG_SIZE for s in raw.sizes[1:])
        assert 0 < written - out_plain <= CHUNK_SIZE
    writer.close()
    assert raw.sizes[0] == HEADER.size
    assert all(s <= FULL for s in raw.sizes[1:])
    assert sum(raw.sizes[1:]) - TAG_SIZE * (len(raw.sizes) - 1) == written


def test_writer_closed_behaviour(key):
    raw = io.BytesIO()
    writer = EncryptingWriter(raw, key, context=CTX)
    assert writer.writable() and not writer.closed
    writer.write(b"abc")
    writer.flush()
    assert len(raw.getvalue()) == HEADER.size  # an incomplete chunk stays buffered
    writer.close()
    writer.close()  # idempotent
    assert writer.closed and not raw.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_writer_aborted_by_exception_does_not_decrypt(key):
    raw = io.BytesIO()
    with pytest.raises(RuntimeError), EncryptingWriter(raw, key, context=CTX) as writer:
        writer.write(_payload(int(1.5 * CHUNK_SIZE)))
        raise RuntimeError("upload failed")
    with pytest.raises(DecryptionError, match=AUTH_ERROR):
        _decrypt(raw.getvalue(), key)


def test_wrong_key(key):
    blob = _encrypt(_payload(10), key)
    with pytest.raises(DecryptionError, match="chunk 0: wrong data key or context"):
        _decrypt(blob, new_data_key())


def test_wrong_context(key):
    blob = _encrypt(_payload(10), key)
    with pytest.raises(DecryptionError, match="for context 'another-dataset' failed authentication"):
        _decrypt(blob, key, context="another-dataset")


@pytest.mark.parametrize("size", [0, 10, CHUNK_SIZE, 2 * CHUNK_SIZE, int(3.5 * CHUNK_SIZE)])
def test_truncated_by_dropping_last_chunk(key, size):
    header, chunks = _chunks(_encrypt(_payload(size), key))
    with pytest.raises(DecryptionError, match=AUTH_ERROR):
        _decrypt(header + b"".join(chunks[:-1]), key)


@pytest.mark.parametrize("cut", [1, TAG_SIZE, CHUNK_SIZE // 2])
def test_truncated_mid_chunk(key, cut):
    blob = _encrypt(_payload(int(2.5 * CHUNK_SIZE)), key)
    with pytest.raises(DecryptionError, match=AUTH_ERROR):
        _decrypt(blob[:-cut], key)


@pytest.mark.parametrize("cut", [0, 3, HEADER.size - 1])
def test_truncated_header(key, cut):
    blob = _encrypt(b"data", key)
    with pytest.raises(DecryptionError, match="DPS1 header is missing"):
        _decrypt(blob[:cut], key)


def test_unknown_version(key):
    blob = bytearray(_encrypt(b"data", key))
    blob[4] = 2
    with pytest.raises(DecryptionError, match="version 2 is not supported"):
        _decrypt(bytes(blob), key)


@pytest.mark.parametrize("offset", [5, HEADER.size, HEADER.size + FULL + 123, -1])
def test_flipped_byte(key, offset):
    blob = bytearray(_encrypt(_payload(int(2.5 * CHUNK_SIZE)), key))
    blob[offset] ^= 0x01
    with pytest.raises(DecryptionError, match=AUTH_ERROR):
        _decrypt(bytes(blob), key)


def test_swapped_chunks(key):
    header, chunks = _chunks(_encrypt(_payload(int(3.5 * CHUNK_SIZE)), key))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(DecryptionError, match="at chunk 0"):
        _decrypt(header + b"".join(chunks), key)


def test_chunk_from_another_file_same_key(key):
    header, chunks = _chunks(_encrypt(_payload(int(2.5 * CHUNK_SIZE)), key))
    _, other = _chunks(_encrypt(_payload(int(2.5 * CHUNK_SIZE), seed=9), key))
    chunks[1] = other[1]
    with pytest.raises(DecryptionError, match="at chunk 1"):
        _decrypt(header + b"".join(chunks), key)


@pytest.mark.parametrize("size", [10, CHUNK_SIZE])
def test_appended_data(key, size):
    blob = _encrypt(_payload(size), key)
    _, chunks = _chunks(blob)
    for extra in (b"x", chunks[-1], _chunks(_encrypt(_payload(size), key))[1][-1]):
        with pytest.raises(DecryptionError, match=AUTH_ERROR):
            _decrypt(blob + extra, key)


def test_reader_keeps_failing_after_an_error(key):
    header, chunks = _chunks(_encrypt(_payload(int(2.5 * CHUNK_SIZE)), key))
    chunks[1] = chunks[1][:-1] + bytes([chunks[1][-1] ^ 1])
    reader = DecryptingReader(io.BytesIO(header + b"".join(chunks)), key, context=CTX)
    assert len(reader.read(CHUNK_SIZE)) == CHUNK_SIZE  # chunk 0 is intact
    for _ in range(2):
        with pytest.raises(DecryptionError, match="at chunk 1"):
            reader.read(10)


def test_reader_is_a_raw_io_stream(key):
    reader = DecryptingReader(io.BytesIO(_encrypt(b"abc", key)), key, context=CTX)
    assert isinstance(reader, io.RawIOBase)
    assert reader.readable() and not reader.seekable()
    buf = bytearray(10)
    assert reader.readinto(buf) == 3 and buf[:3] == b"abc"
    assert reader.readinto(buf) == 0
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_pandas_read_csv_through_buffered_reader(key):
    rng = random.Random(3)
    df = pd.DataFrame(
        {
            "id": range(60_000),
            "age": [rng.randint(18, 90) for _ in range(60_000)],
            "city": [rng.choice(["Oslo", "Lyon", "Kyiv, UA", 'New "York"']) for _ in range(60_000)],
            "score": [rng.random() for _ in range(60_000)],
        }
    )
    payload = df.to_csv(index=False).encode()
    assert len(payload) > 2 * CHUNK_SIZE
    blob = _encrypt(payload, key, pieces=65_536)
    back = pd.read_csv(io.BufferedReader(DecryptingReader(io.BytesIO(blob), key, context=CTX)))
    pd.testing.assert_frame_equal(back, df)


def test_csv_module_and_storage_together(key, tmp_path):
    storage = Storage(tmp_path.as_uri())
    rows = [["a", "b"], ["1", "x"], ["2", "y"]]
    with storage.open_write("datasets/d1/raw.enc") as raw, EncryptingWriter(raw, key, context="d1") as enc:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        enc.write(text.getvalue().encode())
    stored = (tmp_path / "datasets" / "d1" / "raw.enc").read_bytes()[HEADER.size :]
    assert b"1,x" not in stored and b"a,b" not in stored  # one byte would match random bytes by chance
    with storage.open_read("datasets/d1/raw.enc") as raw:
        stream = io.TextIOWrapper(io.BufferedReader(DecryptingReader(raw, key, context="d1")), newline="")
        assert list(csv.reader(stream)) == rows


# --- random access ----------------------------------------------------------------------------------


def _seekable(blob: bytes, key: bytes, context: str = CTX) -> SeekableDecryptingReader:
    return SeekableDecryptingReader(io.BytesIO(blob), key, context=context)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, int(3.5 * CHUNK_SIZE)])
def test_seekable_reader_round_trip_and_seeks(key, size):
    payload = _payload(size)
    reader = io.BufferedReader(_seekable(_encrypt(payload, key), key))
    assert reader.read() == payload
    assert reader.seek(0, io.SEEK_END) == size
    for start, n in [(0, 10), (size // 2, CHUNK_SIZE + 7), (max(size - 5, 0), 100), (size, 1)]:
        reader.seek(start)
        assert reader.read(n) == payload[start : start + n]
    if size >= 3:
        reader.seek(-3, io.SEEK_END)
        assert reader.read() == payload[-3:]


def test_seekable_reader_feeds_parquet(key):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    table = pa.table(
        {"a": [rng.random() for _ in range(400_000)], "b": [f"v{i % 7}" for i in range(400_000)]}
    )
    raw = io.BytesIO()
    pq.write_table(table, raw, row_group_size=50_000)
    blob = _encrypt(raw.getvalue(), key)
    assert len(blob) > 2 * FULL
    read = pq.read_table(io.BufferedReader(_seekable(blob, key)))
    assert read.equals(table)


def test_seekable_reader_detects_tampering(key):
    blob = _encrypt(_payload(int(2.5 * CHUNK_SIZE)), key)
    header, chunks = _chunks(blob)
    truncated = _seekable(header + b"".join(chunks[:-1]), key)
    truncated.seek(CHUNK_SIZE)
    with pytest.raises(DecryptionError, match="at chunk 1"):
        truncated.read()
    swapped = _seekable(header + chunks[1] + chunks[0] + chunks[2], key)
    with pytest.raises(DecryptionError, match="at chunk 0"):
        swapped.read(1)
    with pytest.raises(DecryptionError, match=AUTH_ERROR):
        _seekable(blob, key, context="another-dataset").read(1)
    with pytest.raises(DecryptionError, match="final chunk is missing"):
        _seekable(blob[: HEADER.size + 3], key)

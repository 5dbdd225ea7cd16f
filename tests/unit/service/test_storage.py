import uuid

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from service.core.storage import MAX_KEY_LENGTH, Storage, validate_key

KEY = "datasets/0b9e6a4c-4f31-4d55-9a38-2f8f3f6f0d11/raw.enc"


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    if request.param == "local":
        yield Storage(tmp_path.as_uri())
        return
    url = f"memory://dpsynth-test-{uuid.uuid4().hex}"
    yield Storage(url)
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def _all_files(storage: Storage) -> list[str]:
    root = storage.path("x").rpartition("/")[0]
    return sorted(storage.fs.find(root)) if storage.fs.exists(root) else []


def test_url_routing_picks_backend(tmp_path):
    local = Storage(tmp_path.as_uri())
    memory = Storage(f"memory://dpsynth-test-{uuid.uuid4().hex}")
    assert isinstance(local.fs, LocalFileSystem)
    assert isinstance(memory.fs, MemoryFileSystem)
    with local.open_write("a/b.bin") as fh:
        fh.write(b"on disk")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"on disk"
    with memory.open_write("a/b.bin") as fh:
        fh.write(b"in memory")
    assert fsspec.filesystem("memory").cat_file(memory.path("a/b.bin")) == b"in memory"
    memory.delete_prefix("a")


def test_plain_local_path_is_accepted(tmp_path):
    storage = Storage(str(tmp_path))
    with storage.open_write("k") as fh:
        fh.write(b"x")
    assert (tmp_path / "k").read_bytes() == b"x"


def test_open_write_round_trip(storage):
    payload = bytes(range(256)) * 1000
    with storage.open_write(KEY) as fh:
        fh.write(payload)
    assert storage.exists(KEY)
    assert storage.size(KEY) == len(payload)
    with storage.open_read(KEY) as fh:
        assert fh.read() == payload
    assert _all_files(storage) == [storage.path(KEY)]


def test_open_write_creates_parent_dirs(tmp_path):
    storage = Storage((tmp_path / "not" / "yet").as_uri())
    with storage.open_write("deep/er/key.bin") as fh:
        fh.write(b"1")
    assert (tmp_path / "not" / "yet" / "deep" / "er" / "key.bin").read_bytes() == b"1"


def test_open_write_is_invisible_until_done(storage):
    with storage.open_write(KEY) as fh:
        fh.write(b"old")
    with storage.open_write(KEY) as fh:
        fh.write(b"new")
        fh.flush()
        with storage.open_read(KEY) as reader:
            assert reader.read() == b"old"
    with storage.open_read(KEY) as reader:
        assert reader.read() == b"new"
    assert _all_files(storage) == [storage.path(KEY)]


def test_open_write_on_exception_leaves_nothing(storage):
    with pytest.raises(RuntimeError, match="boom"), storage.open_write(KEY) as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert not storage.exists(KEY)
    assert _all_files(storage) == []


def test_open_write_on_exception_keeps_previous_object(storage):
    with storage.open_write(KEY) as fh:
        fh.write(b"previous")
    with pytest.raises(KeyboardInterrupt), storage.open_write(KEY) as fh:
        fh.write(b"partial")
        raise KeyboardInterrupt
    with storage.open_read(KEY) as fh:
        assert fh.read() == b"previous"
    assert _all_files(storage) == [storage.path(KEY)]


def test_open_read_missing_raises(storage):
    with pytest.raises(FileNotFoundError):
        storage.open_read("nothing/here")
    with pytest.raises(FileNotFoundError):
        storage.size("nothing/here")


def test_exists_is_false_for_prefix_and_missing(storage):
    with storage.open_write(KEY) as fh:
        fh.write(b"x")
    assert not storage.exists("datasets")
    assert not storage.exists("missing.bin")


def test_delete(storage):
    with storage.open_write(KEY) as fh:
        fh.write(b"x")
    storage.delete(KEY)
    assert not storage.exists(KEY)
    storage.delete(KEY)  # missing is fine


def test_delete_prefix_is_a_path_not_a_string_prefix(storage):
    for key in ("datasets/ab/raw.enc", "datasets/ab/sub/model.pt", "datasets/abc/raw.enc", "datasets/ab.enc"):
        with storage.open_write(key) as fh:
            fh.write(b"x")
    storage.delete_prefix("datasets/ab")
    assert not storage.exists("datasets/ab/raw.enc")
    assert not storage.exists("datasets/ab/sub/model.pt")
    assert storage.exists("datasets/abc/raw.enc")
    assert storage.exists("datasets/ab.enc")
    storage.delete_prefix("datasets/ab")  # missing is fine
    storage.delete_prefix("never/written")


@pytest.mark.parametrize(
    "key",
    [
        "datasets/0b9e6a4c-4f31-4d55-9a38-2f8f3f6f0d11/raw.enc",
        "models/job_12/generator.v2.pt",
        "releases/R-1/synthetic.parquet",
        "a",
        "x" * MAX_KEY_LENGTH,
    ],
)
def test_validate_key_accepts(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "..",
        "../outside",
        "datasets/../../outside",
        "datasets/./raw.enc",
        "datasets//raw.enc",
        "datasets/",
        ".hidden",
        "datasets/.raw.enc.tmp",
        "with space",
        "back\\slash",
        "colon:name",
        "ümlaut",
        "new\nline",
        "x" * (MAX_KEY_LENGTH + 1),
    ],
)
def test_validate_key_rejects(key):
    with pytest.raises(ValueError, match="storage key .* is invalid"):
        validate_key(key)


def test_validate_key_rejects_non_string():
    with pytest.raises(ValueError, match="is invalid"):
        validate_key(None)  # type: ignore[arg-type]


def test_every_method_validates_keys(storage, tmp_path):
    bad = "../escape"
    with pytest.raises(ValueError), storage.open_write(bad):
        pass
    for call in (storage.open_read, storage.exists, storage.size, storage.delete, storage.delete_prefix):
        with pytest.raises(ValueError, match="is invalid"):
            call(bad)
    assert not (tmp_path.parent / "escape").exists()

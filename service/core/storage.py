"""One interface over local disk and S3-compatible object stores for uploads, models and releases.

The backend is chosen by URL (``file:///srv/dpsynth``, ``s3://bucket/prefix``, ``memory://x`` in
tests) through fsspec, so the embedded and scaled-out deployments run the same code. Keys are the
service's own strings such as ``datasets/<uuid>/raw.enc``, never user filenames; they are validated
anyway so that no key can escape the storage root.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MAX_KEY_LENGTH = 1024  # S3's limit on an object key
# A part may not start with "." so that ".", ".." and hidden names are impossible; the
# hidden namespace is where open_write keeps its temporary files.
_KEY_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def validate_key(key: str) -> str:
    """Check that ``key`` is a safe relative storage key and return it unchanged.

    Args:
        key: ``/``-separated parts, each of ``A-Z a-z 0-9 . _ -`` and not starting with ``.``.

    Returns:
        The key itself.

    Raises:
        ValueError: the key is empty, too long, absolute, has an empty, ``.``-leading or ``..``
            part, or uses any other character.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"storage key {key!r} is invalid: it must be a non-empty string of at most {MAX_KEY_LENGTH} chars"
        )
    if not all(_KEY_PART.fullmatch(part) for part in key.split("/")):
        raise ValueError(
            f"storage key {key!r} is invalid: use '/'-separated non-empty parts of A-Z a-z 0-9 . _ - "
            "that do not start with '.' (no absolute paths, no '..')"
        )
    return key


class Storage:
    """Binary objects under one root URL, on local disk or any fsspec backend.

    Args:
        url: an fsspec URL or local path for the root, e.g. ``Settings().storage``.
        **storage_options: passed to the fsspec filesystem (e.g. ``endpoint_url`` for S3-compatible
            stores); credentials usually come from the environment instead.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self._root = root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)

    def path(self, key: str) -> str:
        """The backend path of ``key`` (for logs and tests; callers should use keys).

        Raises:
            ValueError: ``key`` is not a valid storage key.
        """
        return f"{self._root}/{validate_key(key)}"

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """Write ``key`` atomically: readers see the old object or the whole new one, never a part.

        The data goes to a hidden temporary sibling that is moved into place only when the
        ``with`` block ends without an exception; on an exception it is removed and any previous
        object under ``key`` is left untouched.

        Args:
            key: the storage key to write.

        Yields:
            A binary file open for writing.

        Raises:
            ValueError: ``key`` is not a valid storage key.
        """
        final = self.path(key)
        parent, _, name = final.rpartition("/")
        # Same directory as the target, so a local rename never crosses file systems.
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            if self._local:
                self.fs.makedirs(parent, exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                yield fh
                if self._local:
                    # Without fsync a crash soon after the rename can leave an empty file.
                    fh.flush()
                    os.fsync(fh.fileno())
            if self._local:
                os.replace(tmp, final)  # atomic; unlike shutil.move it never nests into a directory
            else:
                self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)
            raise

    def open_read(self, key: str) -> IO[bytes]:
        """Open ``key`` for reading; the caller closes the returned seekable binary file.

        Raises:
            ValueError: ``key`` is not a valid storage key.
            FileNotFoundError: nothing is stored under ``key``.
        """
        fh: IO[bytes] = self.fs.open(self.path(key), "rb")
        return fh

    def exists(self, key: str) -> bool:
        """Whether an object (not merely a prefix) is stored under ``key``.

        Raises:
            ValueError: ``key`` is not a valid storage key.
        """
        return bool(self.fs.isfile(self.path(key)))

    def size(self, key: str) -> int:
        """The size in bytes of the object under ``key``.

        Raises:
            ValueError: ``key`` is not a valid storage key.
            FileNotFoundError: nothing is stored under ``key``.
        """
        return int(self.fs.size(self.path(key)))

    def delete(self, key: str) -> None:
        """Delete the object under ``key``; a missing object is not an error.

        Raises:
            ValueError: ``key`` is not a valid storage key.
        """
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def delete_prefix(self, prefix: str) -> None:
        """Delete ``prefix`` and every object below ``prefix/``; nothing there is not an error.

        The prefix is a whole path, not a string prefix: ``datasets/ab`` never touches
        ``datasets/abc``. Leftover temporary files of interrupted writes below it go too.

        Raises:
            ValueError: ``prefix`` is not a valid storage key (so the root itself cannot be wiped).
        """
        path = self.path(prefix)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

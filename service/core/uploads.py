"""Raw uploads: streamed to storage encrypted, then checked to be a table, or erased.

The web process never holds a whole upload: chunks are encrypted as they arrive
(``crypto.EncryptingWriter``) and the check reads the stored file back through the
decrypting reader in bounded batches (pyarrow's streaming CSV reader; Parquet metadata
plus one row group). Plaintext never touches the disk. Any failure deletes what was
written, so a rejected upload leaves nothing behind.

Column kinds are inferred from the first rows only: kinds are structure, the custodian
reviews them, and nothing about values is kept.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any, Literal

import anyio
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.schema import infer_schema
from service.core import crypto
from service.core.errors import PayloadTooLargeError, UploadRejectedError
from service.core.storage import Storage

FileFormat = Literal["csv", "parquet"]
INFER_ROWS = 10_000
_BLOCK = 1 << 20


@dataclass(frozen=True)
class StoredUpload:
    """What the service keeps about an accepted upload."""

    storage_key: str
    wrapped_key: bytes
    size_bytes: int
    sha256: str
    row_count: int
    inferred_schema: dict[str, Any]


def raw_key(dataset_id: str) -> str:
    """Storage key of a dataset's encrypted raw upload."""
    return f"datasets/{dataset_id}/raw.enc"


def open_raw(storage: Storage, key: str, data_key: bytes, *, dataset_id: str) -> IO[bytes]:
    """The decrypted raw upload as a seekable binary stream (the caller closes it)."""
    return io.BufferedReader(
        crypto.SeekableDecryptingReader(storage.open_read(key), data_key, context=dataset_id), _BLOCK
    )


async def store_upload(
    chunks: AsyncIterator[bytes],
    *,
    storage: Storage,
    master_key: bytes,
    dataset_id: str,
    file_format: FileFormat,
    max_bytes: int,
) -> StoredUpload:
    """Encrypt ``chunks`` into storage, check the result is a table, and describe it.

    Raises:
        PayloadTooLargeError: more than ``max_bytes`` arrived (the rest is not read).
        UploadRejectedError: empty, not UTF-8, not a table, duplicate column names.
    """
    key = raw_key(dataset_id)
    data_key = crypto.new_data_key()
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            storage.open_write(key) as raw,
            crypto.EncryptingWriter(raw, data_key, context=dataset_id) as out,
        ):
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(f"the upload is larger than the limit of {max_bytes:,} bytes")
                digest.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _BLOCK:
                    await anyio.to_thread.run_sync(out.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await anyio.to_thread.run_sync(out.write, b"".join(pending))
        if size == 0:
            raise UploadRejectedError("the upload is empty")
        row_count, schema = await anyio.to_thread.run_sync(
            lambda: inspect_table(storage, key, data_key, dataset_id=dataset_id, file_format=file_format)
        )
    except BaseException:
        storage.delete(key)
        storage.delete_prefix(f"datasets/{dataset_id}")  # and the folder, so no trace is left
        raise
    return StoredUpload(
        storage_key=key,
        wrapped_key=crypto.wrap_key(master_key, data_key, context=dataset_id),
        size_bytes=size,
        sha256=digest.hexdigest(),
        row_count=row_count,
        inferred_schema=schema,
    )


def _check_names(names: list[str]) -> None:
    dupes = sorted(name for name, count in Counter(names).items() if count > 1)
    if dupes:
        raise UploadRejectedError(f"duplicate column names {dupes}; every column needs its own name")
    if any(not str(name).strip() for name in names):
        raise UploadRejectedError("a column has an empty name; give every column a header")


def _check_types(schema: pa.Schema, file_format: FileFormat) -> None:
    for field in schema:
        kind = field.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
            if file_format == "csv":
                raise UploadRejectedError(
                    f"column {field.name!r} is not UTF-8 text; re-save the file as UTF-8 CSV"
                )
            raise UploadRejectedError(
                f"column {field.name!r} holds raw bytes ({kind}); only numbers, text, booleans and dates "
                "can be synthesized"
            )
        if pa.types.is_nested(kind):
            raise UploadRejectedError(
                f"column {field.name!r} holds nested values ({kind}); flatten it into plain columns"
            )


# Parser messages quote the offending row or value; the service never echoes raw data.
_QUOTED_DATA = (re.compile(r"(got \d+ ?):.*$"), re.compile(r"(invalid value)\b.*$"))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for pattern in _QUOTED_DATA:
        text = pattern.sub(r"\1", text)
    return text[:300]


def inspect_table(
    storage: Storage, key: str, data_key: bytes, *, dataset_id: str, file_format: FileFormat
) -> tuple[int, dict[str, Any]]:
    """Row count and inferred kinds of a stored upload, read in bounded batches.

    Raises:
        UploadRejectedError: the file is not a usable table.
    """
    with open_raw(storage, key, data_key, dataset_id=dataset_id) as fh:
        try:
            if file_format == "csv":
                rows, sample = _scan_csv(fh)
            else:
                rows, sample = _scan_parquet(fh)
        except crypto.DecryptionError:
            raise
        except UploadRejectedError:
            raise
        except UnicodeDecodeError:
            raise UploadRejectedError("the file is not UTF-8 text; re-save it as UTF-8 CSV") from None
        except (pa.ArrowException, ValueError, OSError) as exc:
            reason = _reason(exc)
            if "utf8" in reason.lower() or "utf-8" in reason.lower():
                raise UploadRejectedError("the file is not UTF-8 text; re-save it as UTF-8 CSV") from None
            if "Empty CSV file" in reason:  # pyarrow's words for a lone line without a newline
                raise UploadRejectedError("the table has no data rows") from None
            raise UploadRejectedError(f"the file is not a readable {file_format} table: {reason}") from None
    if rows == 0 or sample.num_columns == 0:
        raise UploadRejectedError("the table has no data rows")
    frame = sample.to_pandas()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropped identifiers show up in the schema itself
        schema = infer_schema(frame)
    return rows, {
        "target": None,
        "columns": {name: {"kind": spec.kind.value} for name, spec in schema.columns.items()},
    }


def _scan_csv(fh: IO[bytes]) -> tuple[int, pa.Table]:
    """Count rows reading every cell as text, then take the typed sample from the first rows.

    Types are inferred from the first block only, so a column of numbers that turns to text
    further down is a valid table, not a conversion error; every cell must be UTF-8.
    """
    options = pacsv.ReadOptions(block_size=_BLOCK)
    names = pacsv.open_csv(fh, read_options=options).schema.names
    _check_names(names)
    fh.seek(0)
    as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    rows = sum(batch.num_rows for batch in pacsv.open_csv(fh, read_options=options, convert_options=as_text))
    fh.seek(0)
    typed = pacsv.open_csv(fh, read_options=options)  # types come from the first block
    _check_types(typed.schema, "csv")
    first = next(iter(typed), None)  # only that block: a later one may not fit its types
    head = [first.slice(0, INFER_ROWS)] if first is not None else []
    return rows, pa.Table.from_batches(head, schema=typed.schema)


def _scan_parquet(fh: IO[bytes]) -> tuple[int, pa.Table]:
    pf = pq.ParquetFile(fh)
    _check_names(pf.schema_arrow.names)
    _check_types(pf.schema_arrow, "parquet")
    rows = pf.metadata.num_rows
    first = next(pf.iter_batches(batch_size=INFER_ROWS), None)  # one batch, not a whole row group
    sample = pa.Table.from_batches([first]) if first is not None else pf.schema_arrow.empty_table()
    return rows, sample

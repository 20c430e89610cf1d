"""Downloading a completed export's file to disk, resuming a cut download, and checking the file.

The file is streamed to disk in chunks, so memory stays flat whatever its size. A download cut
short goes on from the bytes already on disk with `Range: bytes=<have>-` (Marketo answers 206
with `Content-Range`). Before anything of it is read, the file is checked against what the job's
status reports: `fileSize`, `fileChecksum` (`sha256:<hex>`) and `numberOfRecords`. A file that
does not match is deleted, so that the next attempt starts clean.
"""

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional

import requests

from marketo_source.bulk.csv_file import count_records
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoBulkFileError, MarketoBulkFileGone, MarketoTransientError

logger = logging.getLogger("marketo_source")

FILE_PATH = "/bulk/v1/activities/export/{export_id}/file.json"
CHUNK_BYTES = 1 << 20
"""Bytes read from the network, hashed and written at a time."""
DEFAULT_MAX_RESUMES = 8
"""Downloads cut short in a row that are resumed before the download gives up."""

_CUT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class ExportFile:
    """What a completed job's status says of its file.

    Attributes:
        export_id: The job's exportId.
        size: `fileSize`, in bytes.
        sha256: The hex digest of `fileChecksum` (`sha256:<hex>`).
        records: `numberOfRecords`, the file's rows under its header.
    """

    export_id: str
    size: int
    sha256: str
    records: int

    @classmethod
    def of_status(cls, status: Mapping[str, Any]) -> "ExportFile":
        """The file of a Completed job, from its status (an item of status.json's `result`).

        Raises:
            MarketoBulkFileError: The status lacks a field, or its checksum is not SHA-256.
        """
        export_id = str(status.get("exportId"))
        checksum = status.get("fileChecksum")
        algorithm, _, digest = checksum.partition(":") if isinstance(checksum, str) else ("", "", "")
        size, records = status.get("fileSize"), status.get("numberOfRecords")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise MarketoBulkFileError(f"export {export_id}: fileChecksum {checksum!r} is not sha256:<hex>")
        if not isinstance(size, int) or not isinstance(records, int):
            raise MarketoBulkFileError(
                f"export {export_id}: the status gives fileSize {size!r} and numberOfRecords {records!r}, "
                "not whole numbers"
            )
        return cls(export_id, size, digest.lower(), records)


def download_export(
    client: MarketoClient, export: ExportFile, target: Path, max_resumes: int = DEFAULT_MAX_RESUMES
) -> Path:
    """Downloads an export's file to `target` and checks it; returns `target`.

    The bytes go first to `<target>.part`, which a later call resumes if it is there. `target`
    appears only once the file matched its job.

    Args:
        client: The client every call goes through (auth, rate limit, daily gate, retries).
        export: The file, as the completed job's status describes it.
        target: Where the checked file goes.
        max_resumes: Downloads cut short in a row, without a byte gained, that are resumed.

    Raises:
        MarketoBulkFileGone: Marketo answers 404: the file is gone; create the job again.
        MarketoBulkFileError: The file does not match its job, or Marketo answered something
            other than the file; the partial file is deleted.
        MarketoTransientError: The download kept being cut short; the partial file is kept for
            the next attempt.
    """
    part = target.with_name(target.name + ".part")
    path = FILE_PATH.format(export_id=export.export_id)
    fruitless = 0
    while True:
        before = _size(part)
        if _fetch(client, path, export, part):
            break
        have = _size(part)
        fruitless = 0 if have > before else fruitless + 1
        if fruitless > max_resumes:
            raise MarketoTransientError(
                f"export {export.export_id}: the download of its file was cut short {fruitless} times in a row "
                f"at {have} of {export.size} bytes; the bytes so far are kept, run the pipeline again later.",
                endpoint=path,
            )
        logger.warning("export %s: download cut at %d of %d bytes; resuming", export.export_id, have, export.size)
    _check(export, part)
    part.replace(target)
    return target


def _fetch(client: MarketoClient, path: str, export: ExportFile, part: Path) -> bool:
    """Appends to `part` what the server sends from where it ends; False when cut short."""
    have = _size(part)
    if have > export.size:
        part.unlink()  # not this file's beginning: more bytes than the file has
        have = 0
    if have == export.size:
        return True
    # Byte ranges and fileSize count the file's own bytes, not those of a compressed transfer.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    response = client.get_file(path, headers)
    with response:
        if response.status_code == 416:
            return True  # nothing past `have` on the server: the check tells whether the file is whole
        start = _start_of(response, export, part, path)
        with open(part, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            if not _copy(response, out):
                return False
    return _size(part) >= export.size  # a body that ended early without an error was cut as well


def _start_of(response: requests.Response, export: ExportFile, part: Path, path: str) -> int:
    """Where the answer's bytes go in the file: 0 for the whole file, the range's start for 206."""
    if response.status_code in (404, 410):
        _drop(part)
        raise MarketoBulkFileGone(
            f"export {export.export_id}: Marketo no longer has its file (HTTP {response.status_code}); "
            "create the export job again.",
            code=str(response.status_code), endpoint=path,
        )
    if response.status_code == 200:
        return 0
    content_range = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if response.status_code == 206 and content_range and int(content_range.group(1)) <= _size(part):
        return int(content_range.group(1))
    _drop(part)
    raise MarketoBulkFileError(
        f"export {export.export_id}: asked for bytes {_size(part)}- of its file, Marketo answered HTTP "
        f"{response.status_code} with Content-Range {response.headers.get('Content-Range')!r}; "
        "the partial file is deleted.",
        code=str(response.status_code), endpoint=path,
    )


def _copy(response: requests.Response, out: BinaryIO) -> bool:
    """Writes the body to `out` chunk by chunk; False when the connection broke before its end."""
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            out.write(chunk)
    except _CUT:
        return False
    return True


def _check(export: ExportFile, part: Path) -> None:
    """Raises `MarketoBulkFileError`, and deletes the file, unless it matches its job."""
    size = _size(part)
    problem: Optional[str] = None
    if size != export.size:
        problem = f"is {size} bytes, its job says fileSize {export.size}"
    elif (digest := _sha256(part)) != export.sha256:
        problem = f"has SHA-256 {digest}, its job says fileChecksum sha256:{export.sha256}"
    else:
        try:
            records = count_records(part)
        except MarketoBulkFileError as error:
            problem = str(error)
        else:
            if records != export.records:
                problem = f"holds {records} records, its job says numberOfRecords {export.records}"
    if problem is not None:
        _drop(part)
        raise MarketoBulkFileError(
            f"export {export.export_id}: the downloaded file {problem}; it is deleted, download it again."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _drop(path: Path) -> None:
    path.unlink(missing_ok=True)

"""Storage: one place that maps a URI to a filesystem.

A URI is a local path, ``file:///abs/path`` or ``s3://bucket/prefix``. S3 endpoint and
credentials come from the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``), the AWS profile (``AWS_PROFILE``, ``~/.aws``) or the instance role; they never
appear in URIs, logs or metadata written here. The region resolves from ``AWS_REGION``,
``AWS_DEFAULT_REGION``, the endpoint's host name (``s3.eu-west-1.amazonaws.com``), the AWS profile, and on
AWS itself the bucket's own region; an S3-compatible server with none of these gets the SDK's default.

Every write is atomic: local files are written to a temporary name in the same folder and
renamed. S3 objects are written with botocore (pyarrow's output streams complete a multipart upload
when closed, even on an error): one PutObject up to ``S3_PART_SIZE``, a multipart upload above it
that is completed only after the last part and aborted on any error. An object only becomes visible
whole; a failed write leaves nothing, and a killed writer leaves only an incomplete multipart upload,
which S3 never shows as an object (a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` reclaims
its parts).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from typing import BinaryIO, Iterator
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import StorageError
from .s3region import endpoint as _endpoint
from .s3region import s3_region

_CREDENTIAL_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+(?::[^/@\s]+)?@")
_SECRET_VALUE_KEYS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def is_remote(uri: str) -> bool:
    """True for ``s3://`` URIs."""
    return str(uri).startswith("s3://")


def absolute(uri):
    """``uri`` with a local path made absolute (``s3://`` and None unchanged).

    Jobs resolve their paths on the driver: Ray workers run in other folders (Ray Train's
    in the trial's), where a relative path would point elsewhere.
    """
    if uri is None or is_remote(str(uri)):
        return uri
    return _local_path(str(uri))


def _local_path(uri: str) -> str:
    uri = str(uri)
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    return os.path.abspath(os.path.expanduser(uri))


S3_PART_SIZE = 16 << 20  # bytes per multipart part (S3: 5 MiB to 5 GiB, at most 10,000 parts)
_MAX_PARTS = 10_000
def _credentials_key() -> int:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    return hash(tuple(os.environ.get(k) for k in keys))


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None, key_hash: int) -> pafs.S3FileSystem:
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "https"
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem(bucket: str | None = None) -> pafs.S3FileSystem:
    """The S3 filesystem configured from the AWS environment (region as in ``s3_region(bucket)``)."""
    return _s3_filesystem(_endpoint(), s3_region(bucket), _credentials_key())


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str | None, key_hash: int, pid: int):
    # botocore reads the credentials itself (environment, profile, instance role); one client per
    # process (``pid``: clients do not survive a fork) and per setting.
    import botocore.session
    from botocore.config import Config

    config = Config(retries={"mode": "standard"}, connect_timeout=10,
                    # S3-compatible servers (MinIO, SeaweedFS, Ceph) answer path-style requests;
                    # newer botocore checksums are not supported by all of them
                    s3={"addressing_style": "path"} if endpoint else None,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return botocore.session.Session().create_client("s3", region_name=region, endpoint_url=endpoint, config=config)


def s3_client(bucket: str | None = None):
    """A botocore S3 client configured like ``s3_filesystem`` (what the S3 writes use)."""
    return _s3_client(_endpoint(), s3_region(bucket), _credentials_key(), os.getpid())


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map a URI to ``(pyarrow filesystem, path within it)``."""
    uri = str(uri)
    if is_remote(uri):
        path = uri[len("s3://"):].rstrip("/")
        if not path:
            raise StorageError(f"{redact(uri)}: an S3 URI needs a bucket (s3://bucket/prefix)")
        if "@" in path.split("/", 1)[0]:
            raise StorageError(f"{redact(uri)}: credentials inside an S3 URI are refused (they would reach logs "
                               f"and catalogs); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
        return s3_filesystem(path.split("/", 1)[0]), path
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"{redact(uri)}: unsupported URI scheme (use a local path, file:// or s3://)")
    return pafs.LocalFileSystem(), _local_path(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI (``/`` separated for S3, os.path for local)."""
    base = str(base)
    if is_remote(base):
        return posixpath.join(base.rstrip("/"), *[p.strip("/") for p in parts])
    if base.startswith("file://"):
        base = _local_path(base)
    return os.path.join(base, *parts)


def parent(uri: str) -> str:
    """The URI of the folder that holds ``uri``."""
    uri = str(uri).rstrip("/")
    if is_remote(uri):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(_local_path(uri))


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def _bucket(uri: str) -> str:
    return str(uri)[len("s3://"):].split("/", 1)[0] if is_remote(uri) else ""


def _wrap(uri: str, exc: BaseException) -> BaseException:
    """Turn filesystem errors into messages that name the URI (and bucket for S3)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(f"{redact(uri)}: no such file or folder")
    text = redact(str(exc))
    if is_remote(uri):
        bucket = _bucket(uri)
        low = text.lower()
        if any(s in low for s in ("access_denied", "accessdenied", "invalid_access_key", "invalidaccesskey",
                                  "signaturedoesnotmatch", "signature_does_not_match", "forbidden", "403")):
            return StorageError(f"{redact(uri)}: access denied to bucket '{bucket}' (check the credentials "
                                f"in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {text}")
        if "nosuchbucket" in low or "no_such_bucket" in low or "bucket does not exist" in low:
            return StorageError(f"{redact(uri)}: bucket '{bucket}' does not exist")
        if "connect" in low or "curl" in low or "timeout" in low:
            endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
            return StorageError(f"{redact(uri)}: cannot reach the S3 endpoint {endpoint} for bucket '{bucket}': {text}")
        return StorageError(f"{redact(uri)}: S3 error on bucket '{bucket}': {text}")
    return StorageError(f"{redact(uri)}: {text}")


def _is_storage_error(exc: BaseException) -> bool:  # botocore's errors (ClientError...) are no OSError
    return isinstance(exc, (OSError, pa.ArrowException)) or type(exc).__module__.startswith("botocore.")


@contextlib.contextmanager
def _errors(uri: str):
    try:
        yield
    except Exception as exc:
        if not _is_storage_error(exc):
            raise
        raise _wrap(uri, exc) from exc


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    with _errors(uri):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def isdir(uri: str) -> bool:
    fs, path = resolve(uri)
    with _errors(uri):
        return fs.get_file_info(path).type == pafs.FileType.Directory


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    with _errors(uri):
        fs.create_dir(path, recursive=True)


def delete(uri: str) -> None:
    """Delete a file or a folder tree; missing is fine."""
    fs, path = resolve(uri)
    with _errors(uri):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)


def _to_uri(template: str, path: str) -> str:
    return f"s3://{path}" if is_remote(template) else path


def list_files(uri: str, suffixes: tuple[str, ...] | list[str] | None = None, recursive: bool = True) -> list[str]:
    """Sorted URIs of the files under ``uri`` (ending with one of ``suffixes``, case-insensitive).

    Hidden files and our own temporary files (``.*``) are skipped.
    """
    fs, path = resolve(uri)
    with _errors(uri):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{redact(uri)}: no such file or folder")
        if info.type == pafs.FileType.File:
            infos = [info]
        else:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    sfx = tuple(s.lower() for s in suffixes) if suffixes else None
    out = []
    for item in infos:
        if item.type != pafs.FileType.File or item.base_name.startswith("."):
            continue
        if sfx and not item.base_name.lower().endswith(sfx):
            continue
        out.append(_to_uri(uri, item.path))
    return sorted(out)


def list_dirs(uri: str) -> list[str]:
    """Sorted URIs of the immediate sub-folders of ``uri``."""
    fs, path = resolve(uri)
    with _errors(uri):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(_to_uri(uri, i.path) for i in infos
                  if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with _errors(uri):
        with fs.open_input_stream(path) as f:
            return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def _tmp_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream`` (fewer only at its end)."""
    chunks, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _s3_upload(path: str, stream: BinaryIO, size: int | None = None) -> None:
    """Upload everything read from ``stream`` to ``bucket/key`` (``path``): all of it, or nothing.

    Up to one part: a single PutObject. Above: a multipart upload completed after the last part and
    aborted on any exception (KeyboardInterrupt included); a killed process leaves an incomplete upload,
    which is no object. ``size`` (when known) sets the part size so a large file fits in 10,000 parts.
    """
    bucket, key = path.split("/", 1)
    client = s3_client(bucket)
    part_size = max(S3_PART_SIZE, -(-size // _MAX_PARTS)) if size else S3_PART_SIZE
    chunk = _read_full(stream, part_size)
    if len(chunk) < part_size:
        client.put_object(Bucket=bucket, Key=key, Body=chunk)
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        while chunk:
            if len(parts) == _MAX_PARTS:
                raise StorageError(f"s3://{path}: more than {_MAX_PARTS} parts of {part_size} bytes")
            number = len(parts) + 1
            reply = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk)
            parts.append({"PartNumber": number, "ETag": reply["ETag"]})
            chunk = _read_full(stream, part_size)
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than a failed abort
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def write_stream(uri: str, stream: BinaryIO, size: int | None = None) -> None:
    """Write everything read from the binary ``stream`` to ``uri`` atomically.

    Readers see the old file or the whole new one; when reading ``stream`` or writing fails midway
    (or the process is killed), nothing new is visible at ``uri``. ``size``: the byte count when known.
    """
    fs, path = resolve(uri)
    with _errors(uri):
        if is_remote(uri):
            _s3_upload(path, stream, size)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = _tmp_name(path)
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(stream, f, length=8 << 20)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically (readers see the old file or the whole new one)."""
    write_stream(uri, io.BytesIO(data), len(data))


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output(uri: str, suffix: str = "") -> Iterator[str]:
    """Yield a local temporary path; on clean exit it becomes ``uri`` atomically.

    On an exception nothing is written to ``uri``.
    """
    fs, path = resolve(uri)
    if is_remote(uri):
        fd, tmp = tempfile.mkstemp(suffix=suffix or os.path.splitext(path)[1], prefix="sepcluster-")
        os.close(fd)
        try:
            yield tmp
            with open(tmp, "rb") as src:
                write_stream(uri, src, os.fstat(src.fileno()).st_size)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path) + (suffix or os.path.splitext(path)[1])
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """Yield a local path holding the content of ``uri`` (the file itself when local)."""
    if not is_remote(uri):
        path = _local_path(uri)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{uri}: no such file or folder")
        yield path
        return
    fs, path = resolve(uri)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1] or "", prefix="sepcluster-")
    os.close(fd)
    try:
        with _errors(uri), fs.open_input_stream(path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, length=8 << 20)
        yield tmp
    finally:
        os.unlink(tmp)


def write_parquet(table: pa.Table, uri: str, metadata: dict | None = None) -> None:
    """Write a Parquet file atomically; ``metadata`` (str -> str) goes into the schema."""
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({str(k).encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(uri, buf.getvalue())


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, or every ``*.parquet`` file under a folder, as one table."""
    fs, path = resolve(uri)
    with _errors(uri):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{redact(uri)}: no such file or folder")
        if info.type == pafs.FileType.File:
            return pq.read_table(path, filesystem=fs, columns=columns)
        files = list_files(uri, suffixes=(".parquet",))
        if not files:
            raise FileNotFoundError(f"{redact(uri)}: no Parquet files in this folder")
        return pa.concat_tables([pq.read_table(resolve(f)[1], filesystem=fs, columns=columns) for f in files],
                                promote_options="default")


def parquet_metadata(uri: str) -> dict[str, str]:
    """The key/value metadata of a Parquet file's schema, decoded."""
    fs, path = resolve(uri)
    with _errors(uri):
        schema = pq.read_schema(path, filesystem=fs)
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if not k.startswith(b"ARROW")}


def redact(text: str) -> str:
    """Remove credentials from a string: ``user:pass@`` in URLs and any AWS secret values."""
    text = _CREDENTIAL_IN_URL.sub(r"\g<scheme>***@", str(text))
    for key in _SECRET_VALUE_KEYS:
        value = os.environ.get(key)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text

"""One way to read and write a path, on local disk or in Cloud Storage (`gs://bucket/...`).

Every file the project reads or writes goes through here: workdirs (config, metrics,
TensorBoard events, reports, plots, the cached tokenizer), checkpoint paths, evaluation and
sweep outputs, tokenizer files and text sources. Paths are strings; a `gs://` one is served by
`etils.epath` over `gcsfs` (the `gcs` extra), which is also how orbax reaches the bucket for
its files (tensorstore writes the arrays). A `gs://` path without the extra is one error line.

Object writes are atomic in Cloud Storage, so `write_*` writes remote files in one request and
local ones through a temporary file and a rename. Directories in a bucket exist while they hold
an object. Against a local emulator, set `STORAGE_EMULATOR_HOST` and `TENSORSTORE_GCS_HTTP_URL`
(see docs/training.md).
"""

import io
import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from infini_jax.errors import ConfigError, Error

GCS_EXTRA = "pip install -e '.[gcs]'"


class StorageError(Error):
    """A remote path that cannot be reached (the bucket or its server)."""


def reason(error: BaseException) -> str:
    """The first line of the innermost cause of `error` (e.g. "Cannot connect to host ...");
    a parser's error (JSON) with its type. A `StopIteration` left in the chain by a library's
    internals says nothing and is skipped."""
    for _ in range(32):  # bounded: a chain can loop
        inner = error.__cause__ or error.__context__
        if inner is None or isinstance(inner, StopIteration | StopAsyncIteration):
            break
        error = inner
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = lines[0] if lines else type(error).__name__
    if isinstance(error, json.JSONDecodeError | UnicodeDecodeError):
        line = f"{type(error).__name__}: {line}"
    return line[:200]


@contextmanager
def reporting(what: str, advice: str) -> Iterator[None]:
    """Turns a failure of the storage calls inside (after their own retries) into one
    `StorageError` line: "`what` failed (reason); `advice`". The project's own errors pass."""
    try:
        yield
    except StorageError as e:
        raise StorageError(f"{what} failed ({e}); {advice}") from e
    except Error:
        raise
    except Exception as e:  # noqa: BLE001 - gcsfs, aiohttp, orbax and tensorstore raise many kinds
        raise StorageError(f"{what} failed ({reason(e)}); {advice}") from e


def is_remote(path: str) -> bool:
    return str(path).startswith("gs://")


_configured = False


def _configure_gcs(path: str) -> None:
    """Checks the extra is installed; turns off gcsfs's directory-listing cache (other
    processes and tensorstore write to the same bucket, so a cached listing goes stale)."""
    global _configured
    if _configured:
        return
    try:
        import fsspec
        import gcsfs  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{path}: gs:// paths need the GCS client libraries: {GCS_EXTRA}"
        ) from None
    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False
    # gcsfs logs a traceback when a request runs out of retries; the caller reports it (and
    # `reporting` makes it one line).
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    _configured = True


def _gcs(p: str):
    """The `gcsfs` filesystem (for what epath does not offer: recursive copy, `**` globs)."""
    import fsspec

    _configure_gcs(p)
    return fsspec.filesystem("gs")


def path(p: str):
    """`p` as an `etils.epath.Path` (a `pathlib.Path` for local paths)."""
    from etils import epath

    p = str(p)
    if is_remote(p):
        _configure_gcs(p)
    return epath.Path(p)


def absolute(p: str) -> str:
    """Local: absolute, `~` expanded; remote: as given (without a trailing slash)."""
    p = str(p)
    return p.rstrip("/") if is_remote(p) else os.path.abspath(os.path.expanduser(p))


def join(p: str, *names: str) -> str:
    return posixpath.join(str(p), *names)


def dirname(p: str) -> str:
    return posixpath.dirname(str(p).rstrip("/"))


def basename(p: str) -> str:
    return posixpath.basename(str(p).rstrip("/"))


def exists(p: str) -> bool:
    return path(p).exists()


def isdir(p: str) -> bool:
    return path(p).is_dir()


def isfile(p: str) -> bool:
    return path(p).is_file()


def listdir(p: str) -> list[str]:
    """The sorted names in directory `p` ([] if it does not exist)."""
    d = path(p)
    return sorted(c.name for c in d.iterdir()) if d.is_dir() else []


def makedirs(p: str) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


def remove(p: str) -> None:
    path(p).unlink()


def move(src: str, dst: str) -> None:
    """Renames file or directory `src` to `dst` (remote: copy, then delete)."""
    if is_remote(src):
        fs = _gcs(src)
        fs.copy(src, dst, recursive=True)  # not gcsfs's `mv`: it tries moveTo first, noisily
        fs.rm(src, recursive=True)
        return
    makedirs(dirname(dst))
    os.replace(src, dst)


def open(p: str, mode: str = "r", encoding: str | None = None) -> IO:  # noqa: A001
    """A file object for `p`; for writing, the parent directory is created."""
    if "w" in mode or "a" in mode:
        makedirs(dirname(p))
    if "b" in mode:
        return path(p).open(mode)
    return path(p).open(mode, encoding=encoding or "utf-8")


def read_text(p: str) -> str:
    return path(p).read_text(encoding="utf-8")


def read_bytes(p: str) -> bytes:
    return path(p).read_bytes()


def write_bytes(p: str, data: bytes) -> None:
    """Writes `p` whole: readers see the old or the new file, never a part."""
    makedirs(dirname(p))
    if is_remote(p):
        path(p).write_bytes(data)
        return
    tmp = f"{p}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, p)


def write_text(p: str, text: str) -> None:
    write_bytes(p, text.encode("utf-8"))


def glob(pattern: str) -> list[str]:
    """Sorted paths matching `pattern` (`*`, `?`, `[...]`; `**` for any depth)."""
    if is_remote(pattern):
        return sorted(f"gs://{p}" for p in _gcs(pattern).glob(pattern))
    import glob as globlib

    return sorted(globlib.glob(pattern, recursive=True))


def has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def upload(local: str, remote: str) -> None:
    """Copies the local file `local` to `remote` (any path)."""
    if is_remote(remote):
        with open(local, "rb") as src, open(remote, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
    else:
        makedirs(dirname(remote))
        shutil.copyfile(local, remote)


@contextmanager
def local_copy(p: str) -> Iterator[str]:
    """A local path holding the file `p`: `p` itself if local, else a temporary download (for
    libraries that only read local files, e.g. safetensors' memory map)."""
    if not is_remote(p):
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="infini_jax_") as tmp:
        local = os.path.join(tmp, basename(p))
        with open(p, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        yield local


def save_figure(fig, p: str, **kwargs) -> None:
    """`fig.savefig` to any path (PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    write_bytes(p, buffer.getvalue())


def rmtree(p: str) -> None:
    """Removes file or directory `p` with everything in it."""
    if is_remote(p):
        _gcs(p).rm(p, recursive=True)
    elif os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    else:
        os.remove(p)


def read_json(p: str):
    """The JSON value in file `p`; a file that is not JSON is an `Error` naming it."""
    text = read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Error(f"{p} is not valid JSON ({e}); restore or delete it") from None


def read_jsonl(p: str) -> list[dict]:
    """The records of the JSON-lines file `p`. An incomplete last line (a process killed while
    writing it) is dropped; a bad line before it is an `Error` naming the file and line."""
    lines = [(i, ln) for i, ln in enumerate(read_text(p).splitlines(), 1) if ln.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                break  # the write that was cut off
            raise Error(
                f"{p} line {number} is not valid JSON ({e}); restore or delete it"
            ) from None
    return records

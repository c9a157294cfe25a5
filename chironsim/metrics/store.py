"""Result folders on disk: five tables (Parquet, or CSV on request) and ``manifest.json``.

A folder is written atomically. Everything goes into a hidden temporary sibling first (plots
included, see ``before_commit``), and only a complete folder is renamed into place; an existing
result folder is moved aside, replaced and then deleted, and put back if the replacement fails.
A crash therefore leaves either the old folder, the new one, or a hidden ``.NAME.tmp-*`` /
``.NAME.old-*`` sibling tagged with the writer's process (see :mod:`chironsim.metrics.atomic`),
which the next save in that folder removes once that process is gone — never a half-written
folder under the real name. Sweeps rely on this: "the folder exists" means "the run finished".

The manifest records the size of every table it was written with (``files``), so a folder
damaged later (a disk filled up by another job, a copy cut short) is told apart from a good one
by :func:`result_dir_problem` without reading the tables in full, and every reader reports a
damaged table as a user error naming the file rather than a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chironsim.errors import ChironError, ConfigError
from chironsim.metrics.atomic import OLD, remove_stale_temporaries, temp_prefix, umask_mode
from chironsim.metrics.summary import SUMMARY_SCHEMA
from chironsim.metrics.tables import (
    BOOL,
    EVENTS_SCHEMA,
    FLOAT,
    INSTANCES_SCHEMA,
    INT,
    REQUESTS_SCHEMA,
    TIMESERIES_SCHEMA,
    Schema,
    conform,
)

#: Table name → schema, in the order they are written.
SCHEMAS: dict[str, Schema] = {
    "requests": REQUESTS_SCHEMA,
    "instances": INSTANCES_SCHEMA,
    "timeseries": TIMESERIES_SCHEMA,
    "events": EVENTS_SCHEMA,
    "summary": SUMMARY_SCHEMA,
}
TABLES = tuple(SCHEMAS)
MANIFEST = "manifest.json"
FORMATS = ("parquet", "csv")
#: Manifest key listing each table file's size in bytes (bookkeeping; not returned on load).
FILES_KEY = "files"
#: What reading a damaged table or manifest raises (truncated Parquet, bad CSV, bad bytes).
READ_ERRORS = (OSError, ValueError, EOFError, pa.ArrowException)


class ResultLike(Protocol):
    """What :func:`save_result` needs; :class:`chironsim.experiments.result.Result` is one."""

    requests: pd.DataFrame
    instances: pd.DataFrame
    timeseries: pd.DataFrame
    events: pd.DataFrame
    summary: pd.DataFrame
    manifest: dict


def save_result(
    result: ResultLike,
    out_dir: str | os.PathLike[str],
    fmt: str = "parquet",
    before_commit: Callable[[Path], object] | None = None,
    clean_stale: bool = True,
) -> Path:
    """Write ``result`` to ``out_dir`` atomically and return the folder's path.

    An existing ``out_dir`` is replaced only if it is a result folder (has ``manifest.json``)
    or empty, so a mistyped ``--out`` cannot delete unrelated files. ``before_commit(tmp)`` adds
    more files (the plots) to the temporary folder before it is renamed into place, so they are
    there exactly when the folder is. ``clean_stale`` first removes the temporaries that killed
    writers left beside ``out_dir``; a sweep's workers skip it (the sweep cleans its folder
    once, rather than every worker scanning thousands of run folders per save).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"result format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    tables = {name: conform(getattr(result, name), SCHEMAS[name], name) for name in TABLES}
    tmp = begin_result_dir(out, clean_stale)
    try:
        finish_result_dir(tmp, out, tables, result.manifest, fmt, before_commit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _CREATED.pop(tmp, None)
    return out


def begin_result_dir(out_dir: str | os.PathLike[str], clean_stale: bool = True) -> Path:
    """Make the hidden temporary folder a result for ``out_dir`` is written into (checks as
    :func:`save_result`); a run that streams its requests opens it before simulating. The
    caller removes it if it does not reach :func:`finish_result_dir`."""
    out = Path(out_dir)
    check_replaceable(out)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temporaries(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    _CREATED[tmp] = created
    try:
        os.chmod(tmp, 0o777 & ~(0o666 ^ umask_mode()))  # mkdtemp's 0700 is too strict to share
    except BaseException:
        discard_result_dir(tmp)
        raise
    return tmp


#: temporary folder -> the folders above it that begin_result_dir created (innermost first)
_CREATED: dict[Path, list[Path]] = {}


def discard_result_dir(tmp: Path) -> None:
    """Remove a temporary from :func:`begin_result_dir` whose run failed, and the folders
    made for it if they are empty: a failed run leaves the file system as it found it."""
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in _CREATED.pop(tmp, []):
        try:
            folder.rmdir()
        except OSError:
            break


def finish_result_dir(
    tmp: Path,
    out_dir: str | os.PathLike[str],
    tables: Mapping[str, pd.DataFrame],
    manifest: Mapping[str, Any],
    fmt: str = "parquet",
    before_commit: Callable[[Path], object] | None = None,
) -> Path:
    """Write ``tables`` (the ones not already in ``tmp``), the manifest with every table's
    size, and move the folder into place. Anything in ``tmp`` whose name starts with a dot
    (a spill) is removed first."""
    if fmt not in FORMATS:
        raise ConfigError(f"result format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    for entry in tmp.iterdir():
        if entry.name.startswith("."):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for name, frame in tables.items():
        _write_table(conform(frame, SCHEMAS[name], name), tmp / f"{name}.{fmt}", fmt)
    missing = [name for name in TABLES if not (tmp / f"{name}.{fmt}").is_file()]
    if missing:
        raise ValueError(f"result folder lacks the table(s) {', '.join(missing)}")
    sizes = {f"{name}.{fmt}": (tmp / f"{name}.{fmt}").stat().st_size for name in TABLES}
    if before_commit is not None:
        before_commit(tmp)
    _write_manifest({**manifest, FILES_KEY: sizes}, tmp / MANIFEST)
    _fsync(tmp)
    _move_into_place(tmp, out)
    _CREATED.pop(tmp, None)
    return out


#: Rows per row group of a Parquet table (pyarrow's default, which ``DataFrame.to_parquet``
#: uses): the streamed requests table is written in the same groups, so its file is the
#: same, byte for byte, as the table written at once.
PARQUET_ROW_GROUP = 1 << 20


def write_requests_stream(
    batches: Iterable[Mapping[str, np.ndarray]],
    classes: Iterable[str],
    path: Path,
    fmt: str = "parquet",
    group_rows: int = PARQUET_ROW_GROUP,
) -> int:
    """Write the requests table from id-ordered ``batches`` of its columns without holding
    it, ``group_rows`` rows at a time, so that the file equals the one :func:`save_result`
    writes for the whole table (``classes``: every request class in it, the categories of
    ``request_class``). A Parquet row group is built column by column as Arrow arrays, each
    batch's column released as it is copied, so about one group's columns are held at a
    time. Returns the number of rows."""
    names = [name for name, _ in REQUESTS_SCHEMA]
    categories = sorted(set(classes))
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    pending: list[Mapping[str, np.ndarray]] = []
    held = 0
    rows = 0

    def write(pieces: list[Mapping[str, np.ndarray]], count: int) -> None:
        nonlocal writer, schema, rows
        columns = {n: [p[n] for p in pieces] for n in names}
        pieces.clear()
        if fmt == "parquet":
            if writer is None:
                sample = {n: c[0][:1] for n, c in columns.items()}
                schema = _requests_arrow_schema(sample, categories)
                writer = pq.ParquetWriter(path, schema)
            arrays = []
            for (name, kind), field in zip(REQUESTS_SCHEMA, schema):
                values = np.concatenate(columns.pop(name))
                arrays.append(_arrow_column(values, kind, field.type, categories))
                del values
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        else:
            group = {n: np.concatenate(columns.pop(n)) for n in names}
            frame = _conformed_requests(group, categories)
            frame.to_csv(path, index=False, mode="w" if rows == 0 else "a", header=rows == 0)
        rows += count

    try:
        for batch in batches:
            size = len(batch["request_id"])
            while size:
                take = min(size, group_rows - held)
                pending.append({n: c[:take] for n, c in batch.items()} if take < size else batch)
                batch = {n: c[take:] for n, c in batch.items()}
                held += take
                size -= take
                if held == group_rows:
                    write(pending, held)
                    held = 0
        if held:
            write(pending, held)
        elif rows == 0:
            _write_table(empty_requests(), path, fmt)
    finally:
        if writer is not None:
            writer.close()
    _fsync(path)
    return rows


def _conformed_requests(group: Mapping[str, np.ndarray], categories: Sequence[str]) -> pd.DataFrame:
    names = [name for name, _ in REQUESTS_SCHEMA]
    frame = conform(pd.DataFrame(dict(group), columns=names, copy=False), REQUESTS_SCHEMA,
                    "requests")
    frame["request_class"] = frame["request_class"].cat.set_categories(list(categories))
    return frame


def _requests_arrow_schema(sample: Mapping[str, np.ndarray], categories: Sequence[str]) -> pa.Schema:
    """The Arrow schema (pandas metadata included) ``to_parquet`` gives the whole table."""
    return pa.Schema.from_pandas(_conformed_requests(sample, categories), preserve_index=False)


def _arrow_column(values: np.ndarray, kind: str, arrow_type: pa.DataType,
                  categories: Sequence[str]) -> pa.Array:
    """One column as ``pa.Table.from_pandas`` converts the conformed table's (NaN as null)."""
    from chironsim.metrics.records import TERMINAL_STATES
    from chironsim.metrics.tables import CATEGORY, STATUS

    if kind in (CATEGORY, STATUS):
        cats = list(categories) if kind == CATEGORY else list(TERMINAL_STATES)
        codes = pd.Categorical(values, categories=cats).codes
        if kind == STATUS and (codes < 0).any():
            raise ValueError(f"requests table: unknown status values {sorted(set(values[codes < 0]))}")
        return pa.DictionaryArray.from_arrays(pa.array(codes, type=arrow_type.index_type),
                                              pa.array(cats, type=arrow_type.value_type))
    return pa.array(values.astype(_NUMPY_KIND[kind], copy=False) if kind in _NUMPY_KIND else values,
                    type=arrow_type, from_pandas=True)


_NUMPY_KIND = {INT: np.int64, FLOAT: np.float64, BOOL: np.bool_}


def empty_requests() -> pd.DataFrame:
    from chironsim.metrics.tables import empty_table

    return empty_table(REQUESTS_SCHEMA, "requests")


def is_result_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a complete result folder (every table and the manifest present)."""
    p = Path(path)
    return (p / MANIFEST).is_file() and all(_table_path(p, name) is not None for name in TABLES)


def load_tables(path: str | os.PathLike[str]) -> tuple[dict[str, pd.DataFrame], dict]:
    """Read a result folder back: ``({table name: DataFrame}, manifest)`` with schema dtypes.

    A missing, truncated or unreadable table or manifest raises ChironError naming the file.
    """
    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise ChironError(f"{p}: not a chironsim result folder (no {MANIFEST})")
    manifest = read_manifest(p)
    sizes = manifest.pop(FILES_KEY, None)
    return {name: read_table(p, name, sizes) for name in TABLES}, manifest


def read_table(folder: Path, name: str, sizes: object = None) -> pd.DataFrame:
    """One table of a result folder with its schema's dtypes; ``sizes`` is the manifest's
    ``files`` record, if at hand. A missing, truncated or unreadable table raises ChironError
    naming the file."""
    file = _table_path(folder, name)
    if file is None:
        raise ChironError(f"{folder}: result folder lacks the {name} table")
    problem = _size_problem(file, sizes)
    if problem:
        raise ChironError(f"{file}: {problem}")
    try:
        return _read_table(file, SCHEMAS[name], name)
    except READ_ERRORS as err:
        raise ChironError(f"{file}: cannot read the {name} table ({_first_line(err)}); "
                          "the result folder is damaged, run it again") from None


def read_manifest(folder: Path) -> dict[str, Any]:
    """A result folder's ``manifest.json``; a damaged one raises ChironError naming it."""
    path = folder / MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise ChironError(f"{path}: cannot read the manifest ({_first_line(err)}); "
                          "the result folder is damaged, run it again") from None
    if not isinstance(manifest, dict):
        raise ChironError(f"{path}: the manifest is not a JSON object; the result folder is "
                          "damaged, run it again")
    return manifest


def result_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a complete, intact result folder, or None when it is.

    Cheap enough to run on every folder of a resumed sweep: the manifest is parsed, each
    table's size is compared with the one the manifest recorded, and each Parquet table's
    footer (its schema and row groups) is read, which is where a truncated file fails.
    """
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return f"no {MANIFEST}"
    try:
        sizes = read_manifest(p).get(FILES_KEY)
    except ChironError as err:
        return str(err).removeprefix(f"{p / MANIFEST}: ")
    for name in TABLES:
        file = _table_path(p, name)
        if file is None:
            return f"the {name} table is missing"
        problem = _size_problem(file, sizes)
        if problem:
            return f"{file.name} {problem}"
        if file.suffix == ".parquet":
            try:
                columns = set(pq.read_schema(file).names)
            except READ_ERRORS as err:
                return f"{file.name} cannot be read ({_first_line(err)})"
            missing = [col for col, _ in SCHEMAS[name] if col not in columns]
            if missing:
                return f"{file.name} lacks the column(s) {', '.join(missing)}"
    return None


def _size_problem(file: Path, sizes: object) -> str | None:
    """A table whose size differs from the manifest's record (older folders have none)."""
    if not isinstance(sizes, dict) or file.name not in sizes:
        return None
    actual, recorded = file.stat().st_size, sizes[file.name]
    if actual == recorded:
        return None
    return (f"has {actual} bytes but was written with {recorded}: the file is truncated or "
            "was changed after the run; the result folder is damaged, run it again")


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ChironError(f"{out}: exists and is not a folder; refusing to write results there")
    if not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ChironError(
            f"{out}: folder exists and is not a chironsim result folder; refusing to replace it"
        )


def _move_into_place(new: Path, out: Path) -> None:
    if not out.exists():
        os.rename(new, out)
        return
    holder = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name, OLD), dir=out.parent))
    previous = holder / "previous"
    os.rename(out, previous)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(previous, out)
        shutil.rmtree(holder, ignore_errors=True)
        raise
    shutil.rmtree(holder, ignore_errors=True)


def _table_path(folder: Path, name: str) -> Path | None:
    for fmt in FORMATS:
        candidate = folder / f"{name}.{fmt}"
        if candidate.is_file():
            return candidate
    return None


def _write_table(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, engine="pyarrow", index=False)
    else:
        frame.to_csv(path, index=False)
    _fsync(path)


def _read_table(path: Path, schema: Schema, name: str) -> pd.DataFrame:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path, engine="pyarrow")
    else:
        # Only numeric columns may hold NaN; an empty string stays an empty string (e.g. the
        # ``instances`` of a rejected request), so NaN parsing is switched on per column.
        dtypes = {col: _CSV_DTYPE.get(kind, str) for col, kind in schema}
        na = {col: ["", "nan", "NaN"] for col, kind in schema if kind == FLOAT}
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=na)
    return conform(frame, schema, name)


_CSV_DTYPE = {INT: "int64", FLOAT: "float64", BOOL: "bool"}


def _write_manifest(manifest: Mapping[str, Any], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, default=_json_default)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(value: object) -> object:
    """Manifests carry config values that may be numpy scalars, paths or sets."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"manifest value of type {type(value).__name__} is not JSON-serialisable")


def _fsync(path: Path) -> None:
    """Flush a file or folder entry to disk, so a power loss cannot reorder it after the rename."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

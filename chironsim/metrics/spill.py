"""Finished-request columns flushed to a Parquet file while the run goes, read back in id order.

A run with an output folder does not keep its requests: every ``run_rows`` records the
columns (:class:`~chironsim.metrics.columns.RequestColumns`) are sorted by request id and
written to a spill folder in the run's temporary folder as one sorted run, a Parquet file cut
into row groups of ``block_rows``. Each run's file is closed once written: a Parquet writer
keeps the metadata of every row group it wrote until it is closed (~5–16 kB a group), which
over a week's thousands of groups would grow with the requests again. Requests finish roughly in arrival (= id) order, so consecutive runs barely
overlap; :meth:`RequestSpill.sorted_batches` merges them back into one id-ordered stream,
loading a row group only when the stream reaches its smallest id. At most one row group per
run is held at a time (an external merge sort's bound), and for a real workload only the few
runs that overlap: memory does not grow with the number of requests. The stream can be read
as many times as needed (the summary's exact percentiles take a few passes).
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Default sizes: records per sorted run, rows per row group within a run.
RUN_ROWS = 1 << 16
BLOCK_ROWS = 1 << 13


class RequestSpill:
    """Sorted runs of request columns, one Parquet file each in a folder (see the module
    docstring)."""

    def __init__(self, path: str | Path, names: Sequence[str], arrow_types: Sequence[pa.DataType],
                 run_rows: int = RUN_ROWS, block_rows: int = BLOCK_ROWS) -> None:
        if run_rows < 1 or block_rows < 1:
            raise ValueError("run_rows and block_rows must be positive")
        self.path = Path(path)
        self.names = list(names)
        self.schema = pa.schema(list(zip(self.names, arrow_types)))
        self.run_rows = run_rows
        self.block_rows = block_rows
        self.rows = 0
        self.classes: set[str] = set()
        self.runs = 0
        # per row group: (smallest id, run, row group within the run)
        self._blocks: list[tuple[int, int, int]] = []

    def write_run(self, columns: dict[str, np.ndarray]) -> None:
        """Append one run (columns of equal length, any order); it is sorted by id here."""
        ids = columns["request_id"]
        if not len(ids):
            return
        order = np.argsort(ids, kind="stable")
        self.classes.update(np.unique(columns["request_class"]).tolist())
        self.path.mkdir(exist_ok=True)
        run = self.runs
        with pq.ParquetWriter(self._run_path(run), self.schema, compression="none",
                              write_statistics=False) as writer:
            for group, start in enumerate(range(0, len(ids), self.block_rows)):
                part = order[start:start + self.block_rows]
                arrays = [pa.array(np.asarray(columns[name])[part], type=field.type)
                          for name, field in zip(self.names, self.schema)]
                writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema),
                                   row_group_size=len(part))
                self._blocks.append((int(ids[part[0]]), run, group))
        self.runs += 1
        self.rows += len(ids)

    def _run_path(self, run: int) -> Path:
        return self.path / f"run-{run:06d}.parquet"

    def sorted_batches(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Every spilled row, in request-id order, as batches of numpy columns (strings as
        object arrays). ``columns`` limits what is read (``request_id`` always is)."""
        if not self._blocks:
            return
        names = list(columns) if columns is not None else list(self.names)
        read = names if "request_id" in names else ["request_id", *names]
        strings = [f.name for f in self.schema if pa.types.is_string(f.type)]
        unloaded = list(self._blocks)
        heapq.heapify(unloaded)
        left = [0] * self.runs  # blocks of each run not loaded yet
        for _lo, run, _group in self._blocks:
            left[run] += 1
        files: dict[int, pq.ParquetFile] = {}  # the runs being read, opened lazily
        loaded: list[list] = []  # [ids, {name: array}, position]
        while unloaded or loaded:
            limit = unloaded[0][0] if unloaded else None
            pieces_ids, pieces = [], []
            for block in loaded:
                ids, cols, pos = block
                end = len(ids) if limit is None else int(np.searchsorted(ids, limit, side="left"))
                if end > pos:
                    pieces_ids.append(ids[pos:end])
                    pieces.append({n: c[pos:end] for n, c in cols.items()})
                    block[2] = end
            loaded = [b for b in loaded if b[2] < len(b[0])]
            if pieces_ids:
                if len(pieces_ids) == 1:
                    out = pieces[0]
                else:
                    merged_ids = np.concatenate(pieces_ids)
                    order = np.argsort(merged_ids, kind="stable")
                    out = {n: np.concatenate([p[n] for p in pieces])[order] for n in read}
                yield {n: out[n] for n in names}
            if unloaded:
                _lo, run, group = heapq.heappop(unloaded)
                if run not in files:
                    files[run] = pq.ParquetFile(self._run_path(run), read_dictionary=strings)
                table = files[run].read_row_group(group, columns=read)
                left[run] -= 1
                if not left[run]:
                    files.pop(run).close()
                cols = {n: _numpy(table.column(n)) for n in read}
                del table
                loaded.append([cols["request_id"], cols, 0])
        for source in files.values():
            source.close()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy; strings as an object array sharing one object per distinct value
    (read dictionary-encoded), so a block of repeated strings costs pointers, not copies."""
    if pa.types.is_dictionary(column.type):
        array = column.combine_chunks()
        words = np.empty(len(array.dictionary), dtype=object)
        words[:] = array.dictionary.to_pylist()
        return words[array.indices.to_numpy(zero_copy_only=False)]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.array(column.to_pylist(), dtype=object)
    return column.to_numpy()

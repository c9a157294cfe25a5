"""Request records kept as columns while a run goes, so that long runs stay small.

A :class:`~chironsim.metrics.records.RequestRecord` is a slotted object of 21 fields, most of
them floats that are objects of their own: about 490 bytes per request once the run holds a
million of them, and building the requests table from those objects needed as much again on
top. :class:`RequestColumns` keeps each field in a typed ``array`` (8 bytes a number) or, for
the strings, a list of shared string objects (the ``instances`` strings are interned, since
most requests ran on one instance and the combinations repeat): about 170 bytes a request,
and the table is built from the buffers without a row-by-row pass.

It still behaves as the list of records it replaces where code reads it as one (iterating
yields :class:`RequestRecord` objects in order, ``len`` counts them), so tests and scripts that
look at single requests keep working. The table it gives is the one
:func:`~chironsim.metrics.tables.requests_table` built from the records: same values, dtypes
and row order.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from chironsim.metrics.records import RequestRecord
from chironsim.metrics.spill import BLOCK_ROWS, RUN_ROWS, RequestSpill

#: Field -> array typecode; fields not here (the strings and ``slo_met``) are kept in lists.
_TYPECODES = {"int": "q", "float": "d"}


class RequestColumns:
    """Append-only, columnar store of request records (see the module docstring)."""

    def __init__(self) -> None:
        from chironsim.metrics.tables import REQUESTS_SCHEMA

        self._schema = REQUESTS_SCHEMA
        self._names = [name for name, _ in REQUESTS_SCHEMA]
        self._columns: list[array | list] = [
            array(_TYPECODES[kind]) if kind in _TYPECODES else [] for _, kind in REQUESTS_SCHEMA
        ]
        self._get = attrgetter(*self._names)
        self._appends = [col.append for col in self._columns]
        self._instances = self._names.index("instances")
        self._interned: dict[str, str] = {}
        self._floats = [i for i, (_, kind) in enumerate(REQUESTS_SCHEMA) if kind == "float"]
        self._order: np.ndarray | None = None
        self._spill: RequestSpill | None = None

    def __len__(self) -> int:
        return len(self._columns[0]) + (self._spill.rows if self._spill is not None else 0)

    @property
    def buffered(self) -> int:
        """Records held in memory (all of them unless a spill is attached)."""
        return len(self._columns[0])

    @property
    def spill(self) -> RequestSpill | None:
        return self._spill

    def spill_to(self, path: str | Path, run_rows: int = RUN_ROWS,
                 block_rows: int = BLOCK_ROWS) -> RequestSpill:
        """From now on, every ``run_rows`` records go to a Parquet spill folder at ``path``
        (:mod:`chironsim.metrics.spill`) instead of staying in memory."""
        if self._spill is not None or len(self):
            raise ValueError("spill_to must be called once, before any record is appended")
        kinds = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
        self._spill = RequestSpill(path, self._names,
                                   [kinds.get(kind, pa.string()) for _, kind in self._schema],
                                   run_rows, block_rows)
        return self._spill

    def _numpy_columns(self, release: bool = False, order: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each column as a numpy array of its own (rows in ``order`` if given); ``release``
        empties the buffers as it goes, so that the table and the buffers never coexist whole."""
        data = {}
        for i, (name, col) in enumerate(zip(self._names, self._columns)):
            values = (np.frombuffer(col, dtype=col.typecode) if isinstance(col, array)
                      else np.array(col, dtype=object))
            # never the typed array's own buffer, which grows: a copy, or the reordered rows
            if order is not None:
                data[name] = values[order]
            else:
                data[name] = values.copy() if isinstance(col, array) else values
            if release:
                del values
                self._columns[i] = array(col.typecode) if isinstance(col, array) else []
                del col
        if release:
            self._appends = [col.append for col in self._columns]
        return data

    def _flush(self) -> None:
        assert self._spill is not None
        self._spill.write_run(self._numpy_columns(release=True))
        self._interned.clear()

    def append(self, record: RequestRecord | list[object]) -> None:
        """Add one record's fields to the columns. The record may come as its fields in
        :class:`RequestRecord`'s order (that of ``REQUESTS_SCHEMA``), a list, which the
        simulator hands over at every finish without building the record; the list is the
        caller's to give away (its ``instances`` entry is replaced by the interned string)."""
        if type(record) is list:
            values = record
            if len(values) != len(self._appends):
                raise ValueError(f"{len(values)} values for the "
                                 f"{len(self._appends)} request columns")
        else:
            values = list(self._get(record))
        hosts = values[self._instances]
        values[self._instances] = self._interned.setdefault(hosts, hosts)
        for add, value in zip(self._appends, values):
            add(value)
        if self._spill is not None and len(self._columns[0]) >= self._spill.run_rows:
            self._flush()

    def sort_by_id(self) -> None:
        """Read the rows in ``request_id`` order from now on (ids are unique, so the order is
        total). Only the permutation is kept (8 bytes a row): sorting the columns themselves
        would hold two copies of them at once. Rows appended later follow in arrival order.
        With a spill, the records still held are flushed as its last run (it keeps id order)."""
        if self._spill is not None:
            self._flush()
            return
        ids = np.frombuffer(self._columns[self._names.index("request_id")], dtype=np.int64)
        self._order = (None if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1]))
                       else np.argsort(ids, kind="stable"))

    def _row_order(self) -> np.ndarray | None:
        """Row indices in reading order, or ``None`` when that is the order of appending."""
        if self._order is None or len(self._order) == len(self):
            return self._order
        return np.concatenate([self._order, np.arange(len(self._order), len(self))])

    def __iter__(self) -> Iterator[RequestRecord]:
        """The records, rebuilt; a NaN comes back as ``math.nan`` itself, as the simulator
        writes it, so that records of two runs compare equal field by field."""
        floats = set(self._floats)
        if self._spill is not None:
            self._flush()
            for batch in self._spill.sorted_batches():
                for row in zip(*(batch[n].tolist() for n in self._names)):
                    values = [math.nan if i in floats and v != v else v for i, v in enumerate(row)]
                    yield RequestRecord(*values)
            return
        order = self._row_order()
        rows = zip(*self._columns)
        if order is not None:
            rows = (tuple(c[i] for c in self._columns) for i in order.tolist())
        for row in rows:
            values = [math.nan if i in floats and v != v else v for i, v in enumerate(row)]
            yield RequestRecord(*values)

    def sorted_batches(self, columns: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The records in request-id order as batches of numpy columns (strings as object
        arrays): the spill's merged stream, or one batch of what is held in memory."""
        names = list(columns) if columns is not None else list(self._names)
        if self._spill is not None:
            self._flush()
            yield from self._spill.sorted_batches(names)
            return
        if not len(self):
            return
        order = self._row_order()
        batch = {}
        for name in names:
            col = self._columns[self._names.index(name)]
            values = (np.frombuffer(col, dtype=col.typecode) if isinstance(col, array)
                      else np.array(col, dtype=object))
            batch[name] = values.copy() if order is None else values[order]
        yield batch

    def classes(self) -> set[str]:
        """The request classes that occur in the records."""
        held = set(self._columns[self._names.index("request_class")])
        return held | (self._spill.classes if self._spill is not None else set())

    def table(self, release: bool = False) -> pd.DataFrame:
        """The requests table (columns in :class:`RequestRecord` order, schema dtypes).

        ``release`` empties the store column by column as the table is built, so that a run's
        end holds the buffers or their table but not both (the runner's way: the simulation
        is done with them); without it the store stays as it was."""
        from chironsim.metrics.tables import conform, empty_table

        if not len(self):
            return empty_table(self._schema, "requests")
        if self._spill is not None:
            self._flush()
            batches = list(self._spill.sorted_batches())
            data = {n: np.concatenate([b[n] for b in batches]) for n in self._names}
            return conform(pd.DataFrame(data, columns=self._names, copy=False), self._schema,
                           "requests")
        data = self._numpy_columns(release, self._row_order())
        if release:
            self._order = None
            self._interned.clear()
        # copy=False: the arrays above are fresh; conform makes the one consolidated copy
        return conform(pd.DataFrame(data, columns=self._names, copy=False), self._schema,
                       "requests")


class RowColumns:
    """Rows of a fixed schema (the timeseries samples, the events) kept as typed columns.

    The simulator appends one dict per sample or event; a week holds ~60,000 of each, which
    as dicts cost ~0.5–0.9 kB a row (their keys, boxed numbers) and as columns ~100 bytes.
    Appending a dict, ``len``, iterating (dicts again, in order) and indexing behave as the
    list of dicts it replaces; :func:`~chironsim.metrics.tables.timeseries_table` and
    :func:`~chironsim.metrics.tables.events_table` build the same table from either. A value
    that does not fit its column's typed array (a float in an int column) turns that column
    into a plain list, so nothing is converted differently from the dicts.
    """

    def __init__(self, schema: tuple[tuple[str, str], ...]) -> None:
        self._names = [name for name, _ in schema]
        self._columns: list[array | list] = [
            array(_TYPECODES[kind]) if kind in _TYPECODES else [] for _, kind in schema
        ]
        self._interned: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._columns[0])

    def append(self, row: Mapping[str, object]) -> None:
        if len(row) != len(self._names) or any(name not in row for name in self._names):
            raise ValueError(f"row keys {sorted(row)} are not the columns {self._names}")
        self.append_values([row[name] for name in self._names])

    def append_values(self, values: Sequence[object]) -> None:
        """Append one row given as its values in the schema's column order (no dict to build
        and check: the timeseries sampler's rows). The values go in as :meth:`append` puts a
        dict's."""
        columns = self._columns
        if len(values) != len(columns):
            raise ValueError(f"{len(values)} values for the {len(columns)} columns {self._names}")
        for i, value in enumerate(values):
            col = columns[i]
            if type(col) is not list:
                try:
                    col.append(value)  # type: ignore[arg-type]
                    continue
                except TypeError:
                    col = columns[i] = list(col)
            if type(value) is str:
                value = self._interned.setdefault(value, value)
            col.append(value)

    def _row(self, i: int) -> dict[str, object]:
        return {name: col[i] for name, col in zip(self._names, self._columns)}

    def __getitem__(self, i: int) -> dict[str, object]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("row index out of range")
        return self._row(i)

    def __iter__(self) -> Iterator[dict[str, object]]:
        for i in range(len(self)):
            yield self._row(i)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (columns in schema order, not yet conformed)."""
        data = {name: (np.frombuffer(col, dtype=col.typecode).copy() if isinstance(col, array)
                       else col) for name, col in zip(self._names, self._columns)}
        return pd.DataFrame(data, columns=self._names)

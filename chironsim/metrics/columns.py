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
from collections.abc import Iterator
from operator import attrgetter

import numpy as np
import pandas as pd

from chironsim.metrics.records import RequestRecord

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

    def __len__(self) -> int:
        return len(self._columns[0])

    def append(self, record: RequestRecord) -> None:
        """Add one record's fields to the columns."""
        values = list(self._get(record))
        hosts = values[self._instances]
        values[self._instances] = self._interned.setdefault(hosts, hosts)
        for add, value in zip(self._appends, values):
            add(value)

    def sort_by_id(self) -> None:
        """Read the rows in ``request_id`` order from now on (ids are unique, so the order is
        total). Only the permutation is kept (8 bytes a row): sorting the columns themselves
        would hold two copies of them at once. Rows appended later follow in arrival order."""
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
        order = self._row_order()
        rows = zip(*self._columns)
        if order is not None:
            rows = (tuple(c[i] for c in self._columns) for i in order.tolist())
        for row in rows:
            values = [math.nan if i in floats and v != v else v for i, v in enumerate(row)]
            yield RequestRecord(*values)

    def table(self, release: bool = False) -> pd.DataFrame:
        """The requests table (columns in :class:`RequestRecord` order, schema dtypes).

        ``release`` empties the store column by column as the table is built, so that a run's
        end holds the buffers or their table but not both (the runner's way: the simulation
        is done with them); without it the store stays as it was."""
        from chironsim.metrics.tables import conform, empty_table

        if not len(self):
            return empty_table(self._schema, "requests")
        order = self._row_order()
        data = {}
        for i, (name, col) in enumerate(zip(self._names, self._columns)):
            values = (np.frombuffer(col, dtype=col.typecode) if isinstance(col, array)
                      else np.array(col, dtype=object))
            # a copy either way: the frame must not share the arrays' buffers, which grow
            data[name] = values.copy() if order is None else values[order]
            if release:
                del values
                self._columns[i] = array(col.typecode) if isinstance(col, array) else []
                del col
        if release:
            self._appends = [col.append for col in self._columns]
            self._order = None
            self._interned.clear()
        # copy=False: the arrays above are fresh; conform makes the one consolidated copy
        return conform(pd.DataFrame(data, columns=self._names, copy=False), self._schema,
                       "requests")

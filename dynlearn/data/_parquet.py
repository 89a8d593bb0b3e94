"""Long-format series read from a Parquet dataset a chunk of whole series at a time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..exceptions import input_error
from ._container import ID_COLUMN, TIME_COLUMN, InputSpec, SeriesBatch
from ._validation import check_series

# Series per chunk when none is given: a few thousand series of a few hundred rows is tens of MB.
DEFAULT_CHUNK_SIZE = 1024
# Observation gaps kept (a uniform sample beyond this many) for the median gap that sets the time unit.
GAP_SAMPLE = 1 << 20
_EXTRA = "parquet"


def _pyarrow_dataset() -> Any:
    """``pyarrow.dataset``, imported only when Parquet data is used."""
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise input_error(
            "X",
            "pyarrow installed, to read a Parquet dataset",
            "no module named 'pyarrow'",
            f"Install the optional dependency: pip install 'dynlearn[{_EXTRA}]' (or pip install pyarrow), or read the "
            "data into a DataFrame yourself.",
        ) from None
    return ds


def is_parquet_source(X: Any) -> bool:
    """Whether ``X`` names Parquet data: a path, a ``pyarrow.dataset.Dataset`` or a :class:`ParquetSeries`."""
    if isinstance(X, (ParquetSeries, str, os.PathLike)):
        return True
    return type(X).__module__.startswith("pyarrow") and type(X).__name__.endswith("Dataset")


def parquet_series(X: Any) -> "ParquetSeries":
    """``X`` (a path, a dataset or a :class:`ParquetSeries`) as a :class:`ParquetSeries` with the default chunk size."""
    return X if isinstance(X, ParquetSeries) else ParquetSeries(X)


@dataclass(frozen=True)
class _Piece:
    """One row group (or one fragment without row groups) of the dataset, in scan order."""

    fragment: Any
    start: int
    n_rows: int


class ParquetSeries:
    """A Parquet dataset of long-format rows, read in chunks of whole series.

    The rows hold a ``series_id`` column, a ``time`` column and one column
    per variable, as a long DataFrame does. Opening the dataset reads its id
    column once to find where each series lies; a chunk is then
    ``chunk_size`` consecutive series, read from the row groups that hold
    them, so memory is bounded by the chunk (and the row groups at its two
    ends), not by the dataset. The per-series index (id, first row, row
    count) stays in memory: a few tens of bytes per series.

    The rows of one series must be contiguous in the dataset's scan order
    (files in order, row groups in order): write the data sorted or grouped
    by series id. A series may span several row groups or files. A dataset
    where a series' rows reappear after another series' rows is refused.

    Parameters
    ----------
    source : str, path-like or pyarrow.dataset.Dataset
        A Parquet file, a directory of Parquet files, or an opened dataset.
    chunk_size : int, default=1024
        Series per chunk.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> from dynlearn.data import ParquetSeries
    >>> frame = pd.DataFrame({"series_id": [0, 0, 1, 1], "time": [0.0, 1.0, 0.0, 1.0], "x": [1.0, 2.0, 3.0, 4.0]})
    >>> path = os.path.join(tempfile.mkdtemp(), "series.parquet")
    >>> frame.to_parquet(path)
    >>> ParquetSeries(path, chunk_size=1).n_chunks
    2
    """

    def __init__(self, source: Any, chunk_size: int = DEFAULT_CHUNK_SIZE):
        if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise input_error("chunk_size", "a positive int (series per chunk)", repr(chunk_size), "E.g. chunk_size=1024.")
        self.chunk_size = int(chunk_size)
        self.dataset = self._open(source)
        names = list(self.dataset.schema.names)
        missing = [c for c in (ID_COLUMN, TIME_COLUMN) if c not in names]
        if missing:
            raise input_error(
                "X",
                f"a Parquet dataset of long rows with '{ID_COLUMN}' and '{TIME_COLUMN}' columns",
                f"columns {names[:10]}, without {missing}",
                f"Rename the series id column to '{ID_COLUMN}' and the time column to '{TIME_COLUMN}'.",
            )
        # pandas writes its index as extra columns; they are not variables.
        self.columns = [c for c in names if not c.startswith("__index_level_")]
        self.pieces = self._pieces()
        self.ids, self.starts, self.lengths = self._index_series()

    # ---------------------------------------------------------------- layout
    @staticmethod
    def _open(source: Any) -> Any:
        ds = _pyarrow_dataset()
        if isinstance(source, ds.Dataset):
            return source
        if not isinstance(source, (str, os.PathLike)):
            raise input_error("X", "a path or a pyarrow.dataset.Dataset", type(source).__name__, "Pass a Parquet path.")
        path = Path(source)
        if not path.exists():
            raise input_error("X", "an existing Parquet file or directory", f"{str(path)!r}, which does not exist",
                              "Check the path.")
        return ds.dataset(str(path), format="parquet")

    def _pieces(self) -> list[_Piece]:
        pieces, start = [], 0
        for fragment in self.dataset.get_fragments():
            if hasattr(fragment, "ensure_complete_metadata"):  # Parquet: one piece per row group
                fragment.ensure_complete_metadata()
                parts = [(fragment.subset(row_group_ids=[g.id]), g.num_rows) for g in fragment.row_groups]
            else:
                parts = [(fragment, fragment.count_rows())]
            for part, n_rows in parts:
                n_rows = int(n_rows)
                if n_rows:
                    pieces.append(_Piece(part, start, n_rows))
                    start += n_rows
        if not pieces:
            raise input_error("X", "at least one row", "an empty Parquet dataset", "Pass data with observations.")
        return pieces

    def _index_series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each series' id, first row and row count, from one read of the id column."""
        ids: list[Any] = []
        starts: list[int] = []
        seen: set[Any] = set()
        for piece in self.pieces:
            values = np.asarray(piece.fragment.to_table(columns=[ID_COLUMN]).column(0).to_numpy())
            if pd.isna(values).any():
                raise input_error(f"X column '{ID_COLUMN}'", "no missing series ids", "missing ids",
                                  "Drop those rows or give them an id.")
            change = np.flatnonzero(values[1:] != values[:-1]) + 1
            heads = np.concatenate([[0], change])
            for position in heads:
                series = values[position].item() if isinstance(values[position], np.generic) else values[position]
                if ids and position == 0 and series == ids[-1]:
                    continue  # the series goes on from the previous row group
                if series in seen:
                    raise input_error(
                        "X",
                        "a Parquet dataset whose rows of each series are contiguous (sorted or grouped by "
                        f"'{ID_COLUMN}')",
                        f"rows of series {series!r} again at row {piece.start + int(position)}, after other series",
                        f"Rewrite the data sorted by '{ID_COLUMN}' (e.g. frame.sort_values(['{ID_COLUMN}', "
                        f"'{TIME_COLUMN}']).to_parquet(...)), or read it into a DataFrame.",
                    )
                seen.add(series)
                ids.append(series)
                starts.append(piece.start + int(position))
        total = self.pieces[-1].start + self.pieces[-1].n_rows
        starts_array = np.asarray(starts, dtype=np.int64)
        lengths = np.diff(np.append(starts_array, total))
        return np.asarray(ids), starts_array, lengths

    # ---------------------------------------------------------------- chunks
    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def n_rows(self) -> int:
        return int(self.lengths.sum())

    @property
    def n_chunks(self) -> int:
        return -(-self.n_series // self.chunk_size)

    def chunk_series(self, k: int) -> slice:
        """The positions (among all series, in scan order) of the series of chunk ``k``."""
        return slice(k * self.chunk_size, min((k + 1) * self.chunk_size, self.n_series))

    def read_frame(self, k: int) -> pd.DataFrame:
        """The rows of chunk ``k`` as a long DataFrame."""
        series = self.chunk_series(k)
        first = int(self.starts[series.start])
        last = int(self.starts[series.stop - 1] + self.lengths[series.stop - 1])
        frames = []
        for piece in self.pieces:
            end = piece.start + piece.n_rows
            if end <= first or piece.start >= last:
                continue
            table = piece.fragment.to_table(columns=self.columns)
            low, high = max(first - piece.start, 0), min(last, end) - piece.start
            frames.append(table.slice(low, high - low).to_pandas(ignore_metadata=True))
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def read(self, k: int, reference: InputSpec | None = None) -> SeriesBatch:
        """Chunk ``k`` as a :class:`SeriesBatch`, checked like a long DataFrame (against ``reference`` when given)."""
        return check_series(self.read_frame(k), reference=reference)


@dataclass
class _Moments:
    """Running per-feature count, mean, sum of squared deviations, min and max over observed entries."""

    count: np.ndarray | None = None
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def add(self, values: np.ndarray, mask: np.ndarray) -> None:
        flat, seen = values.reshape(-1, values.shape[-1]), mask.reshape(-1, mask.shape[-1])
        count = seen.sum(axis=0).astype(np.float64)
        mean = np.where(seen, flat, 0.0).sum(axis=0) / np.maximum(count, 1)
        m2 = ((np.where(seen, flat, mean) - mean) ** 2).sum(axis=0)
        low = np.where(seen, flat, np.inf).min(axis=0)
        high = np.where(seen, flat, -np.inf).max(axis=0)
        if self.count is None:
            self.count, self.mean, self.m2, self.low, self.high = count, mean, m2, low, high
            return
        total = self.count + count
        delta = mean - self.mean
        share = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
        self.m2 = self.m2 + m2 + delta**2 * self.count * share
        self.mean = self.mean + delta * share
        self.count = total
        self.low, self.high = np.minimum(self.low, low), np.maximum(self.high, high)

    def mean_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """As :func:`~dynlearn.data.masked_mean_scale` computes them over all the entries seen."""
        safe = np.maximum(self.count, 1)
        mean = np.where(self.count > 0, self.mean, 0.0)
        scale = np.sqrt(self.m2 / safe)
        constant = self.low >= self.high
        negligible = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
        return mean, np.where(constant | negligible, 1.0, scale)


@dataclass
class SeriesSummary:
    """What a fit reads off all its series before training, gathered one chunk at a time.

    ``values`` and ``inputs`` hold the per-feature moments and ranges of the
    observed states and of the known inputs; ``gaps`` a uniform sample (all
    of them when there are at most ``GAP_SAMPLE``) of the positive gaps
    between consecutive times; ``spans`` every positive span from a series'
    first to its last time (one number per series, like the series index);
    ``first_time`` the earliest time.
    """

    spec: InputSpec
    values: _Moments = field(default_factory=_Moments)
    inputs: _Moments | None = None
    first_time: float = np.inf
    gaps: np.ndarray = field(default_factory=lambda: np.empty(0))
    spans: np.ndarray = field(default_factory=lambda: np.empty(0))
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0))

    def add(self, batch: SeriesBatch, rng: np.random.RandomState) -> None:
        self.values.add(batch.values, batch.mask)
        if batch.inputs is not None:
            self.inputs = self.inputs or _Moments()
            rows = np.broadcast_to(batch.row_mask[..., None], batch.inputs.shape)
            self.inputs.add(batch.inputs, rows)
        self.first_time = min(self.first_time, float(batch.times[:, 0].min()))
        spans = batch.times[np.arange(batch.n_series), batch.lengths - 1] - batch.times[:, 0]
        self.spans = np.concatenate([self.spans, spans[spans > 0]])
        gaps = np.diff(batch.times, axis=1)[batch.row_mask[:, 1:]]
        gaps = gaps[gaps > 0]
        # Bottom-k sampling: every gap gets a uniform key and the k smallest keys are kept.
        keys = np.concatenate([self._keys, rng.random_sample(len(gaps))])
        gaps = np.concatenate([self.gaps, gaps])
        if len(keys) > GAP_SAMPLE:
            keep = np.argpartition(keys, GAP_SAMPLE)[:GAP_SAMPLE]
            keys, gaps = keys[keep], gaps[keep]
        self._keys, self.gaps = keys, gaps

    @property
    def median_gap(self) -> float:
        return float(np.median(self.gaps)) if len(self.gaps) else 1.0

    @property
    def median_window(self) -> float | None:
        """Median positive span of a series (None when no series has one), as in memory."""
        return float(np.median(self.spans)) if len(self.spans) else None


def summarize(source: ParquetSeries, reference: InputSpec, prepare: Callable[[SeriesBatch], SeriesBatch],
              seed: int) -> SeriesSummary:
    """Read every chunk once, checked against ``reference`` (the first chunk's spec).

    ``prepare`` turns a checked chunk into the batch the model sees (known inputs split off).
    """
    summary = SeriesSummary(reference)
    rng = np.random.RandomState(seed)
    for k in range(source.n_chunks):
        summary.add(prepare(source.read(k, reference=reference)), rng)
    return summary

"""Series data: the container, the validation entry point and conversions back.

Every estimator method passes its input through :func:`check_series` and
gets a :class:`SeriesBatch` back; :func:`to_user_kind` formats outputs like
the input was given. Known inputs (covariates) are split off the states by
:func:`split_inputs` and read at query times by :func:`check_query_times`.
"""

from ._container import ID_COLUMN, TIME_COLUMN, InputSpec, QueryTimes, SeriesBatch
from ._inputs import input_columns, split_inputs
from ._scaling import masked_mean_scale
from ._parquet import ParquetSeries, SeriesSummary, is_parquet_source, parquet_series, summarize
from ._output import SAMPLE_LEVEL, as_frame_spec, batch_to_user_kind, to_user_kind
from ._time import TimeEncoding
from ._validation import as_time_values, check_query_times, check_series

__all__ = [
    "ID_COLUMN",
    "SAMPLE_LEVEL",
    "TIME_COLUMN",
    "InputSpec",
    "ParquetSeries",
    "SeriesSummary",
    "QueryTimes",
    "SeriesBatch",
    "TimeEncoding",
    "as_frame_spec",
    "as_time_values",
    "batch_to_user_kind",
    "check_query_times",
    "check_series",
    "input_columns",
    "is_parquet_source",
    "parquet_series",
    "summarize",
    "split_inputs",
    "masked_mean_scale",
    "to_user_kind",
]

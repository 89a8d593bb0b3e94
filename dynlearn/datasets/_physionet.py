"""PhysioNet/CinC Challenge 2012: irregularly sampled ICU time series and outcomes."""

from __future__ import annotations

import io
import numbers
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..data import ID_COLUMN, TIME_COLUMN
from ..exceptions import describe_problem, input_error
from ._fetch import DatasetNotFoundError, PathLike, RemoteFile, extract_archive, fetch_archive, fetch_file
from ._fetch import get_data_home, local_path
from ._real import read_description

TIME_SERIES = (
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine", "DiasABP", "FiO2",
    "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP", "MechVent", "Mg", "NIDiasABP", "NIMAP",
    "NISysABP", "Na", "PaCO2", "PaO2", "Platelets", "RespRate", "SaO2", "SysABP", "Temp", "TroponinI",
    "TroponinT", "Urine", "WBC", "Weight", "pH",
)  # fmt: skip
DESCRIPTORS = ("Age", "Gender", "Height", "ICUType", "Weight")
SUBSETS = ("a", "b", "c")
MISSING = -1.0  # the format's marker of an unknown value

_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
# sha256 of the PhysioNet 1.0.0 files as pinned by public download scripts
# (the set archives also by randolf-scholz/tsdm); Outcomes-a.txt matches the
# byte-for-byte copy behind this project's dataset card.
_SHA256 = {
    "set-a.tar.gz": "8cb250f179cd0952b4b9ebcf8954b63d70383131670fac1cfee13deaa13ca920",
    "set-b.tar.gz": "b1637a2a423a8e76f8f087896cfc5fdf28f88519e1f4e874fbda69b2a64dac30",
    "set-c.tar.gz": "a4a56b95bcee4d50a3874fe298bf2998f2ed0dd98a676579573dc10419329ee1",
    "Outcomes-a.txt": "2613ea60ccda29f87571a7d6b09ad130858a8ccd66325bd073365925026883c2",
    "Outcomes-b.txt": "1305f29734da374a809483229a99f33a9230aa8d4fa74b1a2d6ad788136423d5",
    "Outcomes-c.txt": "0b32dcb7753c0f18f2f5fde498a28618b8879c5e527ce0dae8ad120dd7e205c9",
}
REMOTE_FILES = {name: RemoteFile(name, _URL + name, sha256) for name, sha256 in _SHA256.items()}
_HEADER = b"Time,Parameter,Value\n"
_FIRST_ROW = b"00:00,RecordID,"


def fetch_physionet2012(
    subset: str = "a",
    *,
    data_home: PathLike | None = None,
    download_if_missing: bool = True,
    path: PathLike | None = None,
    quantization: float | None = None,
) -> Bunch:
    """PhysioNet/CinC Challenge 2012: 48 hours of ICU measurements per patient.

    Each of the 4000 records of a subset holds irregular, sparse observations
    of 37 variables over the first 48 hours of an ICU stay, 5 descriptors
    taken at admission, and outcomes (in-hospital death, length of stay,
    severity scores). The set archive and outcomes file are downloaded once
    into the cache and the archive is extracted there.

    Parsing follows the format: a time ``HH:MM`` becomes hours since
    admission; the first ``Age``, ``Gender``, ``Height``, ``ICUType`` and
    ``Weight`` rows at ``00:00`` are the descriptors and any later ``Weight``
    rows are observations; ``-1`` marks an unknown value and becomes NaN.
    Several values of one variable at one time (e.g. two ``Urine`` entries)
    are averaged, as in the Latent ODE preprocessing (Rubanova et al., 2019).

    Parameters
    ----------
    subset : {"a", "b", "c"}, default="a"
        Set A (the training set of the challenge), B or C.
    data_home : str or Path, default=None
        Cache folder; see :func:`get_data_home`.
    download_if_missing : bool, default=True
        If False, raise :class:`DatasetNotFoundError` instead of downloading.
    path : str or Path, default=None
        A local folder in the original layout, holding ``set-<subset>/`` (the
        record files) or ``set-<subset>.tar.gz``, and ``Outcomes-<subset>.txt``.
        Used instead of the cache and never modified.
    quantization : float, default=None
        If given, round every time to a multiple of this many hours (e.g.
        0.1 for 6 minutes, as in Latent ODE) and average the values that then
        share a time.

    Returns
    -------
    data : Bunch
        frame : DataFrame of shape (n_rows, 39)
            Columns ``series_id`` (the RecordID), ``time`` (hours since ICU
            admission) and the 37 variables; one row per record and time
            with at least one observation, NaN where a variable was not
            measured. Sorted by record, then time.
        static : DataFrame of shape (n_records, 5)
            Age (years), Gender (0 female, 1 male), Height (cm), ICUType (1
            coronary care, 2 cardiac surgery recovery, 3 medical, 4 surgical)
            and Weight (kg) at admission, indexed by RecordID; NaN where
            unknown. Records without any observation appear here only.
        outcomes : DataFrame of shape (n_records, 5)
            The outcomes file's columns (SAPS-I, SOFA, Length_of_stay in days,
            Survival in days with -1 for survivors, In-hospital_death 0/1) as
            the file gives them, on the index of ``static``.
        feature_names : list of str
            The 37 variables.
        description : str
            The dataset card: units, source, licence, citation.

    Examples
    --------
    >>> from dynlearn.datasets import fetch_physionet2012
    >>> data = fetch_physionet2012("a", quantization=0.1)  # doctest: +SKIP
    >>> data.static.shape  # doctest: +SKIP
    (4000, 5)
    """
    _check_arguments(subset, quantization)
    records, outcomes = f"set-{subset}", f"Outcomes-{subset}.txt"
    if path is None:
        folder = get_data_home(data_home) / "physionet2012"
        fetch_archive(REMOTE_FILES[f"{records}.tar.gz"], folder, records, download_if_missing)
        fetch_file(REMOTE_FILES[outcomes], folder, download_if_missing)
        return _load(folder / records, folder / outcomes, quantization)
    folder = local_path(path)
    if not (folder / outcomes).is_file():
        raise _not_in_layout(folder, outcomes)
    if (folder / records).is_dir():
        return _load(folder / records, folder / outcomes, quantization)
    if not (folder / f"{records}.tar.gz").is_file():
        raise _not_in_layout(folder, f"{records}/ or {records}.tar.gz")
    with tempfile.TemporaryDirectory() as scratch:
        extract_archive(folder / f"{records}.tar.gz", scratch)
        return _load(Path(scratch) / records, folder / outcomes, quantization)


def _check_arguments(subset: str, quantization: float | None) -> None:
    if subset not in SUBSETS:
        raise input_error("subset", "one of 'a', 'b', 'c'", repr(subset), "E.g. subset='a' (the training set).")
    valid = isinstance(quantization, numbers.Real) and np.isfinite(quantization) and quantization > 0
    if quantization is not None and not valid:
        raise input_error(
            "quantization", "None or a positive number of hours", repr(quantization), "E.g. quantization=0.1."
        )


def _not_in_layout(folder: Path, missing: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        describe_problem(
            "path",
            "a folder in the original layout: set-<subset>/ (or set-<subset>.tar.gz) and Outcomes-<subset>.txt",
            f"{str(folder)!r} without {missing}",
            "Point path at the folder holding both, or leave path=None to download them.",
        )
    )


def _load(records: Path, outcomes: Path, quantization: float | None) -> Bunch:
    rows = _read_records(sorted(records.glob("*.txt")), records)
    starts = rows["parameter"] == "RecordID"
    record_ids = rows.loc[starts, "value"].to_numpy(dtype=np.int64)
    rows[ID_COLUMN] = record_ids[np.cumsum(starts.to_numpy()) - 1]
    rows = rows[~starts]
    descriptors = _descriptor_rows(rows)
    static = (
        descriptors.pivot(index=ID_COLUMN, columns="parameter", values="value")
        .reindex(index=pd.Index(record_ids, name="RecordID"), columns=list(DESCRIPTORS))
        .replace(MISSING, np.nan)
    )
    static.columns.name = None
    frame = _time_series_frame(rows.drop(index=descriptors.index), records, quantization)
    outcome_table = _read_outcomes(outcomes).reindex(static.index)
    return Bunch(
        frame=frame,
        static=static,
        outcomes=outcome_table,
        feature_names=list(TIME_SERIES),
        description=read_description("physionet2012"),
    )


def _read_records(files: list[Path], records: Path) -> pd.DataFrame:
    """All record files as one table (hours, minutes, parameter, value), parsed in one go."""
    if not files:
        raise DatasetNotFoundError(
            describe_problem(
                "path", "record files <RecordID>.txt", f"none in {str(records)!r}", "Pass the original record folder."
            )
        )
    chunks = []
    for file in files:
        data = file.read_bytes()
        if not data.startswith(_HEADER + _FIRST_ROW):
            raise input_error(
                f"record file {str(file)!r}",
                "a PhysioNet 2012 record: the header 'Time,Parameter,Value', then '00:00,RecordID,<id>'",
                repr(data[:48]),
                "Pass the record files as distributed.",
            )
        chunks.append(data[len(_HEADER) :])
        if not data.endswith(b"\n"):
            chunks.append(b"\n")
    # ':' appears only in the HH:MM times, so making it a field separator lets
    # the C parser split hours from minutes: no per-row string work.
    text = b"".join(chunks).replace(b":", b",")
    try:
        return pd.read_csv(
            io.BytesIO(text),
            header=None,
            names=["hours", "minutes", "parameter", "value"],
            dtype={"hours": np.int64, "minutes": np.int64, "parameter": str, "value": np.float64},
        )
    except ValueError as error:  # also UnicodeDecodeError: damaged bytes after a valid start
        raise input_error(
            f"record files in {str(records)!r}",
            "lines 'HH:MM,Parameter,Value' of UTF-8 text after each header",
            f"a line that is not ({type(error).__name__}: {error})",
            "Pass the record files as distributed.",
        ) from None


def _read_outcomes(outcomes: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(outcomes, index_col="RecordID")
    except ValueError as error:  # also UnicodeDecodeError, and a missing RecordID column
        raise input_error(
            f"outcomes file {str(outcomes)!r}",
            "comma-separated UTF-8 text with a header starting 'RecordID'",
            f"a file that is not ({type(error).__name__}: {error})",
            "Pass the outcomes file as distributed.",
        ) from None


def _descriptor_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The first row of each descriptor at 00:00 in every record; later Weight rows are observations."""
    at_admission = rows[(rows["hours"] == 0) & (rows["minutes"] == 0) & rows["parameter"].isin(DESCRIPTORS)]
    return at_admission[~at_admission.duplicated([ID_COLUMN, "parameter"])]


def _time_series_frame(rows: pd.DataFrame, records: Path, quantization: float | None) -> pd.DataFrame:
    # A row without a parameter name carries no variable.
    rows = rows[rows["parameter"].notna()]
    unknown = sorted(set(rows["parameter"].unique()) - set(TIME_SERIES))
    if unknown:
        raise input_error(
            f"record files in {str(records)!r}",
            "the 37 time-series variables of the challenge besides the descriptors",
            f"unknown parameters {unknown[:10]}",
            "Pass the record files as distributed.",
        )
    rows = rows[rows["value"].notna() & (rows["value"] != MISSING)]
    time = rows["hours"] + rows["minutes"] / 60.0
    if quantization is not None:
        time = np.round(time / quantization) * quantization
    wide = (
        rows.assign(**{TIME_COLUMN: time})
        .groupby([ID_COLUMN, TIME_COLUMN, "parameter"], sort=True)["value"]
        .mean()
        .unstack("parameter")
        .reindex(columns=list(TIME_SERIES))
    )
    wide.columns.name = None
    return wide.reset_index()

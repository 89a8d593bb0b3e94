"""Model files that run no code: ``estimator.save(path)`` and :func:`load`.

A model file is a zip archive of two entries:

``model.json``
    The format name and version, the estimator's class name, the dynlearn,
    torch and Python versions that wrote it, the constructor parameters, the
    fitted attributes (numbers, strings, numpy arrays, the input spec and
    time encoding, the training history) as tagged JSON, and the names of
    the module's tensors.
``weights.pt``
    The module's ``state_dict`` (CPU tensors) written by :func:`torch.save`
    and read back with ``torch.load(..., weights_only=True)``.

Loading never unpickles: JSON values are decoded by a fixed table of
types, the class comes from an allowlist of dynlearn estimators, and the
module is rebuilt by the estimator's ``_build_module`` hook from the saved
parameters and attributes before the tensors are copied in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import pickle
import platform
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import pandas as pd
import torch

from .data import InputSpec, TimeEncoding
from .exceptions import ModelFileError, input_error
from .training import History

FORMAT = "dynlearn-model"
FORMAT_VERSION = 1
MODEL_ENTRY = "model.json"
WEIGHTS_ENTRY = "weights.pt"
SUFFIX = ".dlm"

_TAG = "__type__"
_DATACLASSES: dict[str, type] = {"InputSpec": InputSpec, "TimeEncoding": TimeEncoding}
_ARRAY_KINDS = "biufUOMm"  # bool, ints, floats, unicode, objects (encoded one by one), datetimes, timedeltas


# ------------------------------------------------------------------- saving
def save_model(estimator: Any, path: str | os.PathLike) -> Path:
    """Write ``estimator`` to ``path`` as a model file, atomically.

    The file is written to a temporary file beside ``path`` and renamed over
    it only once complete, so a failed write (a full disk, an interrupt)
    leaves any previous file at ``path`` as it was.

    Raises
    ------
    ModelFileError
        If a parameter or fitted attribute is of a type the format cannot
        hold (e.g. ``random_state`` set to a ``RandomState`` instance).
    InputError
        If ``path`` is not a path, is a folder, or is in a folder that does
        not exist.
    OSError
        If the file cannot be written.
    """
    path = _target_path(path)
    document = _describe(estimator)
    module = estimator.__dict__.get("module_")
    weights = io.BytesIO()
    if module is not None:
        torch.save({name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}, weights)

    def write(handle: BinaryIO) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MODEL_ENTRY, json.dumps(document, indent=1, allow_nan=False))
            if module is not None:
                archive.writestr(WEIGHTS_ENTRY, weights.getvalue())

    _write_atomically(path, write)
    return path


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise input_error("path", "a file path (str or path-like)", f"{type(path).__name__} {path!r}",
                          f"Pass e.g. 'model{SUFFIX}'.")
    return Path(path)


def _target_path(path: Any) -> Path:
    """``path`` as a Path to write a model file to: not a folder, in a folder that exists."""
    path = _as_path(path)
    if path.is_dir():
        raise input_error("path", f"a file path, conventionally ending in {SUFFIX}", f"the folder {str(path)!r}",
                          f"Pass a file name in it, e.g. {str(path / ('model' + SUFFIX))!r}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise input_error("path", "a file path in an existing folder", f"{str(path)!r}, whose folder does not exist",
                          "Create the folder first, or pass another path.")
    return path


def _describe(estimator: Any) -> dict[str, Any]:
    from . import __version__

    name = type(estimator).__name__
    if name not in _allowed_classes() or _allowed_classes()[name] is not type(estimator):
        raise ModelFileError(
            f"estimator: expected one of dynlearn's estimators {sorted(_allowed_classes())}; got "
            f"{type(estimator).__module__}.{name}. Subclasses and other objects are saved with pickle."
        )
    params = estimator.get_params(deep=False)
    attributes = {k: v for k, v in vars(estimator).items() if k not in params and k != "module_"}
    module = estimator.__dict__.get("module_")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": name,
        "versions": {"dynlearn": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "params": {k: _encode(v, f"parameter {k!r}") for k, v in params.items()},
        "attributes": {k: _encode(v, f"attribute {k!r}") for k, v in attributes.items()},
        "module": None
        if module is None
        else {"training": bool(module.training), "tensors": sorted(module.state_dict())},
    }


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ------------------------------------------------------------------ loading
def load(path: str | os.PathLike) -> Any:
    """Load an estimator saved with ``estimator.save(path)``.

    No code stored in the file is run: the description is JSON, the class
    must be one of dynlearn's public estimators, and the weights are read
    with ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    path : str or path-like
        A file written by ``save``.

    Returns
    -------
    estimator
        The estimator, fitted if it was saved fitted; on the device it was
        fitted on when that device is available, else on the CPU.

    Raises
    ------
    ModelFileError
        If the file is not a dynlearn model file (or is a folder), is truncated or damaged,
        was written by a newer format version, names a class that is not a
        dynlearn estimator, or holds tensors that do not match the model.
    FileNotFoundError
        If there is no file at ``path``.
    InputError
        If ``path`` is not a str or path-like.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> import dynlearn
    >>> X = np.sin(np.linspace(0, 3, 12))[None, :, None]
    >>> model = dynlearn.NeuralODE(hidden_layer_sizes=(4,), max_epochs=1, random_state=0).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.dlm")
    >>> _ = model.save(path)
    >>> bool(np.array_equal(dynlearn.load(path).predict(X), model.predict(X)))
    True
    """
    path = _as_path(path)
    if path.is_dir():
        raise _not_a_model_file(path, "a folder")
    with open(path, "rb") as handle:
        content = handle.read()
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        names = set(archive.namelist())
        if MODEL_ENTRY not in names:
            raise _not_a_model_file(path, f"an archive without {MODEL_ENTRY}")
        document = json.loads(archive.read(MODEL_ENTRY).decode("utf-8"))
        weights = archive.read(WEIGHTS_ENTRY) if WEIGHTS_ENTRY in names else None
    except zipfile.BadZipFile as error:
        what = "a pickle (a model saved by an older dynlearn with pickle)" if content[:1] == b"\x80" else (
            "a damaged or truncated archive" if content[:2] == b"PK" else "a file that is not a zip archive"
        )
        raise _not_a_model_file(path, what) from error
    except (EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _not_a_model_file(path, f"a damaged archive ({error})") from error
    return _rebuild(document, weights, path)


def _not_a_model_file(path: Path, what: str) -> ModelFileError:
    return ModelFileError(
        f"model file {str(path)!r}: expected a dynlearn model file written by estimator.save; got {what}. "
        "Pass a file written by save (or 'dynlearn fit')."
    )


def _rebuild(document: Any, weights: bytes | None, path: Path) -> Any:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise _not_a_model_file(path, f"a {MODEL_ENTRY} that does not describe a dynlearn model")
    version = document.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise _not_a_model_file(path, f"format version {version!r}")
    if version > FORMAT_VERSION:
        written_by = document.get("versions", {}).get("dynlearn", "a newer version")
        raise ModelFileError(
            f"model file {str(path)!r}: expected format version {FORMAT_VERSION} or older; got version {version} "
            f"(written by dynlearn {written_by}). Upgrade dynlearn to load it."
        )
    name = document.get("estimator")
    classes = _allowed_classes()
    if name not in classes:
        raise ModelFileError(
            f"model file {str(path)!r}: expected one of the estimators {sorted(classes)}; got {name!r}. "
            "Only dynlearn's own estimators are loaded."
        )
    try:
        params = {k: _decode(v) for k, v in document["params"].items()}
        attributes = {k: _decode(v) for k, v in document["attributes"].items()}
        description = document["module"]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _not_a_model_file(path, f"a damaged {MODEL_ENTRY} ({type(error).__name__}: {error})") from error
    estimator = classes[name]()
    unknown = sorted(set(params) - set(estimator.get_params(deep=False)))
    if unknown:
        raise ModelFileError(
            f"model file {str(path)!r}: expected parameters of {name} in this dynlearn version; got unknown "
            f"parameter(s) {unknown} (written by dynlearn {document.get('versions', {}).get('dynlearn')}). "
            "Upgrade dynlearn to load it."
        )
    estimator.set_params(**params)
    estimator.__dict__.update(attributes)
    if description is not None:
        if weights is None:
            raise _not_a_model_file(path, f"a fitted model without {WEIGHTS_ENTRY}")
        estimator.module_ = _rebuild_module(estimator, description, _read_tensors(weights, path), path)
    return estimator


def _read_tensors(weights: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"model file {str(path)!r}: expected {WEIGHTS_ENTRY} to hold only tensors; got content that "
            f"torch.load(weights_only=True) refuses ({first_line}). The file was not loaded: it may have been "
            "tampered with; load only files written by save."
        ) from error
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise ModelFileError(
            f"model file {str(path)!r}: expected {WEIGHTS_ENTRY} to hold a dict of named tensors; got "
            f"{type(tensors).__name__}. Load only files written by save."
        )
    return tensors


def _rebuild_module(estimator: Any, description: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path):
    # Building draws initial weights; they are overwritten below, and fork_rng keeps the global seed untouched.
    with torch.random.fork_rng(devices=[]):
        module = estimator._build_module()
    module.to(dtype=estimator.dtype_)
    expected = set(module.state_dict())
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ModelFileError(
            f"model file {str(path)!r}: expected the {len(expected)} tensors of a {type(estimator).__name__} "
            f"module; got {len(missing)} missing {missing[:5]} and {len(extra)} unexpected {extra[:5]}. "
            "The file is damaged or was edited; refit and save again."
        )
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise ModelFileError(
            f"model file {str(path)!r}: expected tensors of the shapes the model has; got {detail[:300]}. "
            "The file is damaged or was edited; refit and save again."
        ) from error
    module.train(bool(description.get("training", False)))
    device = getattr(estimator, "device_", torch.device("cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")
    estimator.device_ = device
    return module.to(device)


def _allowed_classes() -> dict[str, type]:
    from . import estimators
    from ._auto import LastValueForecaster, SeasonalNaiveForecaster

    return {**{name: getattr(estimators, name) for name in estimators.__all__},
            "LastValueForecaster": LastValueForecaster, "SeasonalNaiveForecaster": SeasonalNaiveForecaster}


# ------------------------------------------------------------ JSON values
def _encode(value: Any, where: str) -> Any:
    """``value`` as JSON, with the types JSON lacks tagged by ``__type__``."""
    if value is None or isinstance(value, (bool, str)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return {_TAG: "numpy.scalar", "dtype": value.dtype.str, "value": _encode(value.item(), where)}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else {_TAG: "float", "value": repr(float(value))}
    if isinstance(value, History):
        return {_TAG: "History", "items": [_encode(item, where) for item in value]}
    if isinstance(value, list) and type(value) is list:
        return [_encode(item, where) for item in value]
    if isinstance(value, tuple) and type(value) is tuple:
        return {_TAG: "tuple", "items": [_encode(item, where) for item in value]}
    if isinstance(value, dict) and type(value) is dict:
        return {_TAG: "dict", "items": [[_encode(k, where), _encode(v, where)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        return _encode_array(value, where)
    if isinstance(value, torch.Tensor):  # partial_fit's optimiser state: moments and step counts
        if value.dtype == torch.bfloat16 or value.is_complex():
            raise ModelFileError(f"{where}: a {value.dtype} tensor has no portable array to save; save with pickle.")
        array = value.detach().cpu().numpy()
        return {_TAG: "torch.Tensor", "array": _encode_array(array, where)}
    if isinstance(value, torch.device):
        return {_TAG: "torch.device", "value": str(value)}
    if isinstance(value, torch.dtype):
        return {_TAG: "torch.dtype", "value": str(value).removeprefix("torch.")}
    if isinstance(value, pd.Timestamp):
        return {_TAG: "Timestamp", "value": value.isoformat(), "tz": None if value.tz is None else str(value.tz),
                "unit": value.unit}
    if isinstance(value, pd.Timedelta):
        return {_TAG: "Timedelta", "value": int(value.value), "unit": value.unit}
    if isinstance(value, (np.dtype, pd.api.extensions.ExtensionDtype)):
        return {_TAG: "dtype", "value": str(value)}
    if dataclasses.is_dataclass(value) and _DATACLASSES.get(type(value).__name__) is type(value):
        fields = {f.name: _encode(getattr(value, f.name), where) for f in dataclasses.fields(value)}
        return {_TAG: "dataclass", "class": type(value).__name__, "fields": fields}
    raise ModelFileError(
        f"{where}: expected numbers, strings, numpy arrays or dynlearn's own records to save; got a "
        f"{type(value).__module__}.{type(value).__name__}. Set it to a plain value (e.g. an int random_state), "
        "or save with pickle."
    )


def _encode_array(array: np.ndarray, where: str) -> dict[str, Any]:
    if array.dtype.kind not in _ARRAY_KINDS or array.dtype.fields is not None:
        raise ModelFileError(
            f"{where}: expected an array of numbers, strings or objects to save; got dtype {array.dtype}. "
            "Convert it to a plain dtype, or save with pickle."
        )
    if array.dtype.kind in "Mm":
        data = array.view(np.int64).ravel().tolist()
    elif array.dtype.kind == "O":
        data = [_encode(item, where) for item in array.ravel()]
    else:
        data = [_encode(item, where) for item in array.ravel().tolist()]
    return {_TAG: "ndarray", "dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`; unknown tags are errors, never code."""
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value[_TAG]
    if tag == "tuple":
        return tuple(_decode(item) for item in value["items"])
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in value["items"]}
    if tag == "History":
        return History(_decode(item) for item in value["items"])
    if tag == "float":
        return float(value["value"])
    if tag == "numpy.scalar":
        return np.dtype(value["dtype"]).type(_decode(value["value"]))
    if tag == "ndarray":
        return _decode_array(value)
    if tag == "torch.Tensor":
        return torch.from_numpy(_decode_array(value["array"]))
    if tag == "torch.device":
        return torch.device(value["value"])
    if tag == "torch.dtype":
        dtype = getattr(torch, value["value"], None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown torch dtype {value['value']!r}")
        return dtype
    if tag == "Timestamp":
        stamp = pd.Timestamp(value["value"])
        if value["tz"] is not None:
            stamp = stamp.tz_convert(value["tz"])
        return stamp.as_unit(value["unit"])
    if tag == "Timedelta":
        return pd.Timedelta(value["value"], unit="ns").as_unit(value["unit"])
    if tag == "dtype":
        return pd.api.types.pandas_dtype(value["value"])
    if tag == "dataclass":
        return _DATACLASSES[value["class"]](**{k: _decode(v) for k, v in value["fields"].items()})
    raise ValueError(f"unknown value type {tag!r}")


def _decode_array(value: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(value["dtype"])
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
        raise ValueError(f"unsupported array dtype {dtype}")
    shape = tuple(int(n) for n in value["shape"])
    if dtype.kind in "Mm":
        return np.asarray(value["data"], dtype=np.int64).view(dtype).reshape(shape)
    data = [_decode(item) for item in value["data"]]
    array = np.empty(len(data), dtype=dtype)
    array[:] = data if dtype.kind != "O" else _object_items(data)
    return array.reshape(shape)


def _object_items(items: list[Any]) -> np.ndarray:
    # Filling an object array from a list of tuples would unpack them; go item by item.
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out

"""Request and response bodies <-> named numpy tensors, for SageMaker and the Open Inference Protocol v2.

Pure functions on bytes: no HTTP objects. Every problem with a body raises a typed error from
``serve.errors`` (InvalidInput 400, NotAcceptable 406, UnsupportedMediaType 415) whose message names what
was expected and what was given.

Conventions:
    * Tensors travel as nested JSON lists, ``.npy``/``.npz`` files (never unpickled: object arrays are
      refused) or raw little-endian bytes (row-major, no padding; BOOL is one byte, 0 or 1).
    * JSON numbers are cast to the model input's dtype when that is safe: any number to a float input,
      integers to an integer input when every value fits. Floats are never cast to integers, numbers never
      to booleans.
    * JSON output writes non-finite floats as the tokens ``NaN``, ``Infinity`` and ``-Infinity``, as Python's
      ``json`` does (and reads back), never as null; strict JSON parsers refuse these tokens.
    * JSON is parsed and written with ``orjson`` when it is installed (about 5-10x faster on tensors), with
      the stdlib ``json`` as the fallback and the arbiter of NaN tokens, duplicate keys and error messages.
    * A ``bfloat16`` array saved with ``np.save`` has the descriptor ``<V2``; such a body is read as
      bfloat16 when the model input is bfloat16, and bfloat16 outputs sent as ``.npy`` carry ``<V2`` too.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInput, NotAcceptable, ServeError, UnsupportedMediaType

try:  # optional and ~10x faster than the stdlib on tensors; every answer is checked against json's semantics
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

if TYPE_CHECKING:
    from ..artifact import IOSpec

V2_DATATYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16",
    "BYTES": "object",  # strings: no mlxport model takes them, so a BYTES input is a 400 (datatype mismatch)
}
_V2_FROM_NUMPY = {v: k for k, v in V2_DATATYPES.items()}

JSON = "application/json"
NPY = "application/x-npy"
NPZ = "application/x-npz"
OCTET = "application/octet-stream"
SAGEMAKER_CONTENT_TYPES = (JSON, NPY, NPZ, OCTET)

# Decompressed size allowed for all members of one .npz body: a compressed archive of zeros can expand
# 1000x, so the declared sizes are checked before anything is inflated.
NPZ_MAX_BYTES = 256 << 20

_TF_EXTRA_KEYS = frozenset({"signature_name"})


@dataclass
class V2Request:
    """A decoded Open Inference Protocol infer request.

    Attributes:
        id: The request id, echoed in the response; None when the client sent none.
        feed: Model input name -> C-contiguous array of the model's dtype, in model input order.
        outputs: Requested output names in request order; None means every output.
        binary_outputs: Output name -> whether it goes back as binary data (per-output
            ``parameters.binary_data``, else the request-level ``binary_data_output``).
        parameters: The request-level ``parameters`` object as sent.
    """

    id: str | None
    feed: dict[str, np.ndarray]
    outputs: list[str] | None = None
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- dtypes


@lru_cache(maxsize=None)
def _np_dtype(name: str) -> np.dtype:
    """Numpy dtype for a dtype name, including ml_dtypes' bfloat16 and float8 types."""
    from ..dtypes import numpy_dtype

    try:
        return numpy_dtype(name)
    except TypeError:
        raise ServeError(f"model dtype {name!r} is not a numpy or ml_dtypes type") from None


def _kind(dt: np.dtype) -> str:
    """'b', 'i', 'u' or 'f' (ml_dtypes floats included); 'x' for anything else."""
    if dt.kind in "biuf":
        return dt.kind
    if dt.kind == "V" and dt.fields is None and dt.name.startswith(("bfloat", "float")):
        return "f"
    return "x"


@lru_cache(maxsize=None)
def _max_value(dt: np.dtype) -> float:
    if dt.kind in "iub":
        return float(np.iinfo(dt).max) if dt.kind != "b" else 1.0
    if dt.kind == "f":
        return float(np.finfo(dt).max)
    import ml_dtypes

    return float(ml_dtypes.finfo(dt).max)


def v2_datatype(dtype: str) -> str:
    """Open Inference Protocol datatype for a numpy dtype name.

    Args:
        dtype: A numpy (or ml_dtypes) dtype name such as ``"float32"`` or ``"bfloat16"``.

    Returns:
        The v2 datatype, e.g. ``"FP32"``.

    Raises:
        ServeError: The dtype has no v2 datatype (a model problem, so 500).
    """
    v2 = _V2_FROM_NUMPY.get(dtype)
    if v2 is None:
        v2 = _V2_FROM_NUMPY.get(_np_dtype(dtype).name)
    if v2 is None:
        raise ServeError(
            f"dtype {dtype!r} has no Open Inference Protocol datatype; supported: {', '.join(_V2_FROM_NUMPY)}"
        )
    return v2


# ------------------------------------------------------------------------------------------ checking


def _shape_str(shape: Sequence[Any]) -> str:
    return "[" + ",".join("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape) + "]"


def _check_names(given: Sequence[str], inputs: Sequence[IOSpec], what: str = "inputs") -> None:
    """Raise unless ``given`` names every model input exactly once and nothing else."""
    expected = [s.name for s in inputs]
    if len(given) == len(expected) and set(given) == set(expected):
        return
    dups = sorted(n for n, c in Counter(given).items() if c > 1)
    unknown = [n for n in given if n not in expected]
    missing = [n for n in expected if n not in given]
    parts = [f"duplicate {dups}"] if dups else []
    parts += [f"unknown {unknown}"] if unknown else []
    parts += [f"missing {missing}"] if missing else []
    raise InvalidInput(
        f"model {what} are {expected} ({', '.join(s.describe() for s in inputs)}); given {list(given)}: "
        f"{', '.join(parts)}"
    )


def _cast(arr: np.ndarray, target: np.dtype, name: str) -> np.ndarray:
    """Cast ``arr`` to ``target`` when safe (see the module docstring), else raise InvalidInput."""
    src = arr.dtype
    if src == target:
        return arr
    tk, sk = _kind(target), _kind(src)
    if tk == "f" and sk in "iuf":
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(target)
        if arr.size and _max_value(src) > _max_value(target):
            bad = ~np.isfinite(out)
            if bad.any() and (sk != "f" or np.isfinite(arr[bad]).any()):
                raise InvalidInput(
                    f"input '{name}': a value is out of range for {target.name} (largest finite "
                    f"{_max_value(target):g}); given {src.name} data up to {np.abs(arr).max()}"
                )
        return out
    if tk in "iu" and sk in "iu":
        info = np.iinfo(target)
        if arr.size:
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise InvalidInput(
                    f"input '{name}': values must fit {target.name} [{info.min}, {info.max}]; "
                    f"given values in [{lo}, {hi}]"
                )
        return arr.astype(target)
    if target.name == "bfloat16" and src.kind == "V" and src.itemsize == 2 and src.fields is None:
        return arr.view(target)  # np.save writes bfloat16 as '<V2'
    if tk in "iu" and sk == "f":
        hint = "floats are never cast to integers: send whole numbers"
    elif tk == "b":
        hint = "send true/false"
    elif src.kind == "O":
        hint = "data must hold only numbers (or only true/false): no null, strings, objects or integers beyond 64 bits"
    elif src.kind in "SUa":
        hint = "data must be numbers, not strings"
    else:
        hint = f"send {target.name} data"
    v2 = _V2_FROM_NUMPY.get(target.name, target.name)
    raise InvalidInput(f"input '{name}': expected dtype {target.name} ({v2}), given {src.name}; {hint}")


def _conform(arr: np.ndarray, spec: IOSpec) -> np.ndarray:
    """Check rank, fixed dims and dtype of one input; return a C-contiguous array of the spec's dtype."""
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    want = spec.shape
    if arr.ndim != len(want):
        raise InvalidInput(
            f"input '{spec.name}': expected rank {len(want)} shape {_shape_str(want)}, "
            f"given rank {arr.ndim} shape {list(arr.shape)}"
        )
    for axis, (w, g) in enumerate(zip(want, arr.shape)):
        if isinstance(w, int) and w >= 0 and w != g:
            raise InvalidInput(
                f"input '{spec.name}': dimension {axis} must be {w} (shape {_shape_str(want)}), "
                f"given {g} (shape {list(arr.shape)})"
            )
    arr = _cast(arr, _np_dtype(spec.dtype), spec.name)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


def check_feed(feed: dict[str, np.ndarray], inputs: list[IOSpec]) -> dict[str, np.ndarray]:
    """Check a feed against the model's inputs and cast it safely.

    Every input must be present once, with no unknown names; rank and fixed dims must match; the dtype must
    be the input's or safely castable to it (JSON numbers to float/int inputs; never float to int, never an
    integer that does not fit).

    Args:
        feed: Input name -> array (or anything ``np.asarray`` accepts).
        inputs: The model's input specs.

    Returns:
        Input name -> C-contiguous array of the input's dtype, in model input order.

    Raises:
        InvalidInput: A name, rank, dimension or dtype is wrong; the message names expected and given.
    """
    _check_names(list(feed), inputs)
    return {spec.name: _conform(feed[spec.name], spec) for spec in inputs}


# --------------------------------------------------------------------------------------- JSON bodies


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: refuse duplicate keys instead of keeping the last."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        dup = next(k for k, c in Counter(k for k, _ in pairs).items() if c > 1)
        raise InvalidInput(f"duplicate key '{dup}' in a JSON object; expected each name once")
    return obj


def _count_keys(node: Any) -> int:
    """Keys of every object in a parsed document; lists of numbers are skipped by their first element."""
    if isinstance(node, dict):
        return len(node) + sum(_count_keys(v) for v in node.values() if isinstance(v, (dict, list)))
    if isinstance(node, list) and node and isinstance(node[0], (dict, list)):
        return sum(_count_keys(v) for v in node)
    return 0


def _load_json(data: bytes, extra_hint: str = "") -> Any:
    if _orjson is not None:
        # orjson keeps the last of duplicate keys and refuses NaN/Infinity and >64-bit integers. Every ':' in
        # the body is a key separator unless it sits in a string, so when the colons equal the parsed keys there
        # were no duplicates (and no colon in strings); otherwise the stdlib parser decides and explains.
        try:
            doc = _orjson.loads(data)
            if _count_keys(doc) == data.count(b":"):
                return doc
        except (_orjson.JSONDecodeError, RecursionError):
            pass
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno} (byte {exc.pos} of "
            f"{len(data)}); expected one JSON document{extra_hint if exc.msg == 'Extra data' else ''}"
        ) from None
    except ValueError as exc:  # bytes that are not UTF-8/16/32
        raise InvalidInput(f"body is not UTF-8 JSON ({exc}); expected a JSON document") from None
    except RecursionError:
        raise InvalidInput("JSON body is nested too deeply; expected tensors of at most 64 dimensions") from None


def _dumps(doc: Any, arrays: Sequence[np.ndarray]) -> bytes:
    """Compact JSON; non-finite floats go through the stdlib, which writes NaN/Infinity (orjson writes null)."""
    if _orjson is not None and all(_kind(a.dtype) != "f" or np.isfinite(a).all() for a in arrays):
        return _orjson.dumps(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


def _from_json(value: Any, name: str) -> np.ndarray:
    """Nested (or flat) JSON list of numbers/booleans -> ndarray; dtype is checked by check_feed."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"input '{name}': data must be a rectangular nested list of numbers; given rows of different "
            f"lengths or mixed lists and numbers ({exc})"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(
            f"input '{name}': data must hold only numbers (or only true/false); given {type(value).__name__} "
            f"with null, strings, objects or integers beyond 64 bits (numpy made dtype {arr.dtype})"
        )
    return arr


def _single(inputs: Sequence[IOSpec], what: str) -> str:
    """Name of the only input, or InvalidInput naming the inputs when the model has several."""
    if len(inputs) == 1:
        return inputs[0].name
    raise InvalidInput(
        f"{what} only works for a single-input model; this model has {len(inputs)} inputs "
        f"({', '.join(s.describe() for s in inputs)}): send a JSON object keyed by input name or an .npz"
    )


def _by_name(obj: dict[str, Any], inputs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    _check_names(list(obj), inputs)
    return {k: _from_json(v, k) for k, v in obj.items()}


def _instances(rows: Any, inputs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    """TF-Serving row format: rows stacked on axis 0; a row is a value or a dict name -> value."""
    if not isinstance(rows, list) or not rows:
        raise InvalidInput(f"'instances' must be a non-empty list of rows; given {type(rows).__name__} {rows!r:.60}")
    dict_rows = sum(isinstance(r, dict) for r in rows)
    if dict_rows == 0:
        return {_single(inputs, "'instances' with rows that are not objects"): _from_json(rows, inputs[0].name)}
    if dict_rows != len(rows):
        raise InvalidInput("'instances' mixes rows that are objects with rows that are not; expected one kind")
    keys = list(rows[0])
    for i, row in enumerate(rows):
        if row.keys() != rows[0].keys():
            raise InvalidInput(f"'instances' row {i} has keys {list(row)}; row 0 has {keys}: every row needs the same")
    _check_names(keys, inputs)
    return {k: _from_json([row[k] for row in rows], k) for k in keys}


def _sagemaker_json(body: bytes, inputs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    doc = _load_json(body)
    names = {s.name for s in inputs}
    if isinstance(doc, list):
        return {_single(inputs, "a bare JSON list"): _from_json(doc, inputs[0].name)}
    if not isinstance(doc, dict):
        raise InvalidInput(
            f"JSON body must be an object or a list; given {type(doc).__name__}. Send "
            '{"inputs": {name: data}}, {"instances": [row, ...]} or {name: data, ...}'
        )
    for key in ("inputs", "instances"):
        if key in doc and key not in names:
            extra = sorted(set(doc) - {key} - _TF_EXTRA_KEYS)
            if extra:
                raise InvalidInput(f"unexpected keys {extra} next to '{key}'; expected only '{key}' (and 'signature_name')")
            value = doc[key]
            if key == "instances":
                return _instances(value, inputs)
            if isinstance(value, dict):
                return _by_name(value, inputs)
            return {_single(inputs, "'inputs' given as a list"): _from_json(value, inputs[0].name)}
    return _by_name(doc, inputs)


# --------------------------------------------------------------------------------------- binary bodies


def _check_bool_bytes(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        raise InvalidInput(f"input '{name}': BOOL bytes must be 0 or 1; given a byte of {int(arr.view(np.uint8).max())}")


# The header np.save writes for a plain array; matching it skips numpy's literal_eval-based parser (~60 µs).
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z][0-9]{1,2})', 'fortran_order': (True|False), 'shape': \(((?:[0-9]+, ?)*[0-9]*)\), \} *\n")


def _fast_npy_header(data: bytes | memoryview) -> tuple[tuple[int, ...], bool, np.dtype, int] | None:
    head = bytes(data[:10])
    if len(head) < 10 or head[:8] != b"\x93NUMPY\x01\x00":
        return None
    length = int.from_bytes(head[8:10], "little")
    match = _NPY_HEADER.fullmatch(bytes(data[10:10 + length]))
    if match is None:
        return None
    try:
        dtype = np.dtype(match.group(1).decode())
    except TypeError:
        return None
    shape = tuple(int(d) for d in match.group(3).split(b",") if d.strip())
    return shape, match.group(2) == b"True", dtype, 10 + length


def _read_npy(data: bytes | memoryview, what: str) -> np.ndarray:
    """Parse one .npy without allocating from the header's word: sizes are checked against the bytes."""
    fast = _fast_npy_header(data)
    if fast is not None:
        shape, fortran, dtype, offset = fast
        return _npy_array(data, what, shape, fortran, dtype, offset)
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise InvalidInput(f"{what} is not a valid .npy file ({exc}); expected the bytes np.save writes") from None
    if dtype.hasobject:
        raise InvalidInput(
            f"{what} holds a Python object array ({dtype}), which would need unpickling; pickled data is "
            "refused: send a numeric array"
        )
    if dtype.fields is not None or dtype.itemsize == 0:
        raise InvalidInput(f"{what} has dtype {dtype}; expected a plain numeric array (no structured or empty dtypes)")
    return _npy_array(data, what, shape, fortran, dtype, fp.tell())


def _npy_array(data: bytes | memoryview, what: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
               offset: int) -> np.ndarray:
    if dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
        raise InvalidInput(f"{what} has dtype {dtype}; expected a plain numeric array (no object, structured or "
                           "empty dtypes; pickled data is refused)")
    count = math.prod(shape)
    need, have = count * dtype.itemsize, len(data) - offset
    if need != have:
        raise InvalidInput(
            f"{what}: header says {dtype}{list(shape)} = {need} bytes of data, given {have} bytes"
            f"{' (truncated?)' if have < need else ''}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    arr = arr.reshape(shape, order="F" if fortran else "C")
    _check_bool_bytes(arr, what)
    return arr


def _read_npz(body: bytes, inputs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(body))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise InvalidInput(f"body is not a valid .npz (zip) archive ({exc}); expected the bytes np.savez writes") from None
    names = []
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise InvalidInput(f".npz member '{info.filename}' is not a .npy file; expected <input name>.npy members")
        names.append(info.filename[:-4])
    total = sum(info.file_size for info in infos)
    if total > NPZ_MAX_BYTES:
        raise InvalidInput(f".npz members expand to {total} bytes; at most {NPZ_MAX_BYTES} bytes are accepted")
    if len(inputs) == 1 and names == ["arr_0"]:  # np.savez(f, x) with a positional array
        names = [inputs[0].name]
    _check_names(names, inputs)
    feed = {}
    for name, info in zip(names, infos):
        try:
            data = zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise InvalidInput(f".npz member '{info.filename}' cannot be read ({exc}); the archive is damaged") from None
        feed[name] = _read_npy(data, f".npz member '{info.filename}'")
    return feed


def _read_raw(body: bytes, inputs: Sequence[IOSpec]) -> dict[str, np.ndarray]:
    """application/octet-stream: the single input's dtype, little-endian, reshaped to (-1, *fixed dims)."""
    name = _single(inputs, "an application/octet-stream body")
    spec = inputs[0]
    dt = _np_dtype(spec.dtype).newbyteorder("<")
    rest = list(spec.shape[1:])
    if any(not (isinstance(d, int) and d >= 0) for d in rest):
        raise InvalidInput(
            f"an application/octet-stream body needs every dimension but the first fixed; input {spec.describe()} "
            "has more dynamic dimensions: send application/x-npy or JSON"
        )
    row = dt.itemsize * math.prod(rest)
    if not spec.shape:
        if len(body) != dt.itemsize:
            raise InvalidInput(f"input '{name}' is a {dt.name} scalar: expected {dt.itemsize} bytes, given {len(body)}")
        return {name: np.frombuffer(body, dtype=dt).reshape(())}
    if not row or not body or len(body) % row:
        raise InvalidInput(
            f"input {spec.describe()}: a row is {row} bytes ({dt.name} x {_shape_str(rest)}); given {len(body)} "
            "bytes, not a whole, non-zero number of rows"
        )
    arr = np.frombuffer(body, dtype=dt).reshape(-1, *rest)
    _check_bool_bytes(arr, name)
    return {name: arr}


def _media_type(header: str | None) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json'; None or empty -> ''."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


# --------------------------------------------------------------------------------------------- SageMaker


def decode_sagemaker(body: bytes, content_type: str | None, inputs: list[IOSpec]) -> dict[str, np.ndarray]:
    """Decode a SageMaker ``/invocations`` body into a checked feed.

    Args:
        body: The request body.
        content_type: The Content-Type header (parameters ignored); None or empty means application/json.
            ``application/json``: ``{"inputs": {name: data}}``, ``{"inputs": data}`` (one input),
            ``{"instances": [row, ...]}`` (rows stacked on axis 0; a row may be ``{name: value}``), a bare
            list (one input) or ``{name: data, ...}``. ``application/x-npy``: one ``np.save``'d array (one
            input). ``application/x-npz``: ``np.savez`` keyed by input name. ``application/octet-stream``:
            raw little-endian bytes of the single input's dtype, reshaped to ``(-1, *fixed dims)``.
        inputs: The model's input specs.

    Returns:
        Input name -> C-contiguous array of the input's dtype, in model input order.

    Raises:
        InvalidInput: Malformed body, or wrong names, shapes or dtypes.
        UnsupportedMediaType: The content type is none of the four above.
    """
    media = _media_type(content_type) or JSON
    if media == JSON:
        feed = _sagemaker_json(body, inputs)
    elif media == NPY:
        feed = {_single(inputs, "an application/x-npy body"): _read_npy(body, "the application/x-npy body")}
    elif media == NPZ:
        feed = _read_npz(body, inputs)
    elif media == OCTET:
        feed = _read_raw(body, inputs)
    else:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type}' is not supported; send one of {', '.join(SAGEMAKER_CONTENT_TYPES)}"
        )
    return check_feed(feed, inputs)


def _negotiate(accept: str | None, n_outputs: int) -> str:
    """Pick the response type: highest q first, then header order; a wildcard means JSON unless refused."""
    if not accept or accept == JSON or accept == "*/*":
        return JSON
    ranked = []
    for i, part in enumerate(accept.split(",")):
        media, *params = part.split(";")
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if 0.0 <= q <= 1.0 else 0.0  # also drops nan
        ranked.append((-q, i, media.strip().lower()))
    ranked.sort()
    refused = {media for neg_q, _, media in ranked if neg_q >= 0}
    for neg_q, _, media in ranked:
        if neg_q >= 0:
            break
        if media in ("*/*", "application/*"):
            # a wildcard means our preference order, minus what the client refused with q=0
            options = (JSON, NPZ, NPY, OCTET) if n_outputs == 1 else (JSON, NPZ)
            media = next((m for m in options if m not in refused), "")
        if media in (JSON, NPZ) or (media in (NPY, OCTET) and n_outputs == 1):
            return media
    raise NotAcceptable(
        f"Accept '{accept}' names no type this endpoint can produce for {n_outputs} output(s); supported: "
        f"{JSON}, {NPZ}, and for a single-output model {NPY} and {OCTET}"
    )


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _le_bytes(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def encode_sagemaker(outputs: list[np.ndarray], output_names: list[str], accept: str | None) -> tuple[bytes, str]:
    """Encode model outputs for a SageMaker response.

    Args:
        outputs: The output arrays, in model output order.
        output_names: Their names.
        accept: The Accept header (media ranges with q-values); None, empty or ``*/*`` means JSON.
            ``application/json``: ``{"outputs": {name: nested list}}`` plus ``"predictions": nested list``
            for a single output; ``application/x-npz``: ``np.savez``-compatible, keyed by name;
            ``application/x-npy`` and ``application/octet-stream`` (single output): the array as ``.npy`` or
            raw little-endian bytes.

    Returns:
        (body, content type).

    Raises:
        NotAcceptable: No acceptable type can hold these outputs.
    """
    if len(outputs) != len(output_names):
        raise ServeError(f"{len(outputs)} outputs but {len(output_names)} output names")
    media = _negotiate(accept, len(outputs))
    if media == JSON:
        lists = {name: arr.tolist() for name, arr in zip(output_names, outputs)}
        doc: dict[str, Any] = {"outputs": lists}
        if len(outputs) == 1:
            doc["predictions"] = lists[output_names[0]]
        return _dumps(doc, outputs), JSON
    if media == NPY:
        return _npy_bytes(outputs[0]), NPY
    if media == OCTET:
        return _le_bytes(outputs[0]), OCTET
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in zip(output_names, outputs):
            zf.writestr(f"{name}.npy", _npy_bytes(arr))
    return buf.getvalue(), NPZ


# ----------------------------------------------------------------------------- Open Inference Protocol


def _v2_input(
    item: Any, index: int, by_name: dict[str, IOSpec], tail: memoryview, offset: int, binary: bool
) -> tuple[str, np.ndarray, int]:
    """Decode one entry of "inputs"; returns (name, array, new binary offset)."""
    if not isinstance(item, dict):
        raise InvalidInput(f"inputs[{index}] must be an object with name, shape, datatype, data; given {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidInput(f"inputs[{index}].name must be a string; given {name!r:.60}")
    spec = by_name.get(name)
    if spec is None:
        raise InvalidInput(
            f"inputs[{index}]: unknown input '{name}'; model inputs are {[s.describe() for s in by_name.values()]}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers; given {shape!r:.80}")
    datatype = item.get("datatype")
    expected = v2_datatype(spec.dtype)
    if datatype != expected:
        known = datatype in V2_DATATYPES
        raise InvalidInput(
            f"input '{name}': expected datatype {expected} ({spec.describe()}), given {datatype!r}"
            + ("" if known else f"; datatypes are {', '.join(V2_DATATYPES)}")
        )
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"input '{name}': parameters must be an object; given {type(params).__name__}")
    count = math.prod(shape)
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidInput(f"input '{name}': give 'data' (JSON) or parameters.binary_data_size (binary); given neither")
        arr = _from_json(item["data"], name)
        if arr.size != count:
            raise InvalidInput(f"input '{name}': shape {shape} needs {count} elements, given {arr.size} in data")
        return name, arr.reshape(shape), offset
    if not binary:
        raise InvalidInput(
            f"input '{name}' has parameters.binary_data_size but the request has no Inference-Header-Content-Length "
            "header; send the header with the JSON length"
        )
    if "data" in item:
        raise InvalidInput(f"input '{name}': give either 'data' or parameters.binary_data_size, not both")
    dt = _np_dtype(V2_DATATYPES[datatype]).newbyteorder("<")
    need = count * dt.itemsize
    if not isinstance(size, int) or isinstance(size, bool) or size != need:
        raise InvalidInput(
            f"input '{name}': {datatype}{shape} is {need} bytes; given binary_data_size {size!r}"
        )
    if offset + size > len(tail):
        raise InvalidInput(
            f"input '{name}': needs bytes {offset}..{offset + size} of the binary section, which has only "
            f"{len(tail)} bytes (body truncated?)"
        )
    arr = np.frombuffer(tail, dtype=dt, count=count, offset=offset).reshape(shape)
    _check_bool_bytes(arr, name)
    return name, arr, offset + size


def _v2_outputs(
    raw: Any, default_binary: bool, output_specs: Sequence[IOSpec] | None
) -> tuple[list[str] | None, dict[str, bool]]:
    if raw is None:
        names = [s.name for s in output_specs] if output_specs is not None else []
        return None, {n: default_binary for n in names}
    if not isinstance(raw, list):
        raise InvalidInput(f"'outputs' must be a list of {{name, parameters?}}; given {type(raw).__name__}")
    known = [s.name for s in output_specs] if output_specs is not None else None
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidInput(f"outputs[{i}] must be an object with a string 'name'; given {item!r:.80}")
        if name in binary:
            raise InvalidInput(f"output '{name}' is requested twice; expected each output once")
        if known is not None and name not in known:
            raise InvalidInput(f"outputs[{i}]: unknown output '{name}'; model outputs are {known}")
        params = item.get("parameters") or {}
        flag = params.get("binary_data", default_binary) if isinstance(params, dict) else None
        if not isinstance(flag, bool):
            raise InvalidInput(f"output '{name}': parameters must be an object with boolean binary_data; given {params!r:.80}")
        names.append(name)
        binary[name] = flag
    return names, binary


def decode_v2(
    body: bytes, header_length: int | None, inputs: list[IOSpec], output_specs: list[IOSpec] | None = None
) -> V2Request:
    """Decode an Open Inference Protocol v2 infer request (JSON, or JSON + binary tensor extension).

    Args:
        body: The request body.
        header_length: The Inference-Header-Content-Length header as an int; None when absent (the whole
            body is JSON). With it, the first ``header_length`` bytes are JSON and the rest holds the
            binary inputs, in the order the JSON lists them, with sizes adding up exactly.
        inputs: The model's input specs; each request input's datatype must be the model input's.
        output_specs: The model's output specs; when given, requested output names are checked here
            (before any compute) and ``binary_outputs`` is filled for every output.

    Returns:
        The decoded request; ``feed`` is checked as by :func:`check_feed`.

    Raises:
        InvalidInput: Malformed JSON or binary data, or wrong names, shapes, datatypes or sizes.
    """
    binary = header_length is not None
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length}; expected 1..{len(body)} (the body length)"
            )
        head, tail = body[:header_length], memoryview(body)[header_length:]
    else:
        head, tail = body, memoryview(b"")
    doc = _load_json(head, "" if binary else " (binary tensors after the JSON need Inference-Header-Content-Length)")
    if not isinstance(doc, dict):
        raise InvalidInput(f'infer request must be a JSON object {{"inputs": [...]}}; given {type(doc).__name__}')
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInput(f"'id' must be a string; given {type(req_id).__name__} {req_id!r:.40}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"'parameters' must be an object; given {type(params).__name__}")
    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise InvalidInput(f"parameters.binary_data_output must be true or false; given {default_binary!r:.40}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput(
            f"'inputs' must be a non-empty list of {{name, shape, datatype, data}}; given {raw_inputs!r:.60}"
        )
    by_name = {s.name: s for s in inputs}
    feed: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        name, arr, offset = _v2_input(item, index, by_name, tail, offset, binary)
        if name in feed:
            raise InvalidInput(f"input '{name}' is given twice (inputs[{index}]); expected each input once")
        feed[name] = arr
    if offset != len(tail):
        raise InvalidInput(
            f"binary section is {len(tail)} bytes but the inputs' binary_data_size add up to {offset}; "
            "expected them to match exactly"
        )
    feed = check_feed(feed, inputs)
    outputs, binary_outputs = _v2_outputs(doc.get("outputs"), default_binary, output_specs)
    return V2Request(id=req_id, feed=feed, outputs=outputs, binary_outputs=binary_outputs, parameters=params)


def encode_v2(
    model_name: str, model_version: str, outputs: list[np.ndarray], output_specs: list[IOSpec], request: V2Request
) -> tuple[bytes, dict[str, str]]:
    """Encode an Open Inference Protocol v2 infer response.

    Args:
        model_name: The model's name.
        model_version: The version that ran.
        outputs: The output arrays, in model output order.
        output_specs: The model's output specs (names, in the same order).
        request: The decoded request: which outputs, which as binary, and the id to echo.

    Returns:
        (body, headers). JSON outputs carry flat row-major ``data``; binary ones carry
        ``parameters.binary_data_size`` and their bytes follow the JSON in output order. Headers hold
        Content-Type (``application/json``, or ``application/octet-stream`` with binary outputs) and, with
        binary outputs, Inference-Header-Content-Length.

    Raises:
        InvalidInput: A requested output does not exist.
    """
    if len(outputs) != len(output_specs):
        raise ServeError(f"model returned {len(outputs)} outputs; its signature has {len(output_specs)}")
    by_name = {spec.name: arr for spec, arr in zip(output_specs, outputs)}
    wanted = request.outputs if request.outputs is not None else list(by_name)
    default_binary = request.parameters.get("binary_data_output", False) is True
    items, blobs, json_arrays = [], [], []
    for name in wanted:
        arr = by_name.get(name)
        if arr is None:
            raise InvalidInput(f"unknown output '{name}'; model outputs are {list(by_name)}")
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype.name), "shape": list(arr.shape)}
        if request.binary_outputs.get(name, default_binary):
            blob = _le_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.ravel().tolist()
            json_arrays.append(arr)
        items.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = items
    head = _dumps(doc, json_arrays)
    if blobs:
        return head + b"".join(blobs), {"Content-Type": OCTET, "Inference-Header-Content-Length": str(len(head))}
    return head, {"Content-Type": JSON}

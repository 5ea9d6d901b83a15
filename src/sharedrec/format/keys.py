"""One reading of keys, shared by every lookup and by publishing.

An int64 key is an exact integer value: a Python int or a numpy integer of any width
(int8..int64, uint8..uint64) matches the stored key of the same value, never a key its
value would round or wrap to; a value outside the int64 range can never have been stored,
so it matches nothing (publishing refuses it). Bools are not keys, although Python and
numpy treat them as 0 and 1: a bool where a key was meant is a bug whose lookups would
silently serve key 1's list. A str key is looked up by its UTF-8 bytes; a str holding a
lone surrogate has no UTF-8 form, so it cannot have been stored (lookups miss it,
publishing refuses it).

`int_key` and `str_key` read one key, `int_keys` and `str_keys` a batch. Lookups call the
single-key functions only for keys that are not a plain ``int`` (or ``str``), so the common
case pays nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sharedrec.errors import InvalidInput

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["INT64_MAX", "INT64_MIN", "int_key", "int_keys", "is_bool", "str_key", "str_keys"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_INT_BATCH = "a 1-D sequence of integers for an int64 collection"
_STR_BATCH = "a sequence of str for a str-keyed collection"


def is_bool(value: object) -> bool:
    """Whether ``value`` is a Python or numpy bool, which is never a key."""
    return isinstance(value, bool | np.bool_)


def int_key(key: object) -> int:
    """``key`` as a Python int of the same value, which may lie outside int64.

    Raises:
        InvalidInput: ``key`` is not an int or a numpy integer (a bool is not).
    """
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return int(key)
    raise InvalidInput(f"this collection has int64 keys; got {_describe(key)}")


def str_key(key: object) -> bytes | None:
    """The UTF-8 bytes of ``key``; None when it has none (a lone surrogate), a key never stored.

    Raises:
        InvalidInput: ``key`` is not a str.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"this collection has str keys; got {_describe(key)}")
    try:
        return key.encode()
    except UnicodeEncodeError:
        return None


def int_keys(
    keys: object, where: str = "keys", expected: str = _INT_BATCH
) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
    """A batch of int64 keys read exactly: ``(values, outside)``.

    ``outside`` marks the keys outside the int64 range (their entry in ``values`` is 0 and
    means nothing), or is None when there is none: the common case costs no mask.

    Raises:
        InvalidInput: ``keys`` is not 1-D, or holds something other than integers (bools,
            floats, str...); the message starts with ``where`` and says what was
            ``expected``.
    """
    if isinstance(keys, str | bytes):
        raise InvalidInput(f"{where} must be {expected}, not a single {type(keys).__name__}")
    if isinstance(keys, Sequence) and not isinstance(keys, np.ndarray):
        types = set(map(type, keys))
        if types <= {int}:
            try:  # the common case: one conversion, and an OverflowError only out of range
                return np.array(keys, dtype=np.int64), None
            except OverflowError:
                return _exact(list(keys), where, expected)
        if all(issubclass(t, int | np.integer) and not issubclass(t, bool) for t in types):
            return _exact(list(keys), where, expected)  # numpy scalars, possibly uint64 ones
        bad = next((key for key in keys if is_bool(key)), None)
        if bad is not None:
            raise InvalidInput(f"{where} must be {expected}, not bools; got {bad!r}")
    try:
        array = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    except (ValueError, TypeError) as exc:  # ragged nesting, objects numpy cannot hold
        raise InvalidInput(f"{where} must be {expected}; got {type(keys).__name__} ({exc})") from None
    if array.ndim != 1:
        raise InvalidInput(f"{where} must be 1-D; got shape {array.shape}")
    kind = array.dtype.kind
    if kind == "i" or (kind == "u" and array.dtype.itemsize < 8):
        return array.astype("<i8", copy=False), None
    if kind == "u":
        outside = array > INT64_MAX
        if outside.any():
            return np.where(outside, 0, array).astype("<i8"), outside
        return array.astype("<i8"), None
    if kind == "O":
        return _exact(array.tolist(), where, expected)
    if array.size == 0:  # np.asarray([]) is float64
        return np.empty(0, dtype=np.int64), None
    if kind == "b":
        raise InvalidInput(f"{where} must be {expected}, not bools; got dtype {array.dtype}")
    raise InvalidInput(f"{where} must be {expected}; got dtype {array.dtype} with shape {array.shape}")


def _exact(
    values: list[Any], where: str, expected: str
) -> tuple[NDArray[np.int64], NDArray[np.bool_] | None]:
    """Integers one by one, by exact value (the slow path: numpy scalars, huge ints)."""
    ints = []
    for value in values:
        if not isinstance(value, int | np.integer) or is_bool(value):
            what = "not bools; got" if is_bool(value) else "got"
            raise InvalidInput(f"{where} must be {expected}, {what} {_describe(value)}")
        ints.append(int(value))
    outside = np.fromiter((not INT64_MIN <= v <= INT64_MAX for v in ints), dtype=bool, count=len(ints))
    if not outside.any():
        return np.array(ints, dtype=np.int64), None
    inside = [0 if out else v for v, out in zip(ints, outside.tolist(), strict=True)]
    return np.array(inside, dtype=np.int64), outside


def str_keys(
    keys: object, where: str = "keys", expected: str = _STR_BATCH
) -> tuple[list[str], list[bytes | None]]:
    """A batch of str keys: ``(keys, UTF-8 bytes of each, None where a key has none)``.

    Raises:
        InvalidInput: ``keys`` is not a 1-D sequence of str.
    """
    if isinstance(keys, str | bytes) or not hasattr(keys, "__len__") or not hasattr(keys, "__iter__"):
        raise InvalidInput(f"{where} must be {expected}; got {type(keys).__name__}")
    if isinstance(keys, np.ndarray) and keys.ndim != 1:
        raise InvalidInput(f"{where} must be 1-D; got shape {keys.shape}")
    text: list[Any] = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
    if not set(map(type, text)) <= {str}:  # np.str_ and other subclasses are str too
        odd = next((key for key in text if not isinstance(key, str)), None)
        if odd is not None:
            raise InvalidInput(f"{where} must be {expected}; got {_describe(odd)}")
    try:
        return text, list(map(str.encode, text))  # the common case, in one pass
    except UnicodeEncodeError:
        return text, [str_key(key) for key in text]


def _describe(key: object) -> str:
    text = f"{type(key).__name__} {key!r}"
    if len(text) > 80:
        text = text[:77] + "..."
    if is_bool(key):
        return f"{text} (a bool is not a key: pass int(key) if 0 or 1 is meant)"
    return text

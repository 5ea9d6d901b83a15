"""What opening a reader does, and what it leaves for later: the manifest's file list parsed
by one check per entry, the same answers as the field-by-field checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sharedrec.format.schema import _Bad, _file, _files, _path


def _checked(check: object) -> object:
    try:
        return check()  # type: ignore[operator]
    except _Bad as exc:
        return f"refused: {exc}"


_VALUES = (
    st.none() | st.booleans() | st.integers(-3, 2**33) | st.floats(allow_nan=False) | st.text(max_size=3)
)


@given(
    path=st.text(alphabet="ab_9.-/\\\0 é", max_size=12)
    | st.sampled_from(["a/c/0", "a/../b", "a/.b", "a" * 129]),
    entry=st.fixed_dictionaries({"size": _VALUES, "crc32": _VALUES})
    | st.dictionaries(st.sampled_from(["size", "crc32", "other"]), _VALUES, max_size=3)
    | _VALUES,
)
def test_the_quick_file_check_agrees_with_the_field_checks(path: str, entry: object) -> None:
    quick = _checked(lambda: _files({path: entry}))
    slow = _checked(lambda: {_path(path, "files"): _file(entry, f"files.{path}")})
    assert quick == slow

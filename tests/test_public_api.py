"""The public face of sharedrec: exactly the documented names, each importable.

Pinned on purpose (as httpx's ``tests/test_exported_members.py`` does): adding or removing
a public name is a decision, made here, in ``docs/api.md`` and in the changelog together.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import sharedrec

DOCS = Path(__file__).resolve().parents[1] / "docs"

PUBLIC = {
    "BeginOptions",
    "PublishOptions",
    "PublishRankedOptions",
    "ReaderOptions",
    "StoreOptions",
    # opening a store
    "RecommendationStore",
    "open",
    "VersionInfo",
    # reading
    "Reader",
    "RankedList",
    "ReaderStats",
    # publishing
    "Draft",
    "PublishHandle",
    "PartitionReceipt",
    "partition_of",
    # publish guards
    "Guard",
    "CheckResult",
    "MinKeys",
    "MaxShrink",
    "MaxEmptyLists",
    "ListSimilarity",
    "DEFAULT_GUARDS",
    # managing versions
    "VerifyReport",
    "VersionDiff",
    "CollectionDiff",
    "GCReport",
    "LeaseInfo",
    # the on-disk records
    "Manifest",
    "CollectionSpec",
    "Pointer",
    "Lease",
    # errors
    "SharedrecError",
    "InvalidInput",
    "StoreNotFound",
    "UnsupportedLocation",
    "VersionNotFound",
    "VersionGone",
    "CorruptVersion",
    "NewerFormat",
    "PublishRejected",
    "ConcurrentPublishError",
    "UnknownCollection",
    "KeyNotFound",
    "__version__",
}


def test_all_is_exactly_the_documented_api() -> None:
    assert set(sharedrec.__all__) == PUBLIC
    assert len(sharedrec.__all__) == len(PUBLIC), "a name is listed twice"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(sharedrec, name)
    assert value is not None
    if isinstance(value, type) or callable(value):
        assert value.__doc__, f"sharedrec.{name} has no docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Store'"):
        sharedrec.Store  # noqa: B018
    assert not hasattr(sharedrec, "nothing_here")


def test_dir_lists_the_public_names() -> None:
    assert set(dir(sharedrec)) >= PUBLIC


def test_every_exception_in_the_errors_page_is_importable_from_sharedrec() -> None:
    page = (DOCS / "errors.md").read_text()
    # Each exception has a "## Name" section; sharedrec.k8s's own two are importable there.
    named = set(re.findall(r"^## (\w+)$", page, flags=re.MULTILINE)) - {"MissingDependency"}
    assert {"SharedrecError", "VersionGone", "KeyNotFound"} <= named
    for name in named:
        assert name in sharedrec.__all__, f"{name} is in docs/errors.md but not exported"
        assert issubclass(getattr(sharedrec, name), sharedrec.SharedrecError)
    from sharedrec import errors

    assert set(errors.__all__) <= set(sharedrec.__all__)


def test_every_error_derives_from_the_base_class() -> None:
    for name in sharedrec.__all__:
        value = getattr(sharedrec, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, sharedrec.SharedrecError), name


def test_importing_sharedrec_stays_light() -> None:
    # A reading service imports sharedrec and nothing heavy: the publishing side (zarr), the
    # S3 client and pydantic load only when a name that needs them is used.
    script = (
        "import sys, sharedrec\n"
        "heavy = ('pydantic', 'zarr', 's3fs')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_lazy_table_and_the_type_checking_imports_agree() -> None:
    # Names in sharedrec._LAZY load on first use; the `if TYPE_CHECKING:` block imports the
    # same names from the same modules for type checkers and the API docs. Keep them in step.
    import ast
    import inspect

    lazy: dict[str, str] = sharedrec._LAZY  # noqa: SLF001 - the table is what is under test
    tree = ast.parse(inspect.getsource(sharedrec))
    (block,) = [
        node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    typed = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == lazy
    eager = {name for name in sharedrec.__all__ if name not in lazy}
    assert eager <= set(vars(sharedrec)), "an eager public name is not imported in __init__.py"

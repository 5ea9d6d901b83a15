"""A layer rule beside those of ``test_architecture.py``: publishing never imports management.

``manage/`` may use ``write/`` (gc takes the writers' half of its protocol from
``write/hold.py``), so an import the other way would be a cycle waiting to happen, and would
load garbage collection and diff into every publishing process.
"""

from __future__ import annotations

from test_architecture import _graph, _in


def test_write_layer_imports_nothing_from_manage() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _in(module, "sharedrec.write")
        for target in targets
        if _in(target, "sharedrec.manage")
    )
    assert not wrong, "write/ imports manage/ (move what both need into write/):\n" + "\n".join(wrong)

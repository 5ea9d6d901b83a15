"""The documentation works as written.

The Python blocks of the self-contained pages run, in order, in a fresh folder, one page per
process. A block preceded by the line ``<!-- docs-test: skip -->`` is not run (it needs a
cluster, S3, a Spark or Dask session, or a network port); every other Python block on every
page must at least compile. Every page with a Python block that can run here is executed.
The site's navigation lists every page.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SKIP = "<!-- docs-test: skip -->"

# Pages whose Python blocks make one script that runs from an empty folder.
EXECUTED = [
    "quickstart.md",
    "publishing.md",
    "reading.md",
    "ingest.md",
    "operations.md",
    "distributed.md",
    "kubernetes.md",
]


def python_blocks(page: str, *, include_skipped: bool = False) -> list[str]:
    """The Python code blocks of a page, dedented, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"(?m)^([ \t]*)```python\n(.*?)^\1```", text, re.S):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        if before == SKIP and not include_skipped:
            continue
        blocks.append(textwrap.dedent(match.group(2)))
    return blocks


def test_quickstart_has_code_to_run() -> None:
    assert len(python_blocks("quickstart.md")) >= 5


@pytest.mark.parametrize("page", EXECUTED)
def test_page_runs_as_written(page: str, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    assert blocks, f"{page} has no Python block to run"
    script = tmp_path / "page.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


# Pages whose unmarked Python blocks are fragments that cannot run alone (yet).
NOT_EXECUTED = {"errors.md", "format.md"}


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_page_with_code_to_run_is_executed(page: str) -> None:
    # A block that needs a cluster, S3 or Spark carries the skip marker; any other block runs.
    if page in NOT_EXECUTED:
        return
    assert not python_blocks(page) or page in EXECUTED, (
        f"{page} has Python blocks to run: add it to EXECUTED, or mark the blocks that need "
        f"a cluster, S3 or Spark with {SKIP}"
    )


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_python_blocks_compile(page: str) -> None:
    for number, code in enumerate(python_blocks(page, include_skipped=True), 1):
        try:
            compile(code, f"{page}, Python block {number}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{page}, Python block {number} does not compile: {exc}")


def test_every_page_is_in_the_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"([\w/-]+\.md)\b", config))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set()
    assert listed - pages == set()


def test_benchmark_page_keeps_the_generated_block() -> None:
    # benchmarks/report.py --update-page rewrites what lies between these two lines.
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert text.count("<!-- report:begin -->") == 1
    assert text.count("<!-- report:end -->") == 1
    assert text.index("<!-- report:begin -->") < text.index("<!-- report:end -->")


def test_format_page_examples_parse() -> None:
    # The JSON examples of the format specification are valid pointers, manifests and leases,
    # for the pydantic models and, for pointers and manifests, for the readers' own parser.
    from sharedrec.format.schema import Lease, Manifest, Pointer

    text = (DOCS / "format.md").read_text(encoding="utf-8")
    models: dict[str, type[Pointer] | type[Manifest] | type[Lease]] = {
        '"sharedrec-pointer/1"': Pointer,
        '"sharedrec/1"': Manifest,
        '"sharedrec/2"': Manifest,
        '"sharedrec-lease/1"': Lease,
    }
    parsed = set()
    manifests = 0
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        if not re.match(r'\{\s*"format"', block):  # e.g. the attributes of a version's group
            continue
        for marker, model in models.items():
            if f'"format": {marker}' in block or f'"format":{marker}' in block:
                model.loads(block.encode(), "docs/format.md")
                parsed.add(model.__name__)
                if model is Manifest:
                    Manifest.loads(block.encode(), "docs/format.md")
                    manifests += 1
                elif model is Pointer:
                    Pointer.loads(block.encode(), "docs/format.md")
    assert parsed == {"Pointer", "Manifest", "Lease"}
    assert manifests == 2  # a full version and a delta

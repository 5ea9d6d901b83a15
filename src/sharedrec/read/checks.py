"""Checking a version's files against its manifest: sizes (cheap) or CRC32 checksums.

Opening a version runs these checks (``verify="sizes"`` or ``"full"``), and so does
`RecommendationStore.verify`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sharedrec.backends.base import file_crc32
from sharedrec.errors import CorruptVersion, InvalidInput

if TYPE_CHECKING:
    from sharedrec._progress import Reporter
    from sharedrec.backends.base import Backend
    from sharedrec.format.schema import Manifest

__all__ = ["VerifyLevel", "VerifyReport", "check_version", "raise_if_bad"]

VerifyLevel = Literal["lazy", "sizes", "full"]
_LEVELS = ("lazy", "sizes", "full")


@dataclass
class VerifyReport:
    """What `verify()` checked and what it found."""

    version: str
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file matched the manifest."""
        return not self.problems


_STAT_THREADS = 16


def _sizes(backend: Backend, version_dir: str, manifest: Manifest | Manifest) -> dict[str, int | None]:
    """The size of every file of a version, asked concurrently.

    On a network volume each stat of a file not in the attribute cache is a round trip (and
    one per folder of its path on a cold node); a version has hundreds of files, so asking
    them one after the other made a switch wait for hundreds of round trips in a row.
    """
    paths = [path for path in manifest.files if _inside(path)]
    if len(paths) <= 1:
        return {path: backend.size(f"{version_dir}/{path}") for path in paths}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(_STAT_THREADS, len(paths)), thread_name_prefix="sharedrec-stat") as pool:
        found = pool.map(lambda path: backend.size(f"{version_dir}/{path}"), paths)
        return dict(zip(paths, found, strict=True))


def check_version(
    backend: Backend,
    version_dir: str,
    manifest: Manifest | Manifest,
    level: VerifyLevel,
    reporter: Reporter | None = None,
) -> VerifyReport:
    """Compare every file of a version with its manifest entry.

    ``sizes`` stats each file; ``full`` also recomputes its CRC32; ``lazy`` checks
    nothing here (each chunk's size is then checked when it is first mapped, and the
    CRC32 of each chunk of a key index too).
    """
    if level not in _LEVELS:
        raise InvalidInput(f"verify must be one of {_LEVELS}; got {level!r}")
    report = VerifyReport(manifest.id)
    if level == "lazy":
        return report
    sizes = _sizes(backend, version_dir, manifest) if level == "sizes" else {}
    total = sum(entry.size for entry in manifest.files.values())
    bar = reporter.task(f"verify {manifest.id}", total) if reporter and level == "full" else None
    with bar if bar is not None else nullcontext() as task:
        for path, entry in manifest.files.items():
            where = f"{version_dir}/{path}"
            report.files += 1
            if not _inside(path):
                # A damaged or hostile manifest must not make a check read anything else.
                report.problems.append(f"{path!r}: a path outside the version folder")
                continue
            size = sizes[path] if path in sizes else backend.size(where)
            if size is None:
                report.problems.append(f"{path}: missing")
                continue
            if size != entry.size:
                report.problems.append(f"{path}: {size} bytes, manifest says {entry.size}")
                continue
            if level == "full":
                crc = file_crc32(backend, where, task)
                if crc != entry.crc32:
                    report.problems.append(f"{path}: crc32 {crc:08x}, manifest says {entry.crc32:08x}")
            report.bytes += size
    return report


def _inside(path: str) -> bool:
    """Whether a manifest's file path stays inside the version folder."""
    parts = path.split("/")
    return (
        bool(path) and "\\" not in path and "\0" not in path and all(p not in ("", ".", "..") for p in parts)
    )


def raise_if_bad(report: VerifyReport, location: str) -> None:
    """Raise `CorruptVersion` listing the first problems of a report."""
    if report.problems:
        shown = "; ".join(report.problems[:5])
        more = f" (and {len(report.problems) - 5} more)" if len(report.problems) > 5 else ""
        raise CorruptVersion(
            f"version {report.version} in {location} does not match its manifest: {shown}{more}; "
            "roll back or republish it"
        )

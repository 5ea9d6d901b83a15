"""The exceptions sharedrec raises.

Every exception derives from `SharedrecError`, so ``except sharedrec.SharedrecError``
catches everything the library raises on purpose. Messages name the file, key or field at
fault and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentPublishError",
    "CorruptVersion",
    "InvalidInput",
    "KeyNotFound",
    "NewerFormat",
    "PublishRejected",
    "SharedrecError",
    "StoreNotFound",
    "UnknownCollection",
    "UnsupportedLocation",
    "VersionGone",
    "VersionNotFound",
]


class SharedrecError(Exception):
    """Base class of every error raised by sharedrec."""


class InvalidInput(SharedrecError, ValueError):
    """Raised when arguments given to sharedrec are wrong.

    Wrong shapes or dtypes, mismatched lengths, NaN or infinite scores, duplicate keys,
    empty collections, lists not in descending score order, invalid collection names or
    version ids. Nothing is written when this is raised.
    """


class StoreNotFound(SharedrecError, FileNotFoundError):
    """Raised when a store location does not exist and ``create=False`` was given."""


class UnsupportedLocation(SharedrecError, ValueError):
    """Raised by `open()` for a location this installation cannot serve."""


class VersionNotFound(SharedrecError, LookupError):
    """Raised when a version id, or the version named by ``CURRENT``, does not exist.

    A version whose folder exists without ``manifest.json`` is an unfinished publish and
    counts as missing.
    """


class VersionGone(VersionNotFound):
    """Raised when the files of a version a reader serves were deleted under it.

    A following reader re-reads ``CURRENT`` and moves to the live version instead of
    failing every call; a pinned reader raises this.
    """


class CorruptVersion(SharedrecError):
    """Raised when a version's files do not match its manifest.

    A truncated or unparsable ``manifest.json``, a missing chunk file, a chunk of the
    wrong size or checksum, or a pointer file that cannot be parsed. The version must be
    republished or rolled back; sharedrec never serves fill values in place of lost data.
    """


class NewerFormat(SharedrecError):
    """Raised when a file of the store was written by a newer sharedrec, in a format this one
    does not read.

    A pointer (``CURRENT``, a ref), a version's ``manifest.json`` or a lease whose ``format``
    is of the same family as the one this sharedrec writes, with a higher number (for example
    ``sharedrec/2`` where this sharedrec reads ``sharedrec/1``). Nothing is wrong with the
    file: upgrade sharedrec. It is not a `CorruptVersion` on purpose: nothing that handles
    damage (a rollback, a repair, garbage collection) may act on such a file, and nothing
    does: readers refuse to open it, writers refuse to move a newer pointer, and garbage
    collection never deletes a version it cannot read (see the format page's section on
    format versions).
    """


class PublishRejected(SharedrecError):
    """Raised when a publish is refused before ``CURRENT`` moves; the live version stays."""


class ConcurrentPublishError(PublishRejected):
    """Raised when another writer moved ``CURRENT`` while this publish was in progress.

    The other writer's version stays live; the message names both versions.
    """


class _LookupMiss(SharedrecError, KeyError):
    def __str__(self) -> str:
        # KeyError's str() quotes its argument; show the message as written instead.
        return str(self.args[0]) if self.args else ""


class UnknownCollection(_LookupMiss):
    """Raised when a reader is asked for a collection the version does not hold."""


class KeyNotFound(_LookupMiss):
    """Raised (a ``KeyError``) when a key is not in a collection that has no default list."""

"""What the reliability tests share: tagged data, the checks of an answer, the tally."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

import sharedrec

N_KEYS, K, DIM = 300, 5, 4
TAG = 1_000_000
"""Every item of the version tagged ``t`` is ``base + t * TAG``: a wrong version shows."""

KEYS = np.arange(N_KEYS, dtype=np.int64) * 7 + 3
BASE = np.arange(N_KEYS, dtype=np.int64)[:, None] * K + np.arange(K, dtype=np.int64)[None, :]
SCORES = np.linspace(1.0, 0.1, K, dtype=np.float32)


@dataclass
class Tally:
    """Counts the suite reports at the end; tests add to it as they go."""

    scenarios: int = 0
    faults_injected: int = 0
    bad_inputs: int = 0
    answers_checked: int = 0
    wrong_answers: int = 0
    data_lost: int = 0

    def lines(self) -> list[str]:
        return [f"{f.name.replace('_', ' ')}: {getattr(self, f.name)}" for f in fields(self)]


TALLY = Tally()


def tagged_items(tag: int) -> NDArray[np.int64]:
    return BASE + tag * TAG


def publish_tagged(store: sharedrec.RecommendationStore, tag: int, **options: Any) -> str:
    """A version of a ranked and a vectors collection, every value derived from ``tag``."""
    options.setdefault("guards", [])
    with store.publish(metadata={"tag": tag}, chunk_bytes=1024, progress=False, **options) as draft:
        draft.add_ranked("home", KEYS, tagged_items(tag), np.tile(SCORES, (N_KEYS, 1)))
        draft.add_vectors("emb", KEYS, np.full((N_KEYS, DIM), float(tag), dtype=np.float32))
    return draft.version_id


def check_answers(reader: sharedrec.Reader, tag: int, rows: NDArray[np.int64] | None = None) -> int:
    """Look up ``rows`` (default: every key) and count answers that are not version ``tag``'s.

    Adds to the tally; returns the number of wrong answers.
    """
    rows = np.arange(N_KEYS) if rows is None else rows
    wrong = 0
    for row in rows.tolist():
        recs = reader.get("home", int(KEYS[row]))
        vec = reader.vector("emb", int(KEYS[row]))
        if not (np.array_equal(recs.items, tagged_items(tag)[row]) and np.all(vec == tag)):
            wrong += 1
    items, _, found = reader.get_many("home", KEYS[rows])
    if not (found.all() and np.array_equal(items, tagged_items(tag)[rows])):
        wrong += 1
    TALLY.answers_checked += len(rows) * 2 + 1
    TALLY.wrong_answers += wrong
    return wrong


_IN_CHILD: list[Callable[[], Any]] = []


def _answer_in_child(conn: Any) -> None:
    conn.send(_IN_CHILD[0]())


def fork_while_held(lock: Any, call: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Fork while a thread of this process holds ``lock``, and run ``call`` in the child.

    The thread lets go right after the fork, as a thread of the parent would; the child, where
    that thread does not exist, must not block on the lock. Returns whether the child answered
    within ``timeout`` seconds, and its answer.
    """
    import multiprocessing
    import threading

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    _IN_CHILD.append(call)
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_answer_in_child, args=(theirs,))
    try:
        child.start()
        release.set()
        answered = ours.poll(timeout)
        return answered, ours.recv() if answered else None
    finally:
        _IN_CHILD.clear()
        release.set()
        thread.join()
        child.kill()
        child.join(5)

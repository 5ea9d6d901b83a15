"""A store written by a newer sharedrec: told apart from damage, and left alone.

Each fixture store is written by this sharedrec, then one of its files is rewritten as a
newer sharedrec would write it: a higher ``format`` number and a field this sharedrec does
not know. Whatever meets such a file says "written by a newer sharedrec ... upgrade
sharedrec", never that the store is corrupt, and nothing moves, overwrites or deletes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import sharedrec
from sharedrec.errors import CorruptVersion, NewerFormat
from sharedrec.format.schema import Lease, Manifest, Pointer

from conftest import KEYS, make_bucket, publish, s3_client, s3_options

UPGRADE = "written by a newer sharedrec (format sharedrec/5); this sharedrec reads sharedrec/4: upgrade"
DESTRUCTIVE = ("corrupt", "republish", "roll back", "delete it by hand", "set_current", "set-current")


def _newer(path: Path, fmt: str, **changes: object) -> None:
    """Rewrite a JSON file as a newer sharedrec would: its format, and a field unknown here."""
    data = json.loads(path.read_bytes())
    data.update({"format": fmt, "shard_map": {"scheme": "rendezvous", "slots": 64}, **changes})
    path.write_text(json.dumps(data, indent=1))


def _newer_manifest(store: sharedrec.RecommendationStore, version: str, **changes: object) -> None:
    _newer(Path(store.location) / "versions" / version / "manifest.json", "sharedrec/5", **changes)


def _newer_pointer(store: sharedrec.RecommendationStore, name: str = "CURRENT") -> bytes:
    path = Path(store.location) / name
    _newer(path, "sharedrec-pointer/2")
    return path.read_bytes()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _assert_upgrade(message: str) -> None:
    assert "written by a newer sharedrec" in message and "upgrade sharedrec" in message, message
    lowered = message.lower()
    for advice in DESTRUCTIVE:
        assert advice not in lowered, f"{advice!r} in {message!r}"


# -- the schema ----------------------------------------------------------------------------


def test_newer_formats_are_not_corruption(store: sharedrec.RecommendationStore) -> None:
    vid = publish(store, 1)
    manifest = json.loads((Path(store.location) / "versions" / vid / "manifest.json").read_bytes())
    pointer = json.loads((Path(store.location) / "CURRENT").read_bytes())
    assert not issubclass(NewerFormat, CorruptVersion)
    newer = {**manifest, "format": "sharedrec/5", "shard_map": {}}
    with pytest.raises(NewerFormat) as caught:
        Manifest.loads(json.dumps(newer).encode(), "/s/versions/v/manifest.json")
    assert str(caught.value) == (
        "/s/versions/v/manifest.json: written by a newer sharedrec (format sharedrec/5); this "
        "sharedrec reads sharedrec/4: upgrade sharedrec (pip install -U sharedrec)"
    )
    # Newer, even when nothing else of the file is what format 1 knows.
    with pytest.raises(NewerFormat, match="format sharedrec/12"):
        Manifest.loads(b'{"format": "sharedrec/12", "everything": "else"}', "m")
    with pytest.raises(NewerFormat, match="format sharedrec-pointer/2"):
        Pointer.loads(json.dumps({**pointer, "format": "sharedrec-pointer/2", "epoch": 3}).encode(), "p")
    # The manifest a pointer carries on object stores is checked the same way.
    carried = {**pointer, "manifest": newer}
    with pytest.raises(NewerFormat, match=r"p \(the manifest it carries\): written by a newer sharedrec"):
        Pointer.loads(json.dumps(carried).encode(), "p")
    lease = {"format": "sharedrec-lease/2", "reader_id": "r", "ranges": []}
    with pytest.raises(NewerFormat, match="format sharedrec-lease/2"):
        Lease.loads(json.dumps(lease).encode(), "l")
    # Another family, an older or invalid number: damaged, as before.
    for bad in ("sharedrec-pointer/2", "sharedrec/0", "sharedrec/01", "sharedrec/x", "sharedrec/1.5", 2):
        with pytest.raises(CorruptVersion):
            Manifest.loads(json.dumps({**manifest, "format": bad}).encode(), "m")
    with pytest.raises(CorruptVersion, match="unknown fields"):  # format 1 stays strict
        Manifest.loads(json.dumps({**manifest, "shard_map": {}}).encode(), "m")


# -- readers -------------------------------------------------------------------------------


def test_opening_a_newer_live_version_says_upgrade(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    live = publish(store, 2)
    _newer_manifest(store, live)
    with pytest.raises(NewerFormat) as caught:
        store.reader()
    _assert_upgrade(str(caught.value))
    assert f"versions/{live}/manifest.json: {UPGRADE}" in str(caught.value)
    with pytest.raises(NewerFormat):
        store.reader(version=live)
    assert os.listdir(Path(store.location) / "leases") == []  # the lease went with the failure


def test_opening_under_a_newer_pointer_says_upgrade(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    _newer_pointer(store)
    with pytest.raises(NewerFormat) as caught:
        store.reader()
    _assert_upgrade(str(caught.value))
    assert "CURRENT: written by a newer sharedrec (format sharedrec-pointer/2)" in str(caught.value)


def test_on_s3_the_manifest_in_the_pointer_says_upgrade(s3_server: str, tmp_path: Path) -> None:
    bucket = make_bucket(s3_server)
    store = sharedrec.open(
        f"s3://{bucket}/recs",
        storage_options=s3_options(s3_server),
        cache_dir=tmp_path / "cache",
        create=True,
    )
    publish(store, 1)
    client = s3_client(s3_server)
    pointer = json.loads(client.get_object(Bucket=bucket, Key="recs/CURRENT")["Body"].read())
    assert pointer["manifest"] is not None  # object stores carry the manifest in the pointer
    pointer["manifest"].update({"format": "sharedrec/5", "shard_map": {}})
    client.put_object(Bucket=bucket, Key="recs/CURRENT", Body=json.dumps(pointer).encode())
    with pytest.raises(NewerFormat) as caught:
        store.reader()
    _assert_upgrade(str(caught.value))


def test_a_following_reader_keeps_its_version(
    store: sharedrec.RecommendationStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = publish(store, 1)
    with store.reader(refresh_interval=None) as reader:
        second = publish(store, 2)
        _newer_manifest(store, second)
        with caplog.at_level(logging.WARNING, logger="sharedrec"), pytest.raises(NewerFormat):
            reader.refresh()
        assert reader.version == first
        assert reader.get("home", int(KEYS[0])).items[0] == 1000  # still serving
        assert "reader stays on its version" in caplog.text and "newer sharedrec" in caplog.text
        assert "corrupt" not in caplog.text.lower() and "republish" not in caplog.text
        # The pointer itself rewritten by a newer sharedrec: the same.
        _newer_pointer(store)
        with pytest.raises(NewerFormat, match="CURRENT: written by a newer sharedrec"):
            reader.refresh()
        assert reader.version == first and reader.stats().refresh_failures == 2
        assert reader.get("home", int(KEYS[0])).items[0] == 1000


# -- writers -------------------------------------------------------------------------------


def test_writers_never_move_a_newer_pointer(store: sharedrec.RecommendationStore) -> None:
    first = publish(store, 1)
    second = publish(store, 2)
    before = _newer_pointer(store)
    folders = sorted(os.listdir(Path(store.location) / "versions"))
    current = Path(store.location) / "CURRENT"
    attempts: dict[str, Callable[[], object]] = {
        "publish": lambda: publish(store, 3),
        "set_current": lambda: store.set_current(first),
        "rollback": store.rollback,
        "promote": lambda: store.promote("current", to="canary"),
        "compact": store.compact,
        "begin_publish": lambda: store.begin_publish(partitions=2),
    }
    for name, attempt in attempts.items():
        with pytest.raises(NewerFormat) as caught:
            attempt()
        _assert_upgrade(str(caught.value))
        assert current.read_bytes() == before, f"{name} rewrote the newer pointer"
    assert sorted(os.listdir(Path(store.location) / "versions")) == folders  # nothing left behind
    assert second in folders
    # A named ref of a newer sharedrec is its own: promoting it is refused too.
    store.set_current(first, ref="canary")
    canary = _newer_pointer(store, "refs/canary")
    with pytest.raises(NewerFormat):
        store.promote("canary")
    with pytest.raises(NewerFormat):
        store.set_current(second, ref="canary")
    assert (Path(store.location) / "refs" / "canary").read_bytes() == canary


def test_a_publish_over_a_newer_live_version_is_refused(store: sharedrec.RecommendationStore) -> None:
    publish(store, 1)
    live = publish(store, 2)
    _newer_manifest(store, live)
    before = (Path(store.location) / "CURRENT").read_bytes()
    with pytest.raises(NewerFormat) as caught:
        publish(store, 3)  # the default guards compare with the live version
    _assert_upgrade(str(caught.value))
    assert f"cannot compare with the live version {live}, and nothing was published" in str(caught.value)
    assert (Path(store.location) / "CURRENT").read_bytes() == before
    with pytest.raises(NewerFormat):
        store.set_current(live)  # a version this sharedrec cannot read is never made live by it


# -- operating the store -------------------------------------------------------------------


def test_versions_lists_newer_versions_marked(store: sharedrec.RecommendationStore) -> None:
    first = publish(store, 1)
    live = publish(store, 2)
    _newer_manifest(store, live)
    listed = store.versions()
    assert [v.id for v in listed] == [first, live]
    old, newer = listed
    assert old.newer_format is None and old.collections == {"home": len(KEYS)}
    assert newer.newer_format == "sharedrec/5" and newer.current
    assert newer.collections == {} and newer.size_bytes > 0 and newer.created_at > old.created_at
    _newer_pointer(store)
    with pytest.raises(NewerFormat, match="CURRENT: written by a newer sharedrec"):
        store.versions()


def test_verify_does_not_check_a_newer_version(store: sharedrec.RecommendationStore) -> None:
    vid = publish(store, 1)
    _newer_manifest(store, vid)
    with pytest.raises(NewerFormat) as caught:
        store.verify(vid)
    assert f"version {vid}: newer format, not checked" in str(caught.value)
    _assert_upgrade(str(caught.value))
    with pytest.raises(NewerFormat, match="newer format, not checked"):
        store.verify()


@pytest.mark.parametrize("dry_run", [True, False])
def test_gc_leaves_newer_versions_and_their_bases(
    store: sharedrec.RecommendationStore, dry_run: bool
) -> None:
    full = publish(store, 1)
    delta = publish(store, 2, delta=True)  # a delta over `full`
    old = publish(store, 3)
    live = publish(store, 4)
    _newer_manifest(store, delta)
    _newer_manifest(store, old)
    root = Path(store.location)
    kept = {vid: _snapshot(root / "versions" / vid) for vid in (full, delta, old)}
    report = store.gc(keep=0, grace=0, dry_run=dry_run)
    assert report.deleted == [] and report.unfinished == []
    for vid in (delta, old):
        assert report.kept[vid] == (
            "written by a newer sharedrec (format sharedrec/5): this sharedrec cannot read it and "
            "leaves it alone; upgrade sharedrec"
        )
    assert report.kept[full] == f"a base of delta version {delta}, which is kept"
    assert report.kept[live] == "live (CURRENT)"
    for vid, files in kept.items():
        assert _snapshot(root / "versions" / vid) == files  # not a byte changed, no mark left


def test_gc_keeps_everything_below_a_newer_version_whose_base_is_unreadable(
    store: sharedrec.RecommendationStore,
) -> None:
    full = publish(store, 1)
    newer = publish(store, 2)
    publish(store, 3)
    _newer_manifest(store, newer, base={"chain": [full]})  # base no longer a string
    report = store.gc(keep=0, grace=0)
    assert report.deleted == []
    assert report.kept[full] == (
        f"version {newer}, written by a newer sharedrec, may build on it (its base cannot be read): "
        "upgrade sharedrec"
    )


@pytest.mark.parametrize("pointer", ["CURRENT", "refs/canary"])
def test_gc_refuses_to_run_under_a_newer_pointer(store: sharedrec.RecommendationStore, pointer: str) -> None:
    ids = [publish(store, tag) for tag in range(3)]
    store.set_current(ids[0], ref="canary")
    _newer_pointer(store, pointer)
    before = _snapshot(Path(store.location))
    for dry_run in (True, False):
        with pytest.raises(NewerFormat) as caught:
            store.gc(keep=0, grace=0, dry_run=dry_run)
        assert str(caught.value).startswith("garbage collection did not run, and deleted nothing")
        assert f"{pointer}: written by a newer sharedrec (format sharedrec-pointer/2)" in str(caught.value)
        _assert_upgrade(str(caught.value))
        assert _snapshot(Path(store.location)) == before


def test_gc_leaves_newer_leases_alone(store: sharedrec.RecommendationStore) -> None:
    ids = [publish(store, tag) for tag in range(3)]
    unfinished = Path(store.location) / "versions" / "20200101T000000000000Z-abcdef"
    unfinished.mkdir()
    (unfinished / "zarr.json").write_text("{}")
    os.utime(unfinished / "zarr.json", (0, 0))
    lease = Path(store.location) / "leases" / "pod-7.1-abcdef.json"
    lease.parent.mkdir(exist_ok=True)
    lease.write_text(json.dumps({"format": "sharedrec-lease/2", "reader_id": "pod-7", "spans": [[0, 9]]}))
    before = lease.read_bytes()
    report = store.gc(keep=0, grace=0)
    assert report.deleted == [] and report.unfinished == []
    where = f"{store.location}/leases/pod-7.1-abcdef.json"
    reason = f"leases written by a newer sharedrec ({where}; upgrade sharedrec)"
    assert report.kept[ids[0]] == f"{reason} may protect it"
    assert report.kept[unfinished.name] == f"unfinished, but {reason} may hold it"
    assert lease.read_bytes() == before
    assert store.leases() == []  # the fleet view lists what it can read


# -- the command line ----------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedrec", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_info_get_verify_gc_say_upgrade(store: sharedrec.RecommendationStore) -> None:
    first = publish(store, 1)
    live = publish(store, 2)
    _newer_manifest(store, live)
    location = store.location
    for command in ("info", "versions"):
        # Every version is listed, the newer one marked; the live one being newer is an error.
        shown = _run(command, location)
        assert shown.returncode == 1, shown.stderr
        assert first in shown.stdout and "no versions yet" not in shown.stdout
        (line,) = [line for line in shown.stdout.splitlines() if line.startswith(live)]
        assert "written by a newer sharedrec (format sharedrec/5): upgrade sharedrec" in line
        assert f"live version {live}" in shown.stderr
        _assert_upgrade(shown.stderr)
    get = _run("get", location, "home", str(int(KEYS[0])))
    assert get.returncode == 1
    _assert_upgrade(get.stderr)
    verify = _run("verify", location, live)
    assert verify.returncode == 1 and "newer format, not checked" in verify.stderr
    _assert_upgrade(verify.stderr)
    gc = _run("gc", location, "--keep", "0", "--grace", "0")
    assert gc.returncode == 0, gc.stderr
    assert f"kept {live}: written by a newer sharedrec" in gc.stdout
    assert "delete it by hand" not in gc.stdout and "damaged" not in gc.stdout
    assert f"deleted version {first}" in gc.stdout  # what this sharedrec can read is collected
    # A newer CURRENT: info, get and gc stop with the upgrade message and exit 1.
    before = _newer_pointer(store)
    for args in (("info", location), ("get", location, "home", "0"), ("gc", location, "--dry-run")):
        done = _run(*args)
        assert done.returncode == 1, (args, done.stdout)
        _assert_upgrade(done.stderr)
        assert "no versions yet" not in done.stdout
    assert (Path(location) / "CURRENT").read_bytes() == before
    assert os.listdir(Path(location) / "versions") == [live]


def test_unknown_fields_of_the_current_format_are_still_damage(
    store: sharedrec.RecommendationStore,
) -> None:
    vid = publish(store, 1)
    path = Path(store.location) / "versions" / vid / "manifest.json"
    data = json.loads(path.read_bytes())
    path.write_text(json.dumps({**data, "shard_map": {}}))
    with pytest.raises(CorruptVersion, match="unknown fields"):
        store.reader()
    report = store.gc(keep=0, grace=0, dry_run=True)
    assert "damaged" in report.kept[vid]


def test_rollback_from_a_newer_version_under_a_pointer_this_sharedrec_writes(
    store: sharedrec.RecommendationStore,
) -> None:
    first = publish(store, 1)
    live = publish(store, 2)
    _newer_manifest(store, live)  # older readers cannot serve it: the way back is a rollback
    assert store.rollback() == first
    with store.reader(lease=False) as reader:
        assert reader.version == first
    assert json.loads((Path(store.location) / "CURRENT").read_bytes())["format"] == "sharedrec-pointer/1"
    assert store.gc(keep=0, grace=0).kept[live].startswith("written by a newer sharedrec")

"""Rules that no Kubernetes schema knows: names, paths, and what each CSI driver accepts.

Every check raises `InvalidInput` with a message that names the value at fault and says
what to write instead. The field checks run when a config is built (`_config`); the
manifest checks (`check_manifests`) run on every list of objects before it is rendered, so
hand-edited or combined objects are held to the same rules.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from sharedrec.errors import InvalidInput
from sharedrec.format.layout import LEASES, VERSIONS
from sharedrec.k8s._cron import parse_schedule

__all__ = ["check_manifests"]

EFS_DRIVER = "efs.csi.aws.com"
NFS_DRIVER = "nfs.csi.k8s.io"
S3_DRIVER = "s3.csi.aws.com"

MAX_NAME = 45
"""Longest ``name``: the writer CronJob ``<name>-writer`` must fit in 52 characters, because
the CronJob controller appends 11 to name its Jobs."""

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _suggest(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return re.sub(r"-{2,}", "-", cleaned) or "sharedrec"


def dns_label(value: str, what: str, limit: int = 63) -> str:
    """Return ``value`` if it is a DNS-1123 label of at most ``limit`` characters."""
    if len(value) > limit or not _LABEL.match(value):
        raise InvalidInput(
            f"{value!r} is not a valid {what} (a DNS-1123 label): use 1-{limit} lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit (e.g. {_suggest(value)[:limit]!r})"
        )
    return value


def dns_subdomain(value: str, what: str) -> str:
    """Return ``value`` if it is a DNS-1123 subdomain (names of most Kubernetes objects)."""
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise InvalidInput(
            f"{value!r} is not a valid {what} (a DNS-1123 subdomain): use lowercase letters, digits, '-' "
            f"and '.', starting and ending with a letter or digit (e.g. {_suggest(value)!r})"
        )
    return value


# -- paths ----------------------------------------------------------------------------------


def absolute_path(value: str, what: str) -> str:
    """Return ``value`` normalised if it is an absolute POSIX path without ``..``."""
    if not value.startswith("/") or "\\" in value or ":" in value:
        raise InvalidInput(f"{what} must be an absolute path such as /mnt/recs; got {value!r}")
    parts = [part for part in value.split("/") if part]
    if ".." in parts or "." in parts:
        raise InvalidInput(f"{what} must not contain '.' or '..' components; got {value!r}")
    return "/" + "/".join(parts)


def store_root(value: str, what: str) -> str:
    """Refuse a location inside a store: readers must mount the store root.

    A mount of ``versions/<id>`` (or any subPath below the root) pins readers to one
    version: they would never see ``CURRENT`` move, and garbage collection would delete
    the folder under them.
    """
    parts = [part for part in value.split("/") if part]
    if VERSIONS in parts:
        raise InvalidInput(
            f"{what} {value!r} points inside a store's {VERSIONS}/ folder: give the store root "
            "(the folder that holds CURRENT), never one version; readers follow CURRENT to the "
            "live version by themselves"
        )
    if parts and parts[-1] == LEASES:
        raise InvalidInput(
            f"{what} {value!r} points at a store's {LEASES}/ folder: give the store root (the "
            "folder that holds CURRENT); the leases mount is added for you"
        )
    return value


_SYSTEM = {
    "/bin",
    "/boot",
    "/etc",
    "/lib",
    "/lib64",
    "/opt",
    "/root",
    "/run",
    "/sbin",
    "/tmp",
    "/usr",
    "/var",
}


def mount_path(value: str) -> str:
    """Return the container path where the store is mounted, normalised."""
    path = absolute_path(value, "mount_path")
    if path == "/":
        raise InvalidInput("mount_path must not be '/': mount the store on its own folder, e.g. /mnt/recs")
    if path in _SYSTEM or path.split("/")[1] in {"proc", "sys", "dev"}:
        raise InvalidInput(
            f"mount_path {value!r} would hide a system folder of the container: use a folder of "
            "its own such as /mnt/recs"
        )
    return store_root(path, "mount_path")


# -- quantities, images, commands, schedules --------------------------------------------------

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")


def quantity(value: str, what: str) -> str:
    """Return ``value`` if it is a Kubernetes quantity such as ``512Mi`` or ``2Gi``."""
    if not _QUANTITY.match(value) or float(re.sub(r"[a-zA-Z]+$", "", value)) <= 0:
        raise InvalidInput(
            f"{what} must be a positive Kubernetes quantity such as 512Mi or 4Gi; got {value!r}"
        )
    return value


_SUFFIXES: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_value(value: str) -> Decimal:
    """The number a checked quantity (`quantity` or `cpu`) stands for: ``"1536Mi"`` -> 1610612736."""
    number = re.match(r"^[0-9]+(\.[0-9]+)?", value)
    if number is None:
        raise InvalidInput(f"{value!r} is not a Kubernetes quantity such as 500m or 2Gi")
    return Decimal(number.group()) * _SUFFIXES[value[number.end() :]]


def cpu(value: str, what: str) -> str:
    """Return ``value`` if it is a CPU quantity such as ``250m`` or ``1.5``."""
    if not _CPU.match(value) or float(value.rstrip("m")) <= 0:
        raise InvalidInput(f"{what} must be a positive CPU quantity such as 250m or 2; got {value!r}")
    return value


def image(value: str, what: str) -> str:
    """Return ``value`` if it can name a container image."""
    if not value or any(char.isspace() for char in value) or value != value.strip():
        raise InvalidInput(
            f"{what} must be a container image reference such as registry.example.com/recs:1.4; got {value!r}"
        )
    return value


def command(value: Sequence[str], what: str) -> tuple[str, ...]:
    """Return ``value`` as a tuple if it is a non-empty command line of non-empty words."""
    words = tuple(value)
    if not words or any(not word for word in words):
        raise InvalidInput(f"{what} must be a non-empty list of non-empty words; got {list(words)!r}")
    return words


def http_path(value: str, what: str) -> str:
    """Return ``value`` if it is a path the kubelet can request (``/readyz``, ``/health?deep=1``)."""
    if not value.startswith("/"):
        raise InvalidInput(f"{what} must start with '/', e.g. /readyz; got {value!r}")
    if value.startswith("//"):
        # The kubelet parses the path as a URL: '//readyz' would be a host name, and it would
        # probe '/' instead.
        raise InvalidInput(f"{what} must not start with '//' (it reads as a host name); got {value!r}")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise InvalidInput(
            f"{what} must not contain spaces or control characters (percent-encode them); got {value!r}"
        )
    return value


def schedule(value: str) -> str:
    """Return ``value`` if it is a cron schedule the CronJob controller accepts (see `_cron`)."""
    parse_schedule(value)
    return value


def time_zone(value: str) -> str:
    """Return ``value`` if it is an IANA time zone name the API server can load.

    The API server loads ``spec.timeZone`` from the IANA database (Go's ``time.LoadLocation``)
    and refuses ``Local``; the same database answers here, through ``zoneinfo``.
    """
    known = zoneinfo.available_timezones()
    if value in known and value != "Local":
        return value
    close = difflib.get_close_matches(value, sorted(known), n=1)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else "such as UTC or Europe/Paris (the TZ identifiers of the IANA database)"
    )
    raise InvalidInput(f"time_zone {value!r} is not an IANA time zone name: {hint}")


# -- EFS -------------------------------------------------------------------------------------

_FS_ID = re.compile(r"^fs-[0-9a-f]{8,40}$")
_AP_ID = re.compile(r"^fsap-[0-9a-f]{8,40}$")


def efs_file_system_id(value: str) -> str:
    """Return ``value`` if it is an EFS file system id (``fs-`` and 8-40 hex digits)."""
    return _efs_id(value, _FS_ID, "fs", "file system", "`aws efs describe-file-systems`")


def efs_access_point_id(value: str) -> str:
    """Return ``value`` if it is an EFS access point id (``fsap-`` and 8-40 hex digits)."""
    return _efs_id(
        value, _AP_ID, "fsap", "access point", "`aws efs describe-access-points --file-system-id fs-…`"
    )


def _efs_id(value: str, pattern: re.Pattern[str], prefix: str, what: str, command: str) -> str:
    if pattern.match(value):
        return value
    hint = ""
    found = re.search(prefix + r"-[0-9a-f]{8,40}", value)
    if found and value.startswith("arn:"):
        hint = f" (the volumeHandle takes the id, not the ARN: use {found.group()!r})"
    raise InvalidInput(
        f"{value!r} is not an EFS {what} id: expected '{prefix}-' and 8-40 hex digits, such as "
        f"{prefix}-0123456789abcdef0{hint}; find it with {command}"
    )


# The driver's NodePublishVolume (pkg/driver/node.go in aws-efs-csi-driver) lowercases each
# volumeAttributes key and answers InvalidArgument "Volume context property … not supported"
# for any key but these, so a typo only surfaces as a pod stuck in ContainerCreating.
_EFS_ATTRIBUTES = {
    "encryptintransit": "encryptInTransit",
    "mounttargetip": "mounttargetip",
    "crossaccount": "crossaccount",
}
_GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}


def efs_volume_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Return the attributes if the EFS driver accepts every key and value.

    Raises:
        InvalidInput: A key the driver refuses (including the deprecated ``path``, which
            belongs in the volume's ``path``), or a value it cannot parse.
    """
    checked: dict[str, str] = {}
    for key, value in sorted(attributes.items()):
        lowered = key.lower()
        if lowered == "path":
            raise InvalidInput(
                "volume_attributes key 'path' is deprecated by the EFS driver: set the volume's path "
                "(it goes into the volumeHandle, fs-…:/path) instead"
            )
        if lowered not in _EFS_ATTRIBUTES:
            raise InvalidInput(
                f"volume_attributes key {key!r} is refused by the EFS CSI driver (the pod would stay in "
                f"ContainerCreating): it accepts only {', '.join(sorted(_EFS_ATTRIBUTES.values()))}"
            )
        if lowered in {"encryptintransit", "crossaccount"} and value not in _GO_BOOLS:
            raise InvalidInput(f"volume_attributes {key} must be 'true' or 'false'; got {value!r}")
        if lowered == "mounttargetip":
            _mount_target_ip(value)
        checked[key] = value
    return checked


def _mount_target_ip(value: str) -> None:
    # One address, or "<az-id>:<ip>,<az-id>:<ip>" for a multi-zone mapping.
    entries = value.split(",") if "," in value else [value]
    for entry in entries:
        address = entry.split(":", 1)[1] if "," in value and ":" in entry else entry
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InvalidInput(
                f"volume_attributes mounttargetip must be an IP address (or 'use1-az1:10.0.1.5,use1-az2:"
                f"10.0.2.5'); got {value!r}"
            ) from None


def efs_mount_options(options: Iterable[str]) -> tuple[str, ...]:
    """Return the mount options if none fights what the EFS driver does or breaks the lock."""
    checked = []
    for option in options:
        key = option.strip().lower().split("=", 1)[0]
        if key == "tls":
            raise InvalidInput(
                "mount option 'tls' is deprecated by the EFS driver, which encrypts in transit by default; "
                "drop it (to turn TLS off, set volume_attributes encryptInTransit: 'false')"
            )
        if key == "accesspoint":
            raise InvalidInput(
                "mount option 'accesspoint=…' is deprecated by the EFS driver and fails if it differs from "
                "the volumeHandle: set access_point_id instead"
            )
        if key == "awscredsuri":
            raise InvalidInput("mount option 'awscredsuri' is ignored by the EFS CSI driver: drop it")
        if key == "iam":
            raise InvalidInput("mount option 'iam' has its own setting: set iam=True (--iam) instead")
        for part in option.split(","):
            _not_read_only(part.strip().lower().split("=", 1)[0])
            _keeps_the_lock(part)
        checked.append(_mount_option(option))
    return tuple(checked)


def _not_read_only(key: str) -> None:
    if key in {"ro", "read-only", "--read-only"}:
        raise InvalidInput(
            "do not mount the volume read-only for everyone: the writer and the readers' leases write to "
            "it. sharedrec makes each reader's store mount read-only on the pod (volumeMounts.readOnly), "
            "which is where read-only takes effect"
        )


def _keeps_the_lock(option: str) -> None:
    """Refuse an NFS mount option that makes the writers' lock local to one node.

    A publish holds ``flock`` on the store's lock file; on NFSv4 the server arbitrates it
    between nodes. ``nolock`` and ``local_lock`` (but ``none``) keep locks on the client,
    and an NFS version below 4 hands them to a separate lock manager (NLM).
    """
    key, _, value = option.strip().lower().partition("=")
    if key == "nolock" or (key == "local_lock" and value != "none"):
        raise InvalidInput(
            f"mount option {option.strip()!r} keeps file locks on each node, so two writers on two nodes "
            "would both take the publish lock: remove it (sharedrec publishes under flock, which the "
            "NFSv4 server arbitrates between nodes)"
        )
    if key in {"vers", "nfsvers"} and not re.fullmatch(r"4(\.[0-9])?", value):
        raise InvalidInput(
            f"mount option {option.strip()!r} would replace the default nfsvers=4.1 with an NFS version "
            "below 4, whose locks go through a separate lock manager (NLM) that firewalls often block and "
            "whose close-to-open and lock recovery are weaker: use nfsvers=4.1 (the default) or 4.2, or "
            "drop the option"
        )


def _mount_option(option: str) -> str:
    stripped = option.strip()
    if not stripped:
        raise InvalidInput("mount options must not be empty strings")
    return stripped


# -- NFS -------------------------------------------------------------------------------------

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def nfs_server(value: str) -> str:
    """Return ``value`` if it is a host name or an IP address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST.match(value) or len(value) > 253:
            raise InvalidInput(
                f"server must be the NFS server's host name or IP address (e.g. nfs.example.internal or "
                f"10.0.0.5), without ':' or a path; got {value!r}"
            ) from None
    return value


def nfs_mount_options(options: Iterable[str]) -> tuple[str, ...]:
    """Return the NFS mount options if none makes the volume read-only or the lock local."""
    checked = []
    for option in options:
        for part in option.split(","):
            _not_read_only(part.strip().lower())
            _keeps_the_lock(part)
        checked.append(_mount_option(option))
    return tuple(checked)


_CLUSTER_DNS = re.compile(r"(^|\.)(svc|svc\.cluster\.local|cluster\.local)$")


def in_tree_nfs_server(value: str) -> str:
    """Refuse a cluster DNS name for an in-tree NFS volume: the node mounts it, not a pod.

    The kubelet mounts an in-tree ``nfs`` volume with the node's own resolver, which does
    not know the cluster's Service names, so the pod stays in ContainerCreating.
    """
    if _CLUSTER_DNS.search(value.lower().rstrip(".")):
        raise InvalidInput(
            f"server {value!r} is a cluster DNS name, which the node that mounts an in-tree NFS volume "
            "cannot resolve (the pod would stay in ContainerCreating): give the Service's ClusterIP "
            "(kubectl get svc -o wide), or use the NFS CSI driver (csi=True, --csi), whose node plugin "
            "resolves cluster names"
        )
    return value


# -- S3 (Mountpoint) ---------------------------------------------------------------------------

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")


def s3_bucket(value: str) -> str:
    """Return ``value`` if it follows the S3 bucket naming rules."""
    bad = (
        not _BUCKET.match(value)
        or ".." in value
        or re.match(r"^\d+\.\d+\.\d+\.\d+$", value)
        or value.startswith(("xn--", "sthree-"))
        or value.endswith(("-s3alias", "--ol-s3"))
    )
    if bad:
        raise InvalidInput(
            f"{value!r} is not an S3 bucket name: use 3-63 lowercase letters, digits, '.' and '-', starting "
            "and ending with a letter or digit (the name only, without s3:// or a prefix)"
        )
    return value


def s3_prefix(value: str) -> str:
    """Return the key prefix normalised to ``a/b/`` (no leading slash, one trailing slash)."""
    parts = value.strip("/").split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidInput(
            f"prefix {value!r} must be key folders separated by single '/', without '.' or '..' "
            "(e.g. recs/prod)"
        )
    return store_root("/".join(parts) + "/", "prefix")


def s3_region(value: str) -> str:
    """Return ``value`` if it looks like an AWS region such as ``us-east-1``."""
    if not _REGION.match(value):
        raise InvalidInput(f"region must be an AWS region such as us-east-1; got {value!r}")
    return value


def s3_option_key(option: str) -> str:
    """The Mountpoint flag an option sets, as the CSI driver parses it (``--key``)."""
    stripped = option.strip()
    key = stripped.split("=", 1)[0] if "=" in stripped else stripped.split(" ", 1)[0]
    return "--" + key.lstrip("-")


_S3_OWN = {
    "--prefix": "set prefix instead",
    "--region": "set region instead",
    "--allow-delete": "it is added when leases are on (a reader removes its lease on close)",
    "--allow-overwrite": "it is added when leases are on (every heartbeat rewrites the lease)",
    "--uid": "set run_as_user instead; the mount then belongs to that user",
    "--gid": "set run_as_group instead",
    "--allow-other": "it is added with run_as_user",
}
# Dropped or refused by the Mountpoint CSI driver (pkg/mountpoint/args.go, node.go).
_S3_DROPPED = {"--foreground", "--f", "--help", "--h", "--version", "--v", "--run-as-user", "--o"}


def s3_mount_options(options: Iterable[str]) -> tuple[str, ...]:
    """Return the Mountpoint options if the CSI driver passes them on and they keep CURRENT fresh."""
    checked = []
    for option in options:
        stripped = _mount_option(option)
        key = s3_option_key(stripped)
        if key in _S3_DROPPED:
            raise InvalidInput(
                f"mount option {option!r} is dropped or refused by the Mountpoint CSI driver: remove it"
            )
        if key in _S3_OWN:
            raise InvalidInput(f"mount option {option!r} is managed by sharedrec: {_S3_OWN[key]}")
        _not_read_only(key)
        if key == "--metadata-ttl" and "indefinite" in stripped:
            raise InvalidInput(
                "mount option 'metadata-ttl indefinite' would let readers keep an old CURRENT forever: use a "
                "short TTL (seconds) or leave it out"
            )
        checked.append(stripped)
    return tuple(checked)


# -- manifests -------------------------------------------------------------------------------


def check_manifests(objects: Sequence[Mapping[str, Any]]) -> None:
    """Check rules across a list of generated objects that no schema can see.

    Run by every renderer; public so that objects edited or combined by hand can be held to
    the same rules.

    * every CSI PersistentVolume has its own ``volumeHandle`` (the kubelet handles a volume
      once per handle, so a pod mounting two PVs with one handle stays in ContainerCreating);
    * a pre-bound PVC and its PV point at each other, in the same namespace, with
      ``storageClassName: ""`` on both;
    * EFS volumes are ``ReadWriteMany`` and carry only volumeAttributes the driver accepts;
    * every reader (a Deployment) mounts the store root with ``readOnly: true`` on the
      volumeMount, and no subPath but ``leases``; a volume of an S3 ``leases/`` prefix alone
      is mounted whole and read-write;
    * no writer (a CronJob or Job) mounts an S3 volume: Mountpoint cannot rename, so a
      writer publishes through the S3 API.

    Args:
        objects: Kubernetes objects as plain dicts, and strategic merge patches of
            Deployments.

    Raises:
        InvalidInput: A rule is broken; the message names the object and the fix.
    """
    volumes = {obj["metadata"]["name"]: obj for obj in objects if obj.get("kind") == "PersistentVolume"}
    claims = {
        (obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]): obj
        for obj in objects
        if obj.get("kind") == "PersistentVolumeClaim"
    }
    _check_handles(volumes.values())
    for pv in volumes.values():
        _check_pv(pv)
    for (namespace, claim_name), claim in claims.items():
        _check_binding(namespace, claim_name, claim, volumes)
    classes = {obj["metadata"]["name"]: obj for obj in objects if obj.get("kind") == "StorageClass"}
    drivers = {key: _claim_driver(claim, volumes, classes) for key, claim in claims.items()}
    lease_claims = {
        key
        for key, claim in claims.items()
        if _is_leases_volume(volumes.get(claim["spec"].get("volumeName", "")))
    }
    for obj in objects:
        for where, namespace, pod in _pod_specs(obj):
            _check_pod(obj["kind"], where, namespace, pod, drivers, lease_claims)


def _is_leases_volume(pv: Mapping[str, Any] | None) -> bool:
    """An S3 volume of a store's leases/ prefix alone (readers write their leases through it)."""
    if pv is None or (pv["spec"].get("csi") or {}).get("driver") != S3_DRIVER:
        return False
    prefixes = [o.split(" ", 1)[1] for o in pv["spec"].get("mountOptions", []) if o.startswith("prefix ")]
    return any(prefix.rstrip("/").split("/")[-1] == LEASES for prefix in prefixes)


def _claim_driver(
    claim: Mapping[str, Any],
    volumes: Mapping[str, Mapping[str, Any]],
    classes: Mapping[str, Mapping[str, Any]],
) -> str | None:
    pv = volumes.get(claim["spec"].get("volumeName", ""))
    if pv is not None:
        driver: str | None = (pv["spec"].get("csi") or {}).get("driver")
        return driver
    storage_class = classes.get(claim["spec"].get("storageClassName") or "")
    return None if storage_class is None else storage_class.get("provisioner")


def _check_handles(volumes: Iterable[Mapping[str, Any]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for pv in volumes:
        csi = pv["spec"].get("csi")
        if not csi:
            continue
        key = (csi["driver"], csi["volumeHandle"])
        name = pv["metadata"]["name"]
        if key in seen:
            fix = (
                "for one EFS store in several namespaces, give each namespace its own access point on "
                "the store's folder (aws efs create-access-point --file-system-id "
                f"{key[1].split(':')[0]} --root-directory Path=<the store's folder> --posix-user "
                "Uid=<uid>,Gid=<gid>) and generate each with its --access-point-id: the handles "
                "differ, the data is the same"
                if key[0] == EFS_DRIVER
                else "give each PersistentVolume its own handle"
            )
            raise InvalidInput(
                f"PersistentVolumes {seen[key]} and {name} share volumeHandle {key[1]!r}, so pods of both "
                "on one node stay in ContainerCreating (the kubelet mounts a handle once per node): " + fix
            )
        seen[key] = name


def _check_pv(pv: Mapping[str, Any]) -> None:
    spec = pv["spec"]
    name = pv["metadata"]["name"]
    csi = spec.get("csi") or {}
    if csi.get("driver") == EFS_DRIVER:
        if spec.get("accessModes") != ["ReadWriteMany"]:
            raise InvalidInput(
                f"PersistentVolume {name}: EFS volumes must be ReadWriteMany (the driver refuses "
                f"ReadOnlyMany at mount time); got {spec.get('accessModes')}"
            )
        efs_volume_attributes(csi.get("volumeAttributes") or {})
    if csi.get("readOnly"):
        raise InvalidInput(
            f"PersistentVolume {name} sets csi.readOnly, which does not make pods' mounts read-only "
            "and blocks the writer and the leases: remove it; readers get readOnly on their volumeMount"
        )


def _check_binding(
    namespace: str, claim_name: str, claim: Mapping[str, Any], volumes: Mapping[str, Mapping[str, Any]]
) -> None:
    spec = claim["spec"]
    volume_name = spec.get("volumeName")
    if volume_name is None:
        return
    pv = volumes.get(volume_name)
    if pv is None:
        return
    ref = pv["spec"].get("claimRef") or {}
    if (ref.get("namespace"), ref.get("name")) != (namespace, claim_name):
        raise InvalidInput(
            f"PersistentVolume {volume_name} is reserved for claim {ref.get('namespace')}/{ref.get('name')} "
            f"but claim {namespace}/{claim_name} names it: claimRef must give the claim's name and namespace"
        )
    if spec.get("storageClassName") != "" or pv["spec"].get("storageClassName") != "":
        raise InvalidInput(
            f"claim {namespace}/{claim_name} and PersistentVolume {volume_name} must both set "
            'storageClassName: "" for static binding (otherwise the default StorageClass provisions a new, '
            "empty volume)"
        )
    missing = set(spec.get("accessModes", [])) - set(pv["spec"].get("accessModes", []))
    if missing:
        raise InvalidInput(
            f"claim {namespace}/{claim_name} asks for {sorted(missing)} which PersistentVolume {volume_name} "
            "does not offer: use the same access modes on both"
        )


def _pod_specs(obj: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    kind = obj.get("kind")
    meta = obj.get("metadata", {})
    where = f"{kind} {meta.get('namespace', 'default')}/{meta.get('name')}"
    namespace = meta.get("namespace", "default")
    spec = obj.get("spec", {})
    if kind == "Deployment" or kind == "Job":
        template = spec.get("template", {})
    elif kind == "CronJob":
        template = spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
    else:
        return
    yield where, namespace, template.get("spec", {})


def _check_pod(
    kind: str,
    where: str,
    namespace: str,
    pod: Mapping[str, Any],
    drivers: Mapping[tuple[str, str], str | None],
    lease_claims: set[tuple[str, str]],
) -> None:
    store_volumes = {}
    lease_volumes = set()
    for volume in pod.get("volumes", []):
        claim = volume.get("persistentVolumeClaim")
        if claim and (namespace, claim["claimName"]) in lease_claims:
            lease_volumes.add(volume["name"])
        elif claim and (namespace, claim["claimName"]) in drivers:
            store_volumes[volume["name"]] = (claim, drivers[(namespace, claim["claimName"])])
    for container in pod.get("containers", []):
        for mount in container.get("volumeMounts", []):
            if mount["name"] in lease_volumes and (mount.get("readOnly") or mount.get("subPath")):
                raise InvalidInput(
                    f"{where}, container {container['name']}: the leases volume must be mounted "
                    "read-write, whole (no subPath, no readOnly)"
                )
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] in store_volumes]
        for volume_name in {m["name"] for m in mounts}:
            claim, driver = store_volumes[volume_name]
            own = [m for m in mounts if m["name"] == volume_name]
            if kind == "Deployment":
                _check_reader_mounts(where, container["name"], claim, own)
            elif driver == S3_DRIVER:
                raise InvalidInput(
                    f"{where} mounts the S3 volume: Mountpoint cannot rename, so a writer must publish "
                    "through the S3 API (SHAREDREC_STORE=s3://bucket/prefix) and not through the mount"
                )


def _check_reader_mounts(
    where: str, container: str, claim: Mapping[str, Any], mounts: Sequence[Mapping[str, Any]]
) -> None:
    for mount in mounts:
        sub = mount.get("subPath")
        if sub and sub != LEASES:
            raise InvalidInput(
                f"{where}, container {container}: subPath {sub!r} pins the reader to one folder (a "
                "per-version subPath would keep serving the old version): mount the store root and let the "
                "reader follow CURRENT"
            )
        if sub == LEASES and mount.get("readOnly"):
            raise InvalidInput(f"{where}, container {container}: the leases mount must be read-write")
        if sub == LEASES and claim.get("readOnly"):
            raise InvalidInput(
                f"{where}: persistentVolumeClaim.readOnly makes every mount of the claim read-only, leases "
                "included; put readOnly on the store root's volumeMount instead"
            )
    roots = [m for m in mounts if not m.get("subPath")]
    if len(roots) != 1 or roots[0].get("readOnly") is not True:
        raise InvalidInput(
            f"{where}, container {container}: mount the store root exactly once with readOnly: true on the "
            "volumeMount (the PersistentVolume's csi.readOnly does not make a pod's mount read-only)"
        )

"""From a config to objects, files and multi-document YAML.

YAML goes through PyYAML (the ``sharedrec[k8s]`` extra), imported only when YAML is
written. Output is deterministic: keys keep the order the builders give them, documents
keep a fixed order (storage, readers, their disruption budget, autoscaler, writer), and no
anchors or aliases are emitted.
"""

from __future__ import annotations

import copy
import functools
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sharedrec.errors import SharedrecError
from sharedrec.k8s._config import K8sConfig
from sharedrec.k8s._rules import check_manifests
from sharedrec.k8s._volumes import storage_objects
from sharedrec.k8s._workloads import (
    autoscaler,
    disruption_budget,
    reader_deployment,
    reader_patch,
    writer_workload,
)

__all__ = ["MissingDependency", "build_files", "build_objects", "render", "to_yaml", "write_files"]

KUSTOMIZATION = "kustomization.yaml"
KUSTOMIZE_CONFIG = "kustomizeconfig.yaml"
PATCH_FILE = "reader-patch.yaml"

# Kustomize renames a claim (namePrefix, nameSuffix, namespace) and the PVC's volumeName,
# but not the PersistentVolume's claimRef, which would keep naming the old claim: the PV
# would stay reserved for a claim that does not exist. These transformer configurations
# teach it that field; kustomize merges them into every overlay built on this folder, so
# the overlay's own namePrefix and namespace reach claimRef too.
_CLAIM_REF_CONFIG: dict[str, Any] = {
    "nameReference": [
        {
            "kind": "PersistentVolumeClaim",
            "version": "v1",
            "fieldSpecs": [{"kind": "PersistentVolume", "path": "spec/claimRef/name"}],
        }
    ],
    "namespace": [{"kind": "PersistentVolume", "path": "spec/claimRef/namespace", "create": False}],
}

_FILE_NAMES = {
    "StorageClass": "storageclass.yaml",
    "PersistentVolume": "pv.yaml",
    "PersistentVolumeClaim": "pvc.yaml",
    "Deployment": "reader-deployment.yaml",
    "PodDisruptionBudget": "reader-pdb.yaml",
    "HorizontalPodAutoscaler": "reader-hpa.yaml",
    "CronJob": "writer-cronjob.yaml",
    "Job": "writer-job.yaml",
}


class MissingDependency(SharedrecError, ImportError):
    """Raised when writing YAML without PyYAML; install the ``sharedrec[k8s]`` extra."""


def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError:
        raise MissingDependency(
            "writing Kubernetes YAML needs PyYAML, which this installation lacks: "
            "pip install 'sharedrec[k8s]'"
        ) from None


@functools.cache
def _dumper() -> Any:
    yaml = _yaml()

    def increase_indent(self: Any, flow: bool = False, indentless: bool = False) -> Any:
        # Indent list items under their key, as kubectl and most hand-written manifests do.
        return yaml.SafeDumper.increase_indent(self, flow, False)

    def ignore_aliases(self: Any, data: Any) -> bool:
        return True

    return type(
        "ManifestDumper",
        (yaml.SafeDumper,),
        {"increase_indent": increase_indent, "ignore_aliases": ignore_aliases},
    )


def _parts(config: K8sConfig) -> list[tuple[str, dict[str, Any]]]:
    parts = [(_FILE_NAMES[obj["kind"]], obj) for obj in storage_objects(config)]
    if config.reader is not None:
        if config.reader.patch:
            parts.append((PATCH_FILE, reader_patch(config)))
        else:
            parts.append((_FILE_NAMES["Deployment"], reader_deployment(config)))
            if config.reader.disruption_budget:
                parts.append((_FILE_NAMES["PodDisruptionBudget"], disruption_budget(config)))
    if config.autoscaling is not None:
        parts.append((_FILE_NAMES["HorizontalPodAutoscaler"], autoscaler(config)))
    if config.writer is not None:
        writer = writer_workload(config)
        parts.append((_FILE_NAMES[writer["kind"]], writer))
    check_manifests([obj for _, obj in parts])
    return parts


def build_objects(config: K8sConfig) -> list[dict[str, Any]]:
    """Every object of a config, in the order to apply them.

    Storage first (StorageClass or PersistentVolume, then the claim), then the readers'
    Deployment and its PodDisruptionBudget (or, with ``reader.patch``, the strategic merge
    patch of the existing Deployment), the HorizontalPodAutoscaler and the writer's CronJob
    or Job. `check_manifests` has passed on the result.

    Args:
        config: What to generate.

    Returns:
        Plain dicts, ready for `to_yaml` or a Kubernetes client.

    Example:
        >>> objects = build_objects(K8sConfig(volume=HostPathVolume(path="/data/recs")))  # doctest: +SKIP
        >>> [obj["kind"] for obj in objects]  # doctest: +SKIP
        ['PersistentVolume', 'PersistentVolumeClaim']
    """
    return [obj for _, obj in _parts(config)]


def build_files(config: K8sConfig, *, kustomize: bool = False) -> dict[str, dict[str, Any]]:
    """The objects of a config keyed by the file name each is written to.

    File names: ``storageclass.yaml``, ``pv.yaml``, ``pvc.yaml``,
    ``reader-deployment.yaml`` or ``reader-patch.yaml``, ``reader-pdb.yaml``, ``reader-hpa.yaml``,
    ``writer-cronjob.yaml`` or ``writer-job.yaml``.

    Args:
        config: What to generate.
        kustomize: Add ``kustomization.yaml`` listing the other files and, with a
            PersistentVolume, ``kustomizeconfig.yaml``: the transformer configurations
            that keep the PV's ``claimRef`` in step when an overlay renames the claim
            (``namePrefix``, ``nameSuffix``, ``namespace``). With
            ``reader.patch`` it is a kustomize Component (``kind: Component``): add its
            folder to the ``components:`` of the kustomization that holds the Deployment
            to patch.

    Returns:
        File name -> object, in the order to apply them (the kustomization last).
    """
    files = dict(_parts(config))
    if kustomize:
        names = list(files)
        configurations = []
        if any(obj["kind"] == "PersistentVolume" for obj in files.values()):
            files[KUSTOMIZE_CONFIG] = copy.deepcopy(_CLAIM_REF_CONFIG)
            configurations.append(KUSTOMIZE_CONFIG)
        files[KUSTOMIZATION] = _kustomization(names, configurations)
    return files


def _kustomization(names: list[str], configurations: list[str]) -> dict[str, Any]:
    resources = [name for name in names if name != PATCH_FILE]
    if PATCH_FILE not in names:
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        }
    else:
        # A Component's patches apply to the resources of the kustomization that includes
        # it, which is where the user's own Deployment lives.
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1",
            "kind": "Component",
            "resources": resources,
            "patches": [{"path": PATCH_FILE}],
        }
    if configurations:
        kustomization["configurations"] = configurations
    return kustomization


def to_yaml(objects: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Serialise one object, or several as a multi-document stream (each after ``---``).

    Args:
        objects: A Kubernetes object, or a sequence of them, as plain dicts.

    Returns:
        YAML text ending with a newline; the same input always gives the same text.

    Raises:
        MissingDependency: PyYAML is not installed.
    """
    yaml = _yaml()
    docs = [objects] if isinstance(objects, Mapping) else list(objects)
    texts = [
        yaml.dump(
            doc,
            Dumper=_dumper(),
            sort_keys=False,
            default_flow_style=False,
            width=1 << 16,
            allow_unicode=True,
        )
        for doc in docs
    ]
    if isinstance(objects, Mapping):
        return str(texts[0])
    return "".join(f"---\n{text}" for text in texts)


def render(config: K8sConfig) -> str:
    """All the manifests of a config as one multi-document YAML stream (what the CLI prints).

    With ``reader.patch`` the patch is the last document, after a comment saying how to
    apply it: it is not an object for ``kubectl apply``.

    Args:
        config: What to generate.

    Returns:
        YAML text.

    Raises:
        MissingDependency: PyYAML is not installed.
    """
    chunks = []
    for name, obj in _parts(config):
        text = to_yaml(obj)
        if name == PATCH_FILE:
            name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
            text = (
                f"# Strategic merge patch of Deployment {namespace}/{name}, not an object to apply:\n"
                f"# kubectl patch deployment {name} -n {namespace} --patch-file {PATCH_FILE}\n" + text
            )
        chunks.append(f"---\n{text}")
    return "".join(chunks)


def write_files(config: K8sConfig, folder: str | Path, *, kustomize: bool = False) -> list[Path]:
    """Write each manifest of a config to its own file in ``folder`` (created if needed).

    Files of the same names are replaced; other files are left alone.

    Args:
        config: What to generate.
        folder: Where to write.
        kustomize: Also write ``kustomization.yaml`` (see `build_files`).

    Returns:
        The paths written, in order.

    Raises:
        MissingDependency: PyYAML is not installed.
    """
    files = build_files(config, kustomize=kustomize)
    texts = {name: to_yaml(obj) for name, obj in files.items()}
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written

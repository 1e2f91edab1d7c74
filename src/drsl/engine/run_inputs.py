"""What a run reads, identified by content: its class set and the files of its datasets.

``run.json`` records these digests (``inputs``) when a run starts; a resumed run compares them
with what it finds now, so a class file edited between a kill and ``--resume``, or target images
regenerated under the same names, are named and refused instead of being adopted in silence
(``--accept-changes`` continues with them and is recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drsl.data.base import SegmentationDataset
from drsl.data.classes import ClassSet
from drsl.data.digest import data_digest, samples_digest
from drsl.errors import listed, shorten


def class_set_digest(classes: ClassSet) -> str:
    """Digest of a class set's content (names, colours, subsets, mappings)."""
    return data_digest(classes.to_dict())[:32]


def input_record(
    class_spec: str, classes: ClassSet, datasets: Mapping[str, SegmentationDataset | None],
) -> dict[str, dict[str, Any]]:
    """The digests of a run's inputs: the class set named by ``class_spec`` and each dataset
    (by its config key, e.g. ``data.target``) with its root and sample count."""
    record: dict[str, dict[str, Any]] = {
        "classes": {"spec": class_spec, "digest": class_set_digest(classes), "names": list(classes.names)},
    }
    for key, dataset in datasets.items():
        if dataset is not None:
            record[key] = {"root": str(dataset.root), "samples": len(dataset.samples),
                           "digest": samples_digest(dataset.samples)}
    return record


def changed_inputs(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The inputs whose content differs between two :func:`input_record` results, in words. An
    input recorded by one of them only, or under another class-set name or dataset root, is not
    compared: its config key changed, which the config comparison reports."""
    changed = []
    for key, now in current.items():
        before = recorded.get(key)
        if not isinstance(before, dict) or before.get("digest") == now["digest"]:
            continue
        if before.get("spec", before.get("root")) != now.get("spec", now.get("root")):
            continue
        if key == "classes":
            changed.append(f"the class set data.classes={now['spec']} ({_class_change(before.get('names'), now['names'])})")
        else:
            counts = f"{before.get('samples')} -> {now['samples']} samples" if before.get("samples") != now["samples"] \
                else f"{now['samples']} samples"
            changed.append(f"the image or label files of {key} ({now['root']}: {counts})")
    return changed


def _class_change(before: list[str] | None, now: list[str]) -> str:
    """What changed in a class set, in words: the renamed or reordered ids, else the rest."""
    if before is None or before == now:
        return "its colours, subsets or mappings"
    if len(before) != len(now):
        return f"{len(before)} -> {len(now)} classes"
    moved = [f"id {i}: {shorten(old)} -> {shorten(new)}" for i, (old, new) in enumerate(zip(before, now)) if old != new]
    return listed(moved, 3)

"""Content digests of input files, so that changed inputs are recognised by what they hold and
not by their names: pseudo-label sets and resumed runs compare them before reusing anything.

A file's digest covers its size, its modification time and a hash of sampled content: the whole
file when it is small, else its first, middle and last :data:`SAMPLE_BYTES`. Regenerated images
under the same names differ in all three in practice; the sampling keeps the cost at three small
reads a file (measured in docs/reliability.md against a pseudo-labelling pass).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from drsl.data.base import Sample

#: Bytes read at each of the three sampled places of a file; smaller files are hashed whole.
SAMPLE_BYTES = 4096


def file_digest(path: str | Path) -> str:
    """Digest of one file: size, modification time (ns) and sampled content (see the module)."""
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        digest = hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}:".encode(), digest_size=16)
        if stat.st_size <= 3 * SAMPLE_BYTES:
            digest.update(handle.read())
        else:
            for offset in (0, (stat.st_size - SAMPLE_BYTES) // 2, stat.st_size - SAMPLE_BYTES):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def files_digest(named_paths: Iterable[tuple[str, Path | None]]) -> str:
    """One digest of ``(name, path)`` pairs, in order: each name with its file's digest (a None
    path counts as absent)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, path in named_paths:
        digest.update(f"{name}\0{file_digest(path) if path is not None else '-'}\n".encode())
    return digest.hexdigest()


def data_digest(data: Any) -> str:
    """SHA-256 (hex) of plain data as JSON with sorted keys (other values by their ``str``)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def images_digest(samples: Sequence[Sample]) -> str:
    """Digest of the images of ``samples`` (their names and contents)."""
    return files_digest((sample.name, sample.image_path) for sample in samples)


def samples_digest(samples: Sequence[Sample]) -> str:
    """Digest of the images and label files of ``samples``."""
    return files_digest(
        (f"{sample.name}{suffix}", path)
        for sample in samples
        for suffix, path in (("", sample.image_path), (":label", sample.label_path))
    )

"""The Python code blocks of docs/python_api.md run, in order, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

DOC = Path(__file__).parent.parent / "docs" / "python_api.md"


def test_python_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert (tmp_path / "runs" / "tiny_drsl" / "eval.json").is_file()
    assert namespace["labels"].shape == (128, 224)
    assert [labels.shape for labels in namespace["several"]] == [(128, 224)] * 2  # type: ignore[attr-defined]
    assert Image.open(tmp_path / "overlay.png").size == (224, 128)
    assert "channels first" in str(namespace["message"])

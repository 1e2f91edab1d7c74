"""ImageNet MiT weights from the two published layouts, mapped onto :class:`MiTEncoder` keys.

- SegFormer's release (``mit_b0.pth`` ... ``mit_b5.pth``): ``patch_embed1.proj.weight``,
  ``block1.0.attn.q.weight``, ``block1.0.attn.kv.weight`` (keys and values fused), ``norm1.weight``,
  ``head.*`` (the ImageNet classifier). timm's own converter maps it (PVT-v2 shares the layout).
- Hugging Face ``nvidia/mit-b*``: ``segformer.encoder.patch_embeddings.0.proj.weight``,
  ``segformer.encoder.block.0.0.attention.self.query.weight``, separate ``key`` and ``value``,
  ``attention.output.dense``, ``mlp.dense1``, ``layer_norm_1``, ``segformer.encoder.layer_norm.0``,
  ``classifier.*``. It is first renamed to the SegFormer layout (key and value concatenated, as
  the original fuses them into ``kv``).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor
from timm.models.pvt_v2 import checkpoint_filter_fn

StateDict = dict[str, Tensor]

#: Hugging Face block sub-module names -> SegFormer's.
_HF_BLOCK_NAMES = (
    ("layer_norm_1.", "norm1."),
    ("layer_norm_2.", "norm2."),
    ("attention.self.query.", "attn.q."),
    ("attention.self.sr.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."),
    ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."),
)


def _hf_key(key: str) -> str | None:
    """A Hugging Face encoder key in SegFormer's layout; None for key/value halves (fused apart)."""
    key = key[key.index("encoder.") + len("encoder."):] if "encoder." in key else key
    if match := re.match(r"patch_embeddings\.(\d+)\.(proj|layer_norm)\.(.+)", key):
        stage, part, rest = match.groups()
        return f"patch_embed{int(stage) + 1}.{'norm' if part == 'layer_norm' else 'proj'}.{rest}"
    if match := re.match(r"layer_norm\.(\d+)\.(.+)", key):
        return f"norm{int(match.group(1)) + 1}.{match.group(2)}"
    if match := re.match(r"block\.(\d+)\.(\d+)\.(.+)", key):
        stage, index, rest = match.groups()
        if rest.startswith(("attention.self.key.", "attention.self.value.")):
            return None
        for hf, original in _HF_BLOCK_NAMES:
            rest = rest.replace(hf, original)
        return f"block{int(stage) + 1}.{index}.{rest}"
    return key


def segformer_from_hf(state: StateDict) -> StateDict:
    """Rename a Hugging Face MiT state dict to SegFormer's release layout (``kv`` fused)."""
    out: StateDict = {}
    for key, value in state.items():
        renamed = _hf_key(key)
        if renamed is not None:
            out[renamed] = value
            continue
        match = re.search(r"block\.(\d+)\.(\d+)\.attention\.self\.key\.(weight|bias)$", key)
        value_key = key.replace("attention.self.key.", "attention.self.value.")
        if match and value_key in state:  # a missing half leaves attn.kv missing: load reports it
            stage, index, kind = match.groups()
            out[f"block{int(stage) + 1}.{index}.attn.kv.{kind}"] = torch.cat([value, state[value_key]])
    return out


def mit_state(state: StateDict) -> StateDict:
    """Encoder weights from a SegFormer or Hugging Face MiT file (classifiers dropped).

    A state dict already in drsl's layout (``patch_embed.proj.weight``) passes unchanged.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "classifier."))}
    if any("patch_embeddings." in k for k in state):
        state = segformer_from_hf(state)
    return checkpoint_filter_fn(state, None)

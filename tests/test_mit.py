"""MiT encoders and the DAFormer decoder: ImageNet files in the SegFormer (torch.save) and Hugging
Face (safetensors) layouts land on every tensor, identically; the loaded encoder computes what a
functional MiT written from the paper computes on the file's tensors; the decoder has DAFormer's
structure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from drsl.models.daformer import DAFormerHead
from drsl.models.mit import MiTEncoder
from drsl.config import ConfigError, ModelConfig
from drsl.models.registry import backbone, build_encoder
from drsl.models.weights import WeightsError, load_encoder_weights

#: MiT-B0 as published: stage widths, depths, spatial reduction ratios.
B0 = ((32, 64, 160, 256), (2, 2, 2, 2))
SR = (8, 4, 2, 1)
#: The weight adapter the registry gives every MiT variant.
ADAPT = backbone("mit_b0").adapt_weights


def segformer_file(dims: tuple[int, ...], depths: tuple[int, ...], seed: int = 0) -> tuple[dict, dict]:
    """Random tensors under SegFormer's ``mit_b*.pth`` names and shapes, and where each belongs in
    drsl's encoder (our key -> file key). The ImageNet classifier ``head.*`` belongs nowhere."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    where: dict[str, str] = {}

    def add(name: str, shape: tuple[int, ...], ours: str) -> None:
        state[name] = torch.randn(shape, generator=gen)
        where[ours] = name

    def linear(name: str, out: int, inp: int, ours: str) -> None:
        add(f"{name}.weight", (out, inp), f"{ours}.weight")
        add(f"{name}.bias", (out,), f"{ours}.bias")

    def norm(name: str, c: int, ours: str) -> None:
        add(f"{name}.weight", (c,), f"{ours}.weight")
        add(f"{name}.bias", (c,), f"{ours}.bias")

    previous = 3
    for s, (c, depth) in enumerate(zip(dims, depths)):
        k = 7 if s == 0 else 3
        embed = "patch_embed" if s == 0 else f"stages.{s}.downsample"
        add(f"patch_embed{s + 1}.proj.weight", (c, previous, k, k), f"{embed}.proj.weight")
        add(f"patch_embed{s + 1}.proj.bias", (c,), f"{embed}.proj.bias")
        norm(f"patch_embed{s + 1}.norm", c, f"{embed}.norm")
        for j in range(depth):
            o, t = f"block{s + 1}.{j}", f"stages.{s}.blocks.{j}"
            norm(f"{o}.norm1", c, f"{t}.norm1")
            linear(f"{o}.attn.q", c, c, f"{t}.attn.q")
            linear(f"{o}.attn.kv", 2 * c, c, f"{t}.attn.kv")
            linear(f"{o}.attn.proj", c, c, f"{t}.attn.proj")
            if SR[s] > 1:
                add(f"{o}.attn.sr.weight", (c, c, SR[s], SR[s]), f"{t}.attn.sr.weight")
                add(f"{o}.attn.sr.bias", (c,), f"{t}.attn.sr.bias")
                norm(f"{o}.attn.norm", c, f"{t}.attn.norm")
            norm(f"{o}.norm2", c, f"{t}.norm2")
            linear(f"{o}.mlp.fc1", 4 * c, c, f"{t}.mlp.fc1")
            add(f"{o}.mlp.dwconv.dwconv.weight", (4 * c, 1, 3, 3), f"{t}.mlp.dwconv.weight")
            add(f"{o}.mlp.dwconv.dwconv.bias", (4 * c,), f"{t}.mlp.dwconv.bias")
            linear(f"{o}.mlp.fc2", c, 4 * c, f"{t}.mlp.fc2")
        norm(f"norm{s + 1}", c, f"stages.{s}.norm")
        previous = c
    state["head.weight"] = torch.randn(1000, dims[-1], generator=gen)
    state["head.bias"] = torch.randn(1000, generator=gen)
    return state, where


#: Hugging Face's renames of SegFormer block parts (its convert_segformer_original_to_pytorch.py).
HF_PARTS = (
    (".norm1.", ".layer_norm_1."), (".norm2.", ".layer_norm_2."),
    (".attn.q.", ".attention.self.query."), (".attn.proj.", ".attention.output.dense."),
    (".attn.sr.", ".attention.self.sr."), (".attn.norm.", ".attention.self.layer_norm."),
    (".mlp.fc1.", ".mlp.dense1."), (".mlp.fc2.", ".mlp.dense2."),
)


def hugging_face_file(segformer: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors as ``nvidia/mit-b*`` stores them: renamed, ``kv`` split into key and value."""
    out: dict[str, torch.Tensor] = {}
    for key, value in segformer.items():
        if key.startswith("head."):
            out["classifier." + key.removeprefix("head.")] = value.clone()
            continue
        k = re.sub(r"^patch_embed(\d)\.norm\.", lambda m: f"patch_embeddings.{int(m[1]) - 1}.layer_norm.", key)
        k = re.sub(r"^patch_embed(\d)\.", lambda m: f"patch_embeddings.{int(m[1]) - 1}.", k)
        k = re.sub(r"^norm(\d)\.", lambda m: f"layer_norm.{int(m[1]) - 1}.", k)
        k = re.sub(r"^block(\d)\.", lambda m: f"block.{int(m[1]) - 1}.", k)
        for original, hf in HF_PARTS:
            k = k.replace(original, hf)
        if ".attn.kv." in k:
            half = value.shape[0] // 2
            out["segformer.encoder." + k.replace(".attn.kv.", ".attention.self.key.")] = value[:half].clone()
            out["segformer.encoder." + k.replace(".attn.kv.", ".attention.self.value.")] = value[half:].clone()
        else:
            out["segformer.encoder." + k] = value.clone()
    return out


@pytest.fixture(scope="module")
def b0_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    folder = tmp_path_factory.mktemp("mit")
    segformer, where = segformer_file(*B0)
    torch.save(segformer, folder / "mit_b0.pth")
    save_file(hugging_face_file(segformer), str(folder / "model.safetensors"))
    return folder / "mit_b0.pth", folder / "model.safetensors", segformer, where


def test_segformer_file_lands_on_every_tensor(b0_files: tuple) -> None:
    path, _, segformer, where = b0_files
    encoder = MiTEncoder("mit_b0")
    assert set(where) == set(encoder.state_dict())
    load_encoder_weights(encoder, path, ADAPT)
    own = encoder.state_dict()
    misplaced = [k for k, name in where.items() if not torch.equal(own[k], segformer[name])]
    assert not misplaced


def test_hugging_face_file_gives_the_same_encoder(b0_files: tuple) -> None:
    path, hf_path, _, _ = b0_files
    assert "segformer.encoder.block.0.0.attention.self.key.weight" in hugging_face_file(segformer_file(*B0)[0])
    original, hf = MiTEncoder("mit_b0").eval(), MiTEncoder("mit_b0").eval()
    load_encoder_weights(original, path, ADAPT)
    load_encoder_weights(hf, hf_path, ADAPT)
    a, b = original.state_dict(), hf.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for fa, fb in zip(original(x), hf(x)):
            assert torch.equal(fa, fb)


def segformer_forward(w: dict[str, torch.Tensor], x: torch.Tensor, depths: tuple[int, ...]) -> list[torch.Tensor]:
    """MiT's forward written from the SegFormer paper, on the file's own tensor names: overlapping
    patch embedding, attention with spatially reduced keys/values (fused ``kv``: keys first),
    Mix-FFN (fc1, depthwise 3x3, GELU, fc2), a LayerNorm after every stage."""
    import torch.nn.functional as F

    heads = (1, 2, 5, 8)
    maps = []
    for s, depth in enumerate(depths):
        p = f"patch_embed{s + 1}"
        k = w[f"{p}.proj.weight"].shape[-1]
        x = F.conv2d(x, w[f"{p}.proj.weight"], w[f"{p}.proj.bias"], stride=4 if s == 0 else 2, padding=k // 2)
        b, c, h, wd = x.shape
        t = F.layer_norm(x.flatten(2).transpose(1, 2), (c,), w[f"{p}.norm.weight"], w[f"{p}.norm.bias"], 1e-5)
        for j in range(depth):
            o = f"block{s + 1}.{j}"

            def ln(name: str, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
                return F.layer_norm(z, (c,), w[f"{o}.{name}.weight"], w[f"{o}.{name}.bias"], eps)

            def lin(name: str, z: torch.Tensor) -> torch.Tensor:
                return F.linear(z, w[f"{o}.{name}.weight"], w[f"{o}.{name}.bias"])

            y = ln("norm1", t)
            kv_in = y
            if SR[s] > 1:
                grid = y.transpose(1, 2).reshape(b, c, h, wd)
                kv_in = F.conv2d(grid, w[f"{o}.attn.sr.weight"], w[f"{o}.attn.sr.bias"], stride=SR[s])
                kv_in = ln("attn.norm", kv_in.flatten(2).transpose(1, 2), 1e-5)
            n, d = heads[s], c // heads[s]
            q = lin("attn.q", y).reshape(b, -1, n, d).transpose(1, 2)
            key, value = lin("attn.kv", kv_in).split(c, dim=-1)
            key, value = (z.reshape(b, -1, n, d).transpose(1, 2) for z in (key, value))
            attention = (q @ key.transpose(-2, -1) * d**-0.5).softmax(-1) @ value
            t = t + lin("attn.proj", attention.transpose(1, 2).reshape(b, -1, c))
            hidden = lin("mlp.fc1", ln("norm2", t)).transpose(1, 2).reshape(b, 4 * c, h, wd)
            hidden = F.conv2d(hidden, w[f"{o}.mlp.dwconv.dwconv.weight"], w[f"{o}.mlp.dwconv.dwconv.bias"], padding=1, groups=4 * c)
            t = t + lin("mlp.fc2", F.gelu(hidden.flatten(2).transpose(1, 2)))
        t = F.layer_norm(t, (c,), w[f"norm{s + 1}.weight"], w[f"norm{s + 1}.bias"], 1e-6)
        x = t.transpose(1, 2).reshape(b, c, h, wd)
        maps.append(x)
    return maps


def test_loaded_encoder_computes_mit_as_published(b0_files: tuple) -> None:
    path, _, _, _ = b0_files
    small = {k: v * 0.1 for k, v in torch.load(path, weights_only=True).items()}  # tame random weights
    torch.save(small, path.with_name("small.pth"))
    encoder = MiTEncoder("mit_b0").eval()
    load_encoder_weights(encoder, path.with_name("small.pth"), ADAPT)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ours, reference = encoder(x), segformer_forward(small, x, B0[1])
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_file_of_another_variant_is_refused_by_name(b0_files: tuple) -> None:
    path, hf_path, _, _ = b0_files
    with pytest.raises(WeightsError, match=r"mit_b0\.pth.*shape: patch_embed\.norm\.bias: file \(32,\) vs model \(64,\)"):
        load_encoder_weights(MiTEncoder("mit_b1"), path, ADAPT)
    with pytest.raises(WeightsError, match=r"model\.safetensors.*missing: stages\.0\.blocks\.2\.attn\.kv\.bias"):
        load_encoder_weights(MiTEncoder("mit_b2"), hf_path, ADAPT)


def test_encoder_maps_have_the_declared_strides_and_widths() -> None:
    encoder = MiTEncoder("mit_b0")
    maps = encoder(torch.rand(2, 3, 64, 96))
    assert [m.shape[1] for m in maps] == encoder.out_channels == [32, 64, 160, 256]
    assert [(64 // m.shape[2], 96 // m.shape[3]) for m in maps] == [(s, s) for s in encoder.strides]
    assert sum(p.numel() for p in MiTEncoder("mit_b1").parameters()) == pytest.approx(13.15e6, rel=0.01)


def test_daformer_head_has_the_published_structure() -> None:
    channels = [32, 64, 160, 256]
    head = DAFormerHead(channels, num_classes=19)
    e, c, fused = 256, 256, 4 * 256
    expected = (
        sum(k * e + e for k in channels)                      # per-level 1x1 embeddings
        + fused * c + 2 * c                                   # rate 1: 1x1 conv + BN
        + 3 * (fused * 9 + 2 * fused + fused * c + 2 * c)     # rates 6/12/18: depthwise + pointwise
        + 4 * c * c * 9 + 2 * c                               # 3x3 bottleneck + BN
        + c * 19 + 19                                         # classifier
    )
    assert sum(p.numel() for p in head.parameters()) == expected
    dilations = sorted({m.dilation[0] for m in head.fuse.modules() if isinstance(m, torch.nn.Conv2d)})
    assert dilations == [1, 6, 12, 18]
    maps = [torch.rand(1, ch, 16 // 2**i, 24 // 2**i, requires_grad=True) for i, ch in enumerate(channels)]
    logits, features = head.eval()(maps)
    assert logits.shape == (1, 19, 16, 24) and features.shape == (1, head.feature_channels, 16, 24)
    features.sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)


def test_mit_asks_for_output_stride_32() -> None:
    with pytest.raises(ConfigError, match=r"model\.output_stride.*stride 32, not 8"):
        build_encoder(ModelConfig(backbone="mit_b0"))
    assert build_encoder(ModelConfig(backbone="mit_b0", output_stride=32)).strides[-1] == 32

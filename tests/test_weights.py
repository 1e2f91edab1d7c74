"""Initial weights files in their true key layouts: torchvision ResNets of both generations, the
DeepLab-v2 COCO init (Caffe conventions), the bundled EfficientNet-Lite0, and broken files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import resnet50, resnet101

from drsl.config import ModelConfig
from drsl.errors import WeightsError
from drsl.models.segmentor import build_model
from drsl.models.weights import torchvision_state


def save(state: dict[str, Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def randomised_stats(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """BatchNorm statistics away from (0, 1), so that a load that drops them shows in the output."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, value in state.items():
        if key.endswith("running_mean"):
            value = 0.1 * torch.randn(value.shape, generator=gen)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(value.shape, generator=gen)
        out[key] = value
    return out


@pytest.mark.parametrize("with_counters", [True, False], ids=["pytorch>=0.4.1", "2017-file"])
def test_torchvision_resnet_file_matches_torchvision(with_counters: bool, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = resnet50().eval()  # the ImageNet network of the file, undilated, with its fc
    state = randomised_stats(reference.state_dict())
    if not with_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    reference.load_state_dict(state, strict=with_counters)
    path = save(state, tmp_path / "resnet50.pth")
    segmentor = build_model(ModelConfig(num_classes=19, backbone="resnet50", pretrained=str(path))).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        maps = segmentor.encoder(segmentor.normalize(x))
        r = reference
        h = r.maxpool(r.relu(r.bn1(r.conv1(segmentor.normalize(x)))))
        c1 = r.layer1(h)
        c2 = r.layer2(c1)
    # layer1 and layer2 are undilated in both networks: equal outputs; layer3/4 are dilated in drsl
    torch.testing.assert_close(maps[0], c1)
    torch.testing.assert_close(maps[1], c2)
    torch.testing.assert_close(segmentor.normalize(x), (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                               / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))


def deeplab_init_state() -> dict[str, Tensor]:
    """A synthetic ``DeepLab_resnet_pretrained_init-f81d91e8.pth``: ``Scale.`` keys, no
    num_batches_tracked, a 4-branch COCO ``layer5`` classifier."""
    torch.manual_seed(1)
    net = resnet101()
    for module in net.modules():  # keep activations O(1) through 101 layers
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=(2.0 / module.weight[0].numel()) ** 0.5 * 0.5)
    trunk = {k: v for k, v in randomised_stats(net.state_dict()).items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    state = {f"Scale.{k}": v for k, v in trunk.items()}
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, 2048, 3, 3) * 0.01
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(21)
    return state


def caffe_resnet101(state: dict[str, Tensor], rgb01: Tensor) -> Tensor:
    """DeepLab-v2's ResNet-101 written out with torch.nn.functional from the file's tensors."""
    w = {k.removeprefix("Scale."): v for k, v in state.items()}

    def bn(x: Tensor, name: str) -> Tensor:
        return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"],
                            w[f"{name}.weight"], w[f"{name}.bias"], training=False, eps=1e-5)

    bgr255 = rgb01[:, [2, 1, 0]] * 255.0
    x = bgr255 - torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
    x = F.relu(bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    for layer, blocks, stride, dilation in ((1, 3, 1, 1), (2, 4, 2, 1), (3, 23, 1, 2), (4, 3, 1, 4)):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            s = stride if b == 0 else 1
            out = F.relu(bn(F.conv2d(x, w[f"{p}.conv1.weight"], stride=s), f"{p}.bn1"))
            out = F.relu(bn(F.conv2d(out, w[f"{p}.conv2.weight"], padding=dilation, dilation=dilation), f"{p}.bn2"))
            out = bn(F.conv2d(out, w[f"{p}.conv3.weight"]), f"{p}.bn3")
            identity = x if b else bn(F.conv2d(x, w[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
            x = F.relu(out + identity)
    return x


def test_deeplab_init_behaves_as_trained(tmp_path: Path) -> None:
    state = deeplab_init_state()
    path = save(state, tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth")
    segmentor = build_model(ModelConfig(num_classes=19, backbone="resnet101_deeplab", pretrained=str(path))).eval()
    rgb = torch.rand(1, 3, 64, 72)  # even sizes: ceil_mode changes the max-pool output size
    with torch.no_grad():
        ours = segmentor.encoder(segmentor.normalize(rgb))[-1]
        expected = caffe_resnet101(state, rgb)
    assert ours.shape == expected.shape == (1, 2048, 9, 10)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(WeightsError, match="backbone=resnet101_deeplab"):
        torchvision_state(state)  # the same keys as torchvision's: refused, its conventions differ


def test_bundled_efficientnet_classifies_the_cat() -> None:
    import timm
    from skimage.data import chelsea

    from drsl.models.efficientnet import ARCH, bundled_weights, classifier_state
    from drsl.models.weights import read_state_dict

    net = timm.create_model(ARCH).eval()
    net.load_state_dict(classifier_state(read_state_dict(bundled_weights())))
    image = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255.0
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        predicted = net((image - 0.5) / 0.5).argmax(1).item()
    assert 281 <= predicted <= 285, predicted  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    segmentor = build_model(ModelConfig(num_classes=19, backbone="efficientnet_lite0", output_stride=32, pretrained="bundled")).eval()
    with torch.no_grad():
        deepest = segmentor.encoder(segmentor.normalize(image))[-1]
        expected = net.blocks(net.bn1(net.conv_stem((image - 0.5) / 0.5)))  # the classifier's trunk
    torch.testing.assert_close(deepest, expected)


def test_broken_files_name_the_file_and_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"missing\.pth does not exist"):
        build_model(ModelConfig(num_classes=19, backbone="light", pretrained=str(tmp_path / "missing.pth")))
    good = save({"conv.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated.pth") as raised:
        build_model(ModelConfig(num_classes=19, backbone="light", pretrained=str(truncated)))
    assert "\n" not in str(raised.value)
    torch.manual_seed(0)
    resnet50_file = save(resnet50().state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(WeightsError, match=r"resnet50\.pth.*(missing|shape)") as raised:
        build_model(ModelConfig(num_classes=19, backbone="resnet101", pretrained=str(resnet50_file)))
    assert "\n" not in str(raised.value)
    with pytest.raises(WeightsError, match=r"resnet50\.pth.*EfficientNet-Lite0"):
        build_model(ModelConfig(num_classes=19, backbone="efficientnet_lite0", pretrained=str(resnet50_file)))
    with pytest.raises(WeightsError, match=r"resnet50\.pth has no 'Scale\.' keys.*backbone=resnet101"):
        build_model(ModelConfig(num_classes=19, backbone="resnet101_deeplab", pretrained=str(resnet50_file)))

"""Hostile inputs, by class: changed inputs are recognised by content and never reused or adopted
in silence (B); every structure a user hands over is validated, with one line naming the file and
the field (C); sizes and resources are bounded before any work, and echoed values are cut (D)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from drsl.adaptation.pseudo_label_pass import pass_fingerprint
from drsl.cli import main
from drsl.commands import predict
from drsl.config import ConfigError, DatasetConfig, EvalConfig, load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import CLASS_SET_DIR, bind_class_set, load_class_set
from drsl.data.digest import SAMPLE_BYTES, file_digest
from drsl.data.errors import DataError
from drsl.data.io import image_size, read_image, read_label
from drsl.data.registry import build_dataset
from drsl.yaml_io import MAX_ALIAS_EXPANSION, load_yaml
from fixtures import file_hashes, random_image, save_image, train_args, write_folder, write_uda_root

SOURCE_ONLY = "synth/source_only"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def one_line_error(code: int, err: str) -> str:
    """The error line of a refused command (exit 2, exactly one line)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uda_root(tmp_path_factory.mktemp("hostile"), source=4, target_train=2, size=(40, 40))


def as_killed(work: Path) -> None:
    """Make a finished run look like one killed after its last checkpoint."""
    record = json.loads((work / "run.json").read_text())
    record["state"] = "running"
    (work / "run.json").write_text(json.dumps(record))
    (work / "eval.json").unlink()


def rewrite_images(folder: Path, seed: int, count: int = 1) -> None:
    """Write new content under the names of the first ``count`` PNGs of ``folder`` (same size)."""
    rng = np.random.default_rng(seed)
    for path in sorted(folder.rglob("*.png"))[:count]:
        save_image(path, random_image((40, 40), rng))


# ------------------------------------------------------------------ B: inputs identified by content


def test_file_digest_sees_content_size_and_time(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    payload = bytearray(np.random.default_rng(0).integers(0, 256, 10 * SAMPLE_BYTES, dtype=np.uint8).tobytes())
    big.write_bytes(payload)
    first = file_digest(big)
    stamp = big.stat().st_mtime_ns
    payload[len(payload) // 2] ^= 0xFF  # same size, same time, a changed middle byte
    big.write_bytes(payload)
    os.utime(big, ns=(stamp, stamp))
    assert file_digest(big) != first
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    before = file_digest(small)
    os.utime(small, ns=(1, 1))
    assert file_digest(small) != before  # a touched file counts as changed: cheap and safe


def test_pseudo_label_fingerprint_follows_image_content(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "tgt"
    shutil.copytree(data / "tgt", root)
    config = load_config(resolve_config_path("synth/cbst"), [f"data.target.root={root}", "model.light_width=1"])
    classes = bind_class_set(config)
    layer = torch.nn.Conv2d(3, 2, 1)
    fingerprint = lambda: pass_fingerprint(  # noqa: E731
        [layer], build_dataset(config.data.target, classes, require_labels=False), EvalConfig(), "none", 19, "None",
    )
    first = fingerprint()
    assert fingerprint() == first
    rewrite_images(root / "leftImg8bit" / "train", seed=5)  # regenerated under the same names
    assert fingerprint() != first


@pytest.fixture
def killed_run(data: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A finished 2-iteration run with its own class file, made to look killed."""
    classes = tmp_path / "classes.yaml"
    shutil.copy(CLASS_SET_DIR / "cityscapes19.yaml", classes)
    work = tmp_path / "run"
    argv = [*train_args(data, work), f"data.classes={classes}"]
    assert main(["train", SOURCE_ONLY, *argv]) == 0
    as_killed(work)
    return work, argv


def test_resume_refuses_a_changed_class_file(killed_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    work, argv = killed_run
    classes = Path(argv[-1].split("=", 1)[1])
    text = classes.read_text()
    classes.write_text(text.replace("name: road", "name: TMP").replace("name: sidewalk", "name: road")
                       .replace("name: TMP", "name: sidewalk"))
    before = file_hashes(work)
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"work_dir={work}", "--resume"], capsys))
    assert "class set" in line and str(classes) in line and "--accept-changes" in line
    assert "id 0: 'road' -> 'sidewalk', id 1: 'sidewalk' -> 'road'" in line
    assert file_hashes(work) == before  # classes.yaml of the run untouched
    assert main(["train", SOURCE_ONLY, f"work_dir={work}", "--resume", "--accept-changes"]) == 0
    record = json.loads((work / "run.json").read_text())
    assert "class set" in record["history"][-1]["accepted_changes"][0]
    assert load_class_set(str(work / "classes.yaml")).names[:2] == ("sidewalk", "road")


def test_resume_refuses_changed_dataset_files(killed_run: tuple[Path, list[str]], data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    work, _ = killed_run
    source = data / "src"
    saved = tmp_path / "saved_src"
    shutil.copytree(source, saved)
    try:
        rewrite_images(source / "images", seed=7)
        line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"work_dir={work}", "--resume"], capsys))
        assert "data.source" in line and "--accept-changes" in line
        assert main(["train", SOURCE_ONLY, f"work_dir={work}", "--resume", "--accept-changes"]) == 0
    finally:
        shutil.rmtree(source)
        shutil.copytree(saved, source)


def test_a_hand_edited_config_yaml_is_not_obeyed_in_silence(killed_run: tuple[Path, list[str]],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    work, _ = killed_run
    path = work / "config.yaml"
    path.write_text(path.read_text().replace("iterations: 2\n", "iterations: 3\n"))
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"work_dir={work}", "--resume"], capsys))
    assert "config.yaml was edited" in line and "train.iterations: 2 -> 3" in line and "--change-config" in line
    assert main(["train", SOURCE_ONLY, f"work_dir={work}", "--resume", "--change-config"]) == 0
    entry = json.loads((work / "run.json").read_text())["history"][-1]
    assert entry["edited_config"] and entry["changes"]["train.iterations"] == {"old": 2, "new": 3}


@pytest.mark.parametrize("change", ["optim.lr=0.5", "optim.momentum=0.5", "optim.weight_decay=0.1", "optim.name=adamw"])
def test_a_change_the_restored_optimizer_would_override_is_refused(
    change: str, killed_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str],
) -> None:
    work, _ = killed_run
    before = file_hashes(work)
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"work_dir={work}", "--resume", "--change-config", change], capsys))
    assert change.split("=")[0] in line and "would not take effect" in line
    assert file_hashes(work) == before


def test_a_cbst_resume_never_reuses_maps_of_replaced_target_images(data: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "tgt"
    shutil.copytree(data / "tgt", target)
    work = tmp_path / "cbst"
    argv = [*(a for a in train_args(data, work, iterations=4) if a != "data.target=null"), f"data.target.root={target}",
            "data.target_augment.crop_size=[32,32]",
            "init_checkpoint=null", "adapt.rounds=2", "data.source_sampling.mode=uniform"]
    assert main(["train", "synth/cbst", *argv]) == 0
    made = json.loads((work / "pseudo_labels" / "round_1" / "manifest.json").read_text())["fingerprint"]
    as_killed(work)
    rewrite_images(target / "leftImg8bit" / "train", seed=11, count=2)
    resume = ["train", "synth/cbst", f"work_dir={work}", f"--resume-from={work}/checkpoints/iter_3.pt"]
    assert main(resume) == 2  # the changed target images are named first
    assert main([*resume, "--accept-changes"]) == 0
    assert "target images changed" in caplog.text
    assert json.loads((work / "pseudo_labels" / "round_1" / "manifest.json").read_text())["fingerprint"] != made


# ---------------------------------------------------------------- C: every structure is validated


@pytest.mark.parametrize("bases", ["5", "[null]", "{a: b.yaml}", "['']", "[[x.yaml]]", "true"])
def test_base_must_name_files(bases: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"_base_: {bases}\n")
    line = one_line_error(*run_cli(["train", str(config)], capsys))
    assert str(config) in line and "_base_" in line


CLASS = "classes:\n  - {id: 0, name: road, color: [1, 2, 3]}\n  - {id: 1, name: sky, color: [4, 5, 6]}\n"


@pytest.mark.parametrize("content, field", [
    (CLASS + "subsets: [1]\n", "subsets"),
    (CLASS + "mappings: [raw]\n", "mappings"),
    (CLASS + "name: {a: 1}\n", "name"),
    (CLASS + "subsets: {[1]: [road]}\n", "subset"),
    (CLASS + "subsets: {1.5: [road]}\n", "subset"),
    (CLASS + "mappings: {5: {values: {0: road}}}\n", "mapping name"),
    (CLASS + "mappings: {m: {values: {0: road}, description: [x]}}\n", "description"),
    ("classes:\n  - {id: '0', name: road, color: [1, 2, 3]}\n", "id"),
    ("classes:\n  - {id: 0, name: road, color: [true, 2, 3]}\n", "color"),
    ("classes:\n  - {id: 0, name: [road], color: [1, 2, 3]}\n", "name"),
    ("classes: {road: 0}\n", "classes"),
])
def test_class_file_fields_are_checked(content: str, field: str, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_class_set(str(path))
    message = str(caught.value)
    assert str(path) in message and field in message and len(message.splitlines()) == 1


def test_class_file_that_is_not_utf8(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(CLASS.replace("road", "straße").encode("latin-1"))
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, *train_args(data, tmp_path / "w"), f"data.classes={path}"], capsys))
    assert str(path) in line and "UTF-8" in line
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("state, entry", [
    ({"model": [1, 2]}, "'model'"),
    ({"model": {"conv.weight": "not a tensor"}}, "'model'"),
    ({"model": {3: torch.zeros(1)}}, "'model'"),
    ({"model": {}, "config": "model: {backbone: light}"}, "'config'"),
    ({"model": {}, "config": {"model": "light"}}, "'config'"),
    ({"model": {}, "classes": "cityscapes19"}, "'classes'"),
    ({"model": {}, "iteration": "5"}, "'iteration'"),
    ({"model": {}, "optimizer": [1]}, "'optimizer'"),
    ({"model": {}, "rng": {"torch": torch.zeros(3)}}, "'rng'"),
])
def test_checkpoint_entries_are_checked(state: dict, entry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(state, path)
    for command in (["evaluate", str(path)], ["export", str(path), str(tmp_path / "out.pt")]):
        line = one_line_error(*run_cli(command, capsys))
        assert str(path) in line and entry in line
    assert not (tmp_path / "out.pt").exists()


def test_a_stored_class_set_of_the_wrong_shape(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "init.pt"
    torch.save({"model": {}, "classes": {"name": "x", "classes": "road, sky"}}, path)
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, *train_args(data, tmp_path / "w"), f"init_checkpoint={path}"], capsys))
    assert str(path) in line and "classes" in line


def test_weights_file_with_non_text_keys(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.pth"
    torch.save({0: torch.zeros(1)}, path)
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, *train_args(data, tmp_path / "w"), f"model.pretrained={path}"], capsys))
    assert str(path) in line and "dict of tensors" in line


# ------------------------------------------------------------------ D: bounds on sizes and resources


def alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefghij", "bcdefghijk"[: levels - 1]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [alias_bomb(), "a: &a [*a]\n", "a: &a {b: *a}\n", "[" * 1000 + "]" * 1000],
                         ids=["alias_bomb", "list_in_itself", "mapping_in_itself", "deep_nesting"])
def test_yaml_structures_beyond_the_limits_are_refused(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    started = time.perf_counter()
    line = one_line_error(*run_cli(["train", str(config)], capsys))
    assert str(config) in line and len(line) < 500 and time.perf_counter() - started < 10
    classes = tmp_path / "classes.yaml"
    classes.write_text(text)
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"data.classes={classes}"], capsys))
    assert str(classes) in line and len(line) < 500


def test_alias_expansion_is_allowed_up_to_the_limit() -> None:
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    small = "a: &a [" + ", ".join(["0"] * 100) + "]\nb: [" + ", ".join(["*a"] * (MAX_ALIAS_EXPANSION // 101)) + "]\n"
    assert len(load_yaml(small)["b"]) == MAX_ALIAS_EXPANSION // 101


def test_an_alias_bomb_in_an_override(capsys: pytest.CaptureFixture[str]) -> None:
    value = "{" + alias_bomb().replace("\n", ", ").rstrip(", ") + "}"
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, f"train.iterations={value}"], capsys))
    assert "train.iterations" in line and len(line) < 800


@pytest.mark.parametrize("override", [
    "train.iterations=" + "x" * 100_000,
    "data.batch_size=[" + ",".join(["1"] * 20_000) + "]",
    "model.backbone=" + "y" * 50_000,
    "n" * 50_000 + "=1",
], ids=["long_text", "long_list", "long_choice", "long_key"])
def test_echoed_values_are_cut(override: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, override], capsys))
    assert len(line) < 800


@pytest.mark.parametrize("override, key", [
    ("model.light_width=100000", "model.light_width=100000"),
    ("model.decoder_channels=10000000", "model.decoder_channels=10000000"),
    ("data.source.resize=[1099511627776,1]", "data.source.resize"),
    ("eval.crop_size=[65536,65536]", "eval.crop_size"),
    ("data.source_augment.crop_size=[4,4]", "output stride 8"),
    ("data.batch_size=1", "BatchNorm"),
])
def test_sizes_beyond_the_machine_or_the_network_are_refused_before_work(
    override: str, key: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "w"
    extra = ["model.decoder=deeplabv3plus"] if "decoder_channels" in override else []
    line = one_line_error(*run_cli(["train", SOURCE_ONLY, *train_args(data, work), *extra, override], capsys))
    assert key in line
    assert not work.exists()


def test_batch_of_one_trains_with_frozen_batchnorm(data: Path, tmp_path: Path) -> None:
    assert main(["train", SOURCE_ONLY, *train_args(data, tmp_path / "w"), "data.batch_size=1", "model.freeze_bn=true"]) == 0


def test_a_scale_that_leaves_a_few_pixels_is_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    assert main(["train", SOURCE_ONLY, *train_args(data, work)]) == 0
    out = tmp_path / "eval.json"
    line = one_line_error(*run_cli(["evaluate", str(work / "checkpoints" / "latest.pt"), "--scales", "1e-9",
                                    "--out", str(out)], capsys))
    assert "scale 1e-09" in line and "40x40" in line
    assert not out.exists()


def test_a_folder_named_like_an_image_is_searched_never_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    images = save_image(tmp_path / "in" / "street.png", random_image((12, 16), rng)).parent
    (images / "frame.png").mkdir()
    save_image(images / "clip.png" / "inner.png", random_image((12, 16), rng))
    found = predict.discover([str(images)], tmp_path / "out")
    assert [(i.name, i.path.is_file()) for i in found.images] == [("clip.png/inner", True), ("street", True)]
    assert not found.problems and not found.ignored and not found.videos
    for read in (read_image, read_label, image_size):
        with pytest.raises(DataError, match="frame.png: is a folder, not an image file"):
            read(images / "frame.png")
    dataset = write_folder(tmp_path / "mine", n=2)
    (dataset.root / "images" / "frame.png").mkdir()
    (dataset.root / "masks" / "frame.png").mkdir()
    built = build_dataset(DatasetConfig(layout="folder", root=str(dataset.root), class_map=str(dataset.class_map)),
                          load_class_set("cityscapes19"))
    assert [s.name for s in built.samples] == dataset.names and not built.problems

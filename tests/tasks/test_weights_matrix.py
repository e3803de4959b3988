"""Every kind of weights into every builder's ``weights_backbone`` and ``weights``.

Sources: every weights entry name (their files pre-seeded in an offline torch hub cache;
``imagenet_tf_8bit`` from the real TF Lite file, converted on first use), the real
converted classifier and DeepLab files, Lightning checkpoints of the four tasks (tiny
models, saved from the task's state, no training), a torchvision state dict and files of no
known kind. Each is accepted, and the backbone tensors then equal the source's, or refused
with a message naming the reason. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning
import pytest
import torch

from backbones.weights import hub_checkpoint_path
from heads import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite_mobilenet_v2
from heads.joint import ssdlite_deeplabv3_mobilenet_v2
from heads.pretrained import META_KEY, list_weights
from heads.weights_loader import KINDS, open_weights
from tests.tasks.tf_files import FLOAT_DEEPLAB, QUANT_CLASSIFIER, need

BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "mobilenet_v2_classifier": mobilenet_v2_classifier,
    "ssdlite_mobilenet_v2": ssdlite_mobilenet_v2,
    "deeplabv3_mobilenet_v2": deeplabv3_mobilenet_v2,
    "ssdlite_deeplabv3_mobilenet_v2": ssdlite_deeplabv3_mobilenet_v2,
}
WIDTH = 0.35  # tiny task models: fast to build and save


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An offline torch hub cache holding every entry's file: torchvision's two as state
    dicts of torchvision's model, ``imagenet_tf_8bit`` as its real source file (converted
    on first use), the other TF entries as converted files in the cache."""
    previous = torch.hub.get_dir()
    root = tmp_path_factory.mktemp("hub")
    torch.hub.set_dir(str(root))

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(f"offline test: {url}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "download_url_to_file", offline)
        torchvision = pytest.importorskip("torchvision")
        for name in ("imagenet", "imagenet_v2"):
            torch.manual_seed(len(name))
            path = hub_checkpoint_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
        quant = next(e for e in list_weights() if e.name == "imagenet_tf_8bit")
        quant.download_path.parent.mkdir(parents=True, exist_ok=True)
        quant.download_path.symlink_to(need(QUANT_CLASSIFIER))
        for entry in list_weights():
            if entry.file_format == "torchvision" or entry is quant:
                continue
            if entry.name == "imagenet_tf":  # the float sibling: same architecture
                continue
            options = {**entry.architecture, **entry.extra}
            model = BUILDERS[entry.builder](num_classes=entry.num_classes, **options)
            entry.cache_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": model.state_dict(), META_KEY: {}}, entry.cache_path)
        yield root
    torch.hub.set_dir(previous)


@pytest.fixture(scope="module")
def converted(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real TF Lite classifier and float DeepLab as ``mobilezoo convert`` writes them."""
    from tasks.cli.weights import convert_main

    out = tmp_path_factory.mktemp("converted")
    convert_main([str(need(FLOAT_DEEPLAB)), "--output", str(out / "deeplab.pt")])
    # the classifier entry's cache is that same conversion; convert it once
    open_weights("imagenet_tf_8bit").state_dict(progress=False)
    quant = next(e for e in list_weights() if e.name == "imagenet_tf_8bit")
    shutil.copy(quant.cache_path, out / "classifier.pt")
    float_entry = next(e for e in list_weights() if e.name == "imagenet_tf")
    shutil.copy(quant.cache_path, float_entry.cache_path)
    return {"converted_classifier": out / "classifier.pt", "converted_deeplab": out / "deeplab.pt"}


def _save_task(task: lightning.LightningModule, path: Path) -> Path:
    """A Lightning checkpoint of a task that never trained, written by the Trainer."""
    trainer = lightning.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def files(converted: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torchvision

    from tasks import ClassificationTask, DetectionTask, MultiTaskTask, SegmentationTask

    out = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    tasks = {
        "classification_ckpt": ClassificationTask(num_classes=3, width_mult=WIDTH),
        "detection_ckpt": DetectionTask(num_classes=2, width_mult=WIDTH, image_size=96),
        "segmentation_ckpt": SegmentationTask(num_classes=3, width_mult=WIDTH, padding="tf"),
        "joint_ckpt": MultiTaskTask(
            num_det_classes=2, num_seg_classes=3, width_mult=WIDTH, image_size=96
        ),
    }
    made = {name: _save_task(task, out / f"{name}.ckpt") for name, task in tasks.items()}
    tv = torchvision.models.mobilenet_v2(width_mult=WIDTH, num_classes=5)
    torch.save(tv.state_dict(), out / "torchvision.pth")
    made["torchvision_state_dict"] = out / "torchvision.pth"
    return {**converted, **made}


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


def _assert_backbone_from(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Every backbone tensor of the model that the source has equals the source's."""
    own = model.state_dict()
    shared = [k for k in _backbone(source) if k in own]
    assert len(shared) >= 100, shared[:3]
    for key in shared:
        torch.testing.assert_close(own[key], source[key], rtol=0, atol=0, msg=key)


FILE_KINDS = (
    "converted_classifier", "converted_deeplab", "classification_ckpt", "detection_ckpt",
    "segmentation_ckpt", "joint_ckpt", "torchvision_state_dict",
)  # fmt: skip


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_every_file_kind_starts_every_backbone(files, kind: str, builder: str) -> None:
    source = open_weights(files[kind])
    model = BUILDERS[builder](weights_backbone=str(files[kind]))
    _assert_backbone_from(model, source.state_dict())
    for key in ("width_mult", "divisible_by", "padding"):  # the architecture follows
        if key in source.architecture:
            assert getattr(model.backbone, key) == source.architecture[key], key


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("kind", FILE_KINDS)
def test_every_file_kind_into_weights(
    files, kind: str, builder: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = open_weights(files[kind])
    state = source.state_dict()
    with caplog.at_level(logging.WARNING, logger="mobilezoo"):
        model = BUILDERS[builder](weights=str(files[kind]))
    if source.builder == builder:  # its own family: the whole model, as it was built
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
        assert "skipped" not in caplog.text
        return
    _assert_backbone_from(model, state)
    lines = [r.getMessage() for r in caplog.records if "loaded the shared" in r.getMessage()]
    assert len(lines) == 1 and "skipped" in lines[0], caplog.text
    assert str(files[kind]) in lines[0]
    if {source.builder, builder} == {"ssdlite_mobilenet_v2", "ssdlite_deeplabv3_mobilenet_v2"}:
        own = model.state_dict()  # the whole detector: extra layers and box head too
        for key in [k for k in state if k.startswith(("extras.", "head.box_predictors."))]:
            torch.testing.assert_close(own[key], state[key], rtol=0, atol=0, msg=key)


ENTRY_NAMES = sorted({e.name for e in list_weights()})


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_every_entry_name_starts_every_backbone(hub, converted, name: str, builder: str) -> None:
    source = open_weights(name)
    model = BUILDERS[builder](weights_backbone=name)
    _assert_backbone_from(model, source.state_dict())
    assert model.backbone.padding == source.architecture["padding"]
    assert model.backbone.width_mult == source.architecture["width_mult"]


def test_an_explicit_option_that_does_not_fit_is_refused(files) -> None:
    with pytest.raises(ValueError, match=r"need width_mult=0.5, got width_mult=0.75"):
        ssdlite_mobilenet_v2(weights_backbone=str(files["converted_deeplab"]), width_mult=0.75)
    with pytest.raises(ValueError, match=r"need divisible_by=1, got divisible_by=4"):
        deeplabv3_mobilenet_v2(weights=str(files["converted_deeplab"]), divisible_by=4)


def test_tasks_record_what_weights_backbone_decided(files) -> None:
    from tasks import DetectionTask, MultiTaskTask, SegmentationTask

    deeplab = str(files["converted_deeplab"])  # width 0.5, no channel rounding, TF padding
    for task in (
        DetectionTask(num_classes=2, weights_backbone=deeplab),
        SegmentationTask(num_classes=3, weights_backbone=deeplab),
        MultiTaskTask(num_det_classes=2, num_seg_classes=3, weights_backbone=deeplab),
    ):
        assert (task.hparams["width_mult"], task.hparams["divisible_by"]) == (0.5, 1)
        assert task.hparams["padding"] == task.model.backbone.padding == "tf"


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("argument", ["weights", "weights_backbone"])
def test_files_of_no_known_kind_are_refused_naming_file_and_kinds(
    tmp_path: Path, builder: str, argument: str
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ValueError, match="cannot load weights file .*garbage.pt") as err:
        BUILDERS[builder](**{argument: str(garbage)})
    assert KINDS[1] in str(err.value)
    unknown = tmp_path / "unknown.pt"
    torch.save({"conv.weight": torch.zeros(2)}, unknown)
    with pytest.raises(ValueError, match=r"unknown.pt: its tensors \('conv.weight'\)") as err:
        BUILDERS[builder](**{argument: str(unknown)})
    assert KINDS[-1] in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a weights name"):
        BUILDERS[builder](**{argument: str(tmp_path / "missing.pt")})


@pytest.mark.parametrize("builder", [b for b in BUILDERS if b != "mobilenet_v2_classifier"])
@pytest.mark.parametrize("name", ["imagenet", "imagenet_v2", "imagenet_tf", "imagenet_tf_8bit"])
def test_imagenet_names_as_weights_of_other_families_give_the_backbone(
    hub, converted, name: str, builder: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="mobilezoo"):
        model = BUILDERS[builder](weights=name)
    _assert_backbone_from(model, open_weights(name).state_dict())
    assert model.backbone.padding == ("tf" if "_tf" in name else "torch")
    # one line: the classifier's linear layer (and layer_19 for DeepLab) skipped
    assert caplog.text.count("loaded the shared backbone") == 1
    assert "skipped" in caplog.text and "head (2)" in caplog.text


def _deeplab_file(path: Path, meta: object, nan: bool = False) -> Path:
    state = deeplabv3_mobilenet_v2(width_mult=WIDTH).state_dict()
    if nan:
        state["head.classifier.weight"][0] = float("nan")
    torch.save({"state_dict": state, META_KEY: meta}, path)
    return path


@pytest.mark.parametrize(
    ("meta", "nan", "reason"),
    [
        ({"builder": "ssdlite_mobilenet_v2"}, False, "names builder 'ssdlite_mobilenet_v2'"),
        ({"architecture": {"padding": "x" * 500}}, False, "padding='xxx.* is invalid"),
        ({"architecture": {"output_stride": 12}}, False, "output_stride='12' is invalid"),
        ({"architecture": ["x"] * 100_000}, False, "metadata block is too large"),
        ({}, True, "NaN or infinite values in 1 tensors"),
    ],
)
def test_untrusted_metadata_and_values_are_refused(
    tmp_path: Path, meta: object, nan: bool, reason: str
) -> None:
    path = _deeplab_file(tmp_path / "file.pt", meta, nan)
    with pytest.raises(ValueError, match=reason) as err:
        deeplabv3_mobilenet_v2(weights=str(path))
    assert str(path) in str(err.value)


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(ValueError, match="could run code on load"):
        ssdlite_mobilenet_v2(weights_backbone=str(path))


def test_a_converted_file_without_metadata_is_read_by_its_tensors(tmp_path: Path) -> None:
    path = _deeplab_file(tmp_path / "bare.pt", {})
    model = deeplabv3_mobilenet_v2(weights=str(path))
    assert model.backbone.width_mult == WIDTH and model.num_classes == 21


def test_multitask_task_starts_from_a_detection_checkpoint(files) -> None:
    from tasks import MultiTaskTask

    task = MultiTaskTask(num_det_classes=2, num_seg_classes=3, weights=str(files["detection_ckpt"]))
    assert task.hparams["width_mult"] == WIDTH  # the checkpoint's architecture
    detector = open_weights(files["detection_ckpt"]).state_dict()
    own = task.model.state_dict()
    for key in [k for k in detector if k.startswith(("backbone.", "extras.", "head."))]:
        torch.testing.assert_close(own[key], detector[key], rtol=0, atol=0, msg=key)
    no_skip = MultiTaskTask(num_det_classes=2, num_seg_classes=3, seg_skip=None, width_mult=WIDTH)
    assert no_skip.model.seg_skip is None


def test_metadata_nested_thousands_deep_is_refused_in_one_line(tmp_path: Path) -> None:
    import sys

    nested: list = []
    for _ in range(5000):
        nested = [nested]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # only to write the hostile file
    try:
        path = _deeplab_file(tmp_path / "deep.pt", {"architecture": nested}, False)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(ValueError, match="metadata block is too large"):
        deeplabv3_mobilenet_v2(weights=str(path))

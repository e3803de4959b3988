"""Named trained weights for the builders (torchvision-style entries) and how they load.

Every entry names its official source file (URL, sha256 where known), the input it expects
(size, value range, padding), its categories, the published metric with its source and how
this project checked the import. The entries are registered with their builder
(``@register_model(weights=...)`` next to the builder's definition); ``list_weights`` reads
them from the registry. A builder given ``weights="<name>"`` takes its architecture options
(``width_mult``, ``divisible_by``, ``padding``, ...) from the entry, then loads a converted
state dict cached under ``$TORCH_HOME/hub/checkpoints/mobilezoo``. The first use downloads
the source file (``fetch_source``: progress bar, sha256 checked) and ``heads.weights_loader``
converts it with ``heads.tf_import``, imported only then: the TF readers need the ``tf``
extra, ``import heads`` does not.

A converted file (``mobilezoo convert``) is ``{"state_dict": ..., "mobilezoo": {...}}``;
its ``"mobilezoo"`` part records the builder and architecture it was converted for, so
``weights=<that file>`` builds the right model too. ``heads.weights_loader`` reads every
kind of weights (these entries, converted files, task checkpoints, state dicts) for the
builders, the tasks and export.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from backbones.registry import get_model_spec, model_specs
from backbones.weights import WeightsError

log = logging.getLogger("mobilezoo")

#: key of the metadata in files written by ``mobilezoo convert``
META_KEY = "mobilezoo"


Stat = float | tuple[float, float, float]


class Preprocess(nn.Module):
    """The preprocessing an entry's model was trained with: ``(x - mean) / std`` (per
    channel when given three values) after an optional bilinear resize.

    Input: a ``uint8`` (0..255) or float (0..255) RGB image ``[3, H, W]`` or batch
    ``[B, 3, H, W]``. Output: float ``[B, 3, h, w]`` with ``(h, w) = size`` when ``size`` is
    set, else the input size.
    """

    def __init__(
        self, size: tuple[int, int] | None, mean: Stat, std: Stat, align_corners: bool = False
    ) -> None:
        super().__init__()
        self.size = size
        self.mean = mean
        self.std = std
        self.align_corners = align_corners

    def forward(self, image: Tensor) -> Tensor:
        x = image.float()
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, self.size, mode="bilinear", align_corners=self.align_corners)
        mean = torch.tensor(self.mean, dtype=x.dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"size={self.size}, mean={self.mean}, std={self.std}"


@dataclass(frozen=True)
class WeightsEntry:
    """One set of trained weights for one builder.

    Attributes:
        builder: builder function name, e.g. ``"deeplabv3_mobilenet_v2"``.
        name: entry name passed as ``weights=``, e.g. ``"voc_tf"``.
        url: the official release file.
        sha256: of that file (``None`` where not known: then it is not checked).
        file_format: ``"tflite"`` (a ``.tflite`` file), ``"tflite_in_tar"`` (the ``.tflite``
            inside a ``.tgz``), ``"tf_tar"`` (a TF model-zoo tarball holding a checkpoint and
            a frozen graph) or ``"torchvision"``.
        num_classes: outputs of the converted model (background included for segmentation,
            excluded for detection, TF's extra ImageNet background class dropped).
        architecture: builder options the weights need.
        input_size: ``(H, W)`` the model was trained/exported at.
        mean, std: ``(pixel - mean) / std`` gives the expected input (one value, or one
            per RGB channel).
        padding: convolution padding the weights were trained with (``"tf"``: "SAME").
        categories: class names in output order.
        metric: the published number, e.g. ``"VOC 2012 val mIoU 75.32"``.
        metric_source: where it is published.
        checked: how this project checked the import.
        member: file inside the tarball, for ``"tflite_in_tar"`` / ``"tf_tar"``.
        extra: builder options used for the conversion only (e.g. the ``output_stride``
            a TF Lite file was exported at); the user's builder call may choose others.
    """

    builder: str
    name: str
    url: str
    sha256: str | None
    file_format: str
    num_classes: int
    architecture: dict[str, Any]
    input_size: tuple[int, int]
    mean: Stat
    std: Stat
    categories: Callable[[], Sequence[str]]
    metric: str
    metric_source: str
    checked: str
    member: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def padding(self) -> str:
        return str(self.architecture.get("padding", "torch"))

    @property
    def value_range(self) -> tuple[float, float]:
        """Model input of pixel values 0 and 255 (the lowest of the channels for 0, the
        highest for 255 when normalized per channel)."""
        means = self.mean if isinstance(self.mean, tuple) else (self.mean,) * 3
        stds = self.std if isinstance(self.std, tuple) else (self.std,) * 3
        return (
            min(-m / s for m, s in zip(means, stds, strict=True)),
            max((255 - m) / s for m, s in zip(means, stds, strict=True)),
        )

    def transforms(self, resize: bool | None = None) -> Preprocess:
        """The matching preprocessing. ``resize`` (default: True except for segmentation,
        which TF evaluates on the full image) resizes to ``input_size``."""
        if resize is None:
            resize = get_model_spec(self.builder).kind != "segmenter"
        return Preprocess(
            self.input_size if resize else None,
            self.mean,
            self.std,
            bool(self.architecture.get("align_corners", False)),
        )

    @property
    def cache_path(self) -> Path:
        """Where the converted state dict is cached."""
        return (
            Path(torch.hub.get_dir()) / "checkpoints" / META_KEY / f"{self.builder}-{self.name}.pt"
        )

    @property
    def download_path(self) -> Path:
        """Where the downloaded source file is kept."""
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(self.url)


#: TF's input range [-1, 1] (TF-slim, DeepLab, the Object Detection API), as ``mean``/``std``
TF_RANGE = {"mean": 127.5, "std": 127.5}
TORCHVISION_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CORAL_URL = "https://github.com/google-coral/test_data/raw/master/"
TF_DOWNLOAD_URL = "http://download.tensorflow.org/models/"
#: what ``checked`` says of a TF model-zoo tarball that could not be obtained here
NOT_CHECKED_TAR = (
    "not on the real file (not obtainable here): its frozen_inference_graph.pb is read with "
    "TF's GraphDef protos, tested on graphs written by TensorFlow (tests/tasks/"
    "test_tf_checkpoint.py, test_tf_graphdef.py); the backbone/head name mapping is the one "
    "checked against the TF Lite runtime"
)


def list_weights(builder: str | None = None) -> list[WeightsEntry]:
    """All entries (those registered with their builders, ``backbones.registry``), or
    those of one builder."""
    return [e for spec in model_specs() for e in spec.weights if builder in (None, e.builder)]


def get_weights(builder: str, name: str) -> WeightsEntry:
    """The entry ``name`` of ``builder``; ``ValueError`` names the valid choices."""
    for entry in list_weights(builder):
        if entry.name == name:
            return entry
    names = [e.name for e in list_weights(builder)]
    raise ValueError(f"weights for {builder} must be one of {names} or a file, got {name!r}")


def is_entry_name(builder: str, weights: object) -> bool:
    """True when ``weights`` names an entry of ``builder``."""
    return isinstance(weights, str) and any(e.name == weights for e in list_weights(builder))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_source(entry: WeightsEntry, progress: bool = True) -> Path:
    """The entry's source file: downloaded once into the hub cache, sha256 checked.

    Raises:
        RuntimeError: no network (the message says which file to put where) or a checksum
            mismatch.
    """
    path = entry.download_path
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(entry.url, str(path), progress=progress)
        except Exception as err:  # URLError, HTTPError, socket errors...
            raise RuntimeError(
                f"could not download {entry.builder} weights {entry.name!r} from {entry.url} "
                f"({type(err).__name__}: {err}). Offline, put that file at {path}, or a file "
                f"converted with `mobilezoo convert` at {entry.cache_path}."
            ) from err
    if entry.sha256 is not None:
        actual = _sha256(path)
        if actual != entry.sha256:
            raise RuntimeError(
                f"{path} has sha256 {actual}, expected {entry.sha256} ({entry.url}); "
                "delete it to download again"
            )
    return path


def load_for_finetuning(
    model: nn.Module,
    state: dict[str, Tensor],
    class_predictors: Sequence[str],
    source: str = "weights",
) -> list[str]:
    """Load every tensor of ``state``; class predictors whose shape differs are skipped.

    When the model has another number of classes than the weights, the layers under the
    ``class_predictors`` prefixes keep their fresh initialization and everything else is
    loaded: the fine-tuning recipe. What was skipped is logged (logger ``"mobilezoo"``).

    Returns:
        The skipped state-dict keys (empty when the classes match).

    Raises:
        ValueError: a tensor is missing, unexpected, or of another shape outside the class
            predictors (the weights are for another architecture).
    """
    own = model.state_dict()
    prefixes = tuple(class_predictors)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    wrong = [k for k in mismatched if not k.startswith(prefixes)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise WeightsError(f"{source} does not fit this model ({detail})")
    model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    if mismatched:
        shapes = ", ".join(
            f"{k} {tuple(state[k].shape)}->{tuple(own[k].shape)}" for k in mismatched
        )
        log.warning(
            "fine-tuning from %s: loaded %d tensors, kept the fresh initialization of %d "
            "class-predictor tensors whose shape differs (%s)",
            source,
            len(state) - len(mismatched),
            len(mismatched),
            shapes,
        )
    return mismatched

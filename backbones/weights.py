"""Loading torchvision's MobileNetV2 weight files, safely (``weights_only=True``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

# torchvision's MobileNet_V2_Weights; kept here so that a file already in the torch hub
# cache loads without importing torchvision.
IMAGENET_URLS = {
    "imagenet": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",  # IMAGENET1K_V1
    "imagenet_v2": "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth",  # IMAGENET1K_V2
}
_ENUM_NAMES = {"imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}


class WeightsError(ValueError):
    """Weights that cannot be used (unreadable, of no known kind, of another architecture);
    the message is one line naming the file and the problem. The command line reports it
    as such (exit code 2)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """Neither an existing file nor a known weights name."""


def hub_checkpoint_path(name: str) -> Path:
    """Where torch hub caches the file of named weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_URLS[name])


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Load a state dict with ``weights_only=True``; unwrap ``{"state_dict": ...}`` files.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a plain tensor state dict (e.g. a pickle that would run
            code), with the file named.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(
            f"cannot load weights file {path} safely (weights_only=True): {type(err).__name__}:"
            f" {str(err).splitlines()[0] if str(err) else ''}. Only tensor state dicts are"
            " accepted; files that need arbitrary pickled objects are refused."
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


class WeightsDownloadError(RuntimeError):
    """Named ImageNet weights could not be downloaded. The message says where to put the
    file by hand and names ``option``, the setting that takes a local file instead: the
    weights loader re-raises it with the builder's name (``weights_backbone``) via
    ``for_option``."""

    def __init__(self, name: str, url: str, dest: Path, cause: str, option: str = "weights"):
        self.name, self.url, self.dest, self.cause, self.option = name, url, dest, cause, option
        super().__init__(
            f"could not download {name} weights from {url} ({cause}). On an offline machine, "
            f"copy that file to {dest} (the torch hub cache, set by TORCH_HOME) or set "
            f"{option} to the path of a torchvision mobilenet_v2 state dict."
        )

    def for_option(self, option: str) -> WeightsDownloadError:
        """The same error, naming ``option`` as the setting to change."""
        return WeightsDownloadError(self.name, self.url, self.dest, self.cause, option)


def _download_imagenet(name: str, dest: Path) -> None:
    """Fetch named weights through torchvision's weight enum into the hub cache."""
    try:
        from torchvision.models import MobileNet_V2_Weights

        url = getattr(MobileNet_V2_Weights, _ENUM_NAMES[name]).url
    except ImportError:  # torchvision is optional for the backbone alone
        url = IMAGENET_URLS[name]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), progress=True)
    except Exception as err:  # URLError, HTTPError, socket errors, ...
        raise WeightsDownloadError(name, url, dest, f"{type(err).__name__}: {err}") from err


def load_torchvision_state_dict(weights: str | Path, width_mult: float = 1.0) -> dict[str, Tensor]:
    """State dict of torchvision's ``mobilenet_v2`` from a weights name or a file path.

    Args:
        weights: ``"imagenet"`` (IMAGENET1K_V1, top-1 71.878), ``"imagenet_v2"``
            (IMAGENET1K_V2, top-1 72.154), or a path to a saved state dict.
        width_mult: width of the network the weights are for; named ImageNet weights
            exist for 1.0 only.
    """
    name = str(weights)
    if name.startswith("imagenet") and width_mult != 1.0:
        raise ValueError(f"ImageNet weights exist for width_mult=1.0 only, got {width_mult}")
    if name in IMAGENET_URLS:
        path = hub_checkpoint_path(name)
        if not path.is_file():
            _download_imagenet(name, path)
        return load_state_dict_file(path)
    if name.startswith("imagenet"):
        raise ValueError(f"weights must be one of {sorted(IMAGENET_URLS)} or a file, got {name!r}")
    return load_state_dict_file(name)

"""Importing the pure-torch packages must not pull in the training stack."""

import subprocess
import sys


def test_backbones_and_heads_import_with_torch_alone() -> None:
    code = (
        "import sys; import backbones, heads; "
        "from backbones import mobilenet_v2; mobilenet_v2(); "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'albumentations', 'pycocotools',"
        " 'torchmetrics', 'tasks') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

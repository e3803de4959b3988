"""Data modules: the real data sets (``coco``, ``voc``, ``cityscapes``, ``imagefolder``), the
generated demo sets (``tasks.data.demo``), transforms and loaders."""

import importlib
import sys

# The demo generators moved into tasks.data.demo; their old module names keep working
# (imports, and class paths saved in configs and checkpoints).
_MOVED = {
    "demo_classification": "tasks.data.demo.classification",
    "demo_detection": "tasks.data.demo.detection",
    "demo_segmentation": "tasks.data.demo.segmentation",
    "synthetic": "tasks.data.demo.shapes",
}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(_new)

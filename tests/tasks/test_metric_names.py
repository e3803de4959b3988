"""Per-class metric keys: one distinct key per class, so Lightning never averages two."""

from __future__ import annotations

import pytest
import torch

from tasks.metrics.logged import metric_names
from tasks.segmentation import SegmentationTask


def test_distinct_names_only_lose_spaces() -> None:
    assert metric_names(["road", "traffic light", "a/b"]) == ["road", "traffic_light", "a_b"]


def test_shared_names_get_their_class_index() -> None:
    with pytest.warns(UserWarning, match=r"\['person', 'traffic_light'\]"):
        keys = metric_names(["person", "traffic light", "person", "traffic_light", "car"])
    assert keys == ["person_0", "traffic_light_1", "person_2", "traffic_light_3", "car"]
    with pytest.warns(UserWarning):  # "a_1" is a class's own name: every key is indexed
        assert metric_names(["a", "a", "a_1"]) == ["a_0", "a_1", "a_1_2"]


def test_segmentation_logs_each_class_of_a_shared_name_apart() -> None:
    """Two classes named alike: Lightning averaged their IoUs (1.0 and 0.0) into one
    ``val/iou_x`` of 0.5; each now has its own key."""
    task = SegmentationTask(num_classes=3, width_mult=0.35, class_names=["bg", "x", "x"])
    logged: dict[str, float] = {}
    task.log = lambda key, value, **kwargs: logged.__setitem__(key, float(value))  # type: ignore[method-assign]
    masks = torch.tensor([[[0, 1], [0, 1]]])  # class 2 is never right
    task.val_metrics.update(torch.nn.functional.one_hot(torch.tensor([[[0, 1], [2, 1]]]), 3)
                            .permute(0, 3, 1, 2).float(), masks)  # fmt: skip
    with pytest.warns(UserWarning, match="share the metric names"):
        task._log_epoch_metrics(task.val_metrics, "val")
    assert logged["val/iou_x_1"] == 1.0 and logged["val/iou_x_2"] == 0.0
    assert "val/iou_x" not in logged

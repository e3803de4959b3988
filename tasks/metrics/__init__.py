"""Evaluation metrics, equal on one process and under DDP.

``coco`` (pycocotools' COCOeval box metrics), ``segmentation`` (mIoU and pixel accuracy
from one confusion matrix over the set) and ``logged`` (a loss averaged over the whole set,
and one distinct log key per class).
"""

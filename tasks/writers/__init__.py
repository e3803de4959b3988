"""Callbacks that write ``mobilezoo predict`` results to files, one output per input image.

``predictions`` (the detection, segmentation and classification writers) and ``multitask``
(the joint model's writer).
"""

"""Shared feature extractors (pure torch)."""

from backbones.complexity import count_madds, count_parameters
from backbones.layers import ConvBNReLU6, InvertedResidual, make_divisible
from backbones.mobilenetv2 import STAGE_ENDS, FeatureInfo, MobileNetV2, mobilenet_v2
from backbones.weights import load_state_dict_file, load_torchvision_state_dict

__all__ = [
    "STAGE_ENDS",
    "ConvBNReLU6",
    "FeatureInfo",
    "InvertedResidual",
    "MobileNetV2",
    "count_madds",
    "count_parameters",
    "load_state_dict_file",
    "load_torchvision_state_dict",
    "make_divisible",
    "mobilenet_v2",
]

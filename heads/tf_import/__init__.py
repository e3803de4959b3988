"""Import of TensorFlow's released MobileNetV2, SSDLite and DeepLab weights.

Readers give ``{tf_variable_name: numpy array}``: ``tflite`` (TF Lite flatbuffers, float
and 8-bit, via the ``tflite`` schema package), ``graphdef`` (frozen graphs, via TF's protos
in ``tensorboard``), ``checkpoint`` (TF V2 checkpoints, decoded directly) and ``keras``
(``.h5`` / ``.keras``, via ``h5py``). ``families`` gives TF-slim names to a MobileNetV2 of any
family (TF2 Model Garden, Keras, their TF Lite exports) by the order of its layers;
``detection`` / ``segmentation`` place the layers of SSD(Lite) TF Lite detection exports
(``TFLite_Detection_PostProcess``: anchors checked, NMS options read) and of DeepLab files
named after TF ops by following their graphs;
``names`` maps TF-slim names to our modules; ``convert`` assembles state dicts and whole
models (given the builders by name: ``convert_file(path, builders=heads.get_model_builder)``);
``verify`` compares a conversion with the TF Lite runtime (``emulate``: with an 8-bit
file's activation rounding; ``layerwise``: each layer on the runtime's own input). The
``mobilezoo weights`` / ``convert`` commands are ``tasks.cli.weights``;
``python -m benchmarks.tf_runtime`` prints the runtime comparison of
every shared file.

Part of the model side: torch and numpy, no Lightning. The readers need the ``tf`` extra;
``import backbones`` and ``import heads`` never import this package (``heads.weights_loader``
does, when a named TF entry is first converted).
"""

from heads.tf_import.convert import (
    convert_entry,
    convert_file,
    convert_variables,
    infer_builder,
    read_variables,
    save_converted,
    to_torch_layout,
)
from heads.tf_import.names import (
    ConvMapping,
    backbone_mappings,
    classifier_mappings,
    deeplab_mappings,
    ssdlite_mappings,
)

__all__ = [
    "ConvMapping",
    "backbone_mappings",
    "classifier_mappings",
    "convert_entry",
    "convert_file",
    "convert_variables",
    "deeplab_mappings",
    "infer_builder",
    "read_variables",
    "save_converted",
    "ssdlite_mappings",
    "to_torch_layout",
]

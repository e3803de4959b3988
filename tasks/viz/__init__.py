"""Pictures: predictions drawn on images, evaluation figures, and a run's curves.

``draw`` (boxes, mask overlays and top-k labels on ``uint8`` images), ``figures``
(``EvaluationFigures``: validation images and evaluation figures in TensorBoard and as PNG
files) and ``plots`` (matplotlib figures, and ``mobilezoo plot``).
"""

"""Data modules: the real data sets (``coco``, ``voc``, ``cityscapes``, ``imagefolder``), the
generated demo sets (``tasks.data.demo``), transforms and loaders."""

"""Readers of released formats: they know files, not grouping rules.

* :mod:`.refer`: the refer toolkit's RefCOCO / RefCOCO+ / RefCOCOg (``refs(*).p``) and gRefCOCO
  (``grefs(*).json``) with COCO ``instances.json``;
* :mod:`.d3`: GRD as released, the D³ pickles, and the rules of their tables;
* :mod:`.images`: image sizes and binary masks from image files.

A new source is a reader here plus a builder in :mod:`grdkit.builders`.
"""

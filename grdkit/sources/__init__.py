"""Readers of released formats: they know files, not grouping rules.

* :mod:`.refer`: the refer toolkit's RefCOCO / RefCOCO+ / RefCOCOg (``refs(*).p``) and gRefCOCO
  (``grefs(*).json``) with COCO ``instances.json``;
* :mod:`.d3`: GRD as released, the D³ pickles, and the rules of their tables;
* :mod:`.d3` also reads D³'s COCO-style JSON;
* :mod:`.cosod`: Co-SOD group folders (CoCA, CoSal2015, CoSOD3k): groups, image / mask pairs;
* :mod:`.images`: image sizes and binary masks from image files.

A new source is a reader here plus a builder in :mod:`grdkit.builders`.
"""

"""The canonical GRES format: what every builder writes and every consumer reads.

* :mod:`.dataset`: typed records, :class:`GresDataset` with O(1) lookups, deterministic load/save;
* :mod:`.problems`: the format's rules as generators of findings (loading raises the first,
  ``grdkit validate`` lists all) and the JSON Schema;
* :mod:`.masks`: COCO RLE through pycocotools, polygon rules; :mod:`.rlecheck`: RLE integrity of
  many masks at once; :mod:`.stats`: dataset statistics; :mod:`.derive`: datasets derived from
  canonical ones (union of training sets, RES setting).

Nothing here imports a source, a builder, an evaluator or an exporter.
"""

from .dataset import (
    Expression,
    GresDataset,
    Group,
    Image,
    Target,
    dumps,
    load_dataset,
    load_splits,
    save_dataset,
)
from .problems import Finding, json_schema, record_problems, reference_problems

__all__ = ["Expression", "Finding", "GresDataset", "Group", "Image", "Target", "dumps",
           "json_schema", "load_dataset", "load_splits", "record_problems",
           "reference_problems", "save_dataset"]

"""Builders: grouping rules that turn a source's records into canonical GRES splits.

* :mod:`.assemble`: the split assembler every builder uses (positive = union of referred masks,
  negative = empty RLE, cached annotation RLEs, ``info``);
* :mod:`.refer`: G-RefC / G-RefC+ / G-RefCg from refer data (:func:`build_dataset`);
* :mod:`.grefcoco`: gRefCOCO as a benchmark, one group per image (:func:`build_grefcoco`);
* :mod:`.res`: the classic RES benchmarks RefCOCO / RefCOCO+ / RefCOCOg, one sample per
  sentence (:func:`build_res`);
* :mod:`.grd`: GRD from the D³ tables (:func:`convert_d3`);
* :mod:`.cosod`: Co-SOD group folders, folder name as expression (:func:`build_cosod`);
* :mod:`.imagegroup`: one group from image files and PNG masks (:func:`group_from_files`).

A new source is a reader in :mod:`grdkit.sources` plus a builder here that feeds a
:class:`SplitAssembler`, and a :class:`~grdkit.registry.DatasetSpec` in :mod:`grdkit.registry`
(one typed record per dataset: names, sources, splitBy, splits, paper counts).
"""

from ..registry import DATASETS, DatasetSpec, dataset_spec, refer_datasets
from .assemble import AnnotationMasks, SplitAssembler
from .cosod import CosodReport, build_cosod
from .grd import (
    EXPRESSION_ALIASES,
    EXPRESSION_SETS,
    SETTINGS,
    convert_d3,
    default_expressions,
    expression_set,
)
from .grefcoco import GrefcocoReport, build_from_grefs, build_grefcoco
from .imagegroup import group_from_files
from .refer import NEGATIVE_MODES, BuildOptions, BuildReport, build_dataset, build_from_refer
from .res import ResReport, build_res, build_res_from_refer

__all__ = ["DATASETS", "EXPRESSION_ALIASES", "EXPRESSION_SETS", "NEGATIVE_MODES", "SETTINGS",
           "AnnotationMasks", "BuildOptions", "BuildReport", "CosodReport", "DatasetSpec",
           "GrefcocoReport", "ResReport", "SplitAssembler", "build_cosod", "build_dataset",
           "build_from_grefs", "build_from_refer", "build_grefcoco", "build_res",
           "build_res_from_refer", "convert_d3",
           "dataset_spec", "default_expressions", "expression_set", "group_from_files",
           "refer_datasets"]

"""The dataset registry: one typed record per dataset grdkit builds (TFDS-style config table).

Everything that names a dataset reads it from here: the CLI's choices and defaults, the data
cards' names and sources, the builders' split order, and the paper counts printed beside ours.
It is shared vocabulary (like :mod:`grdkit.errors`): it imports nothing but errors, so builders
and exporters can both read it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset grdkit builds.

    Attributes:
        name: registry key and ``info.name`` (``g-refcocog``).
        pretty_name: the name papers use (``G-RefCg``).
        source: the released dataset it is built from (``RefCOCOg``).
        split_bys: refer partitions it exists in, the default first (empty: not refer-based).
        splits: split names in the order they are written and reported.
        paper: the counts its paper publishes (``groups``, ``images``, ``expressions``,
            ``pairs``, ``no_target_expressions``, ``multi_target_expressions``), printed next to
            ours; empty when none is published. Whole-dataset figures: a paper may count splits
            that were never released (RefCOCOg's 104,560 expressions include Google's unreleased
            test split).
        paper_splits: ``{split_by: {split: expressions}}``, per-split counts a paper publishes
            for a partition (LTS §4.1 for RefCOCO / RefCOCO+ ``unc``), printed beside the build's.
        citation: where ``paper`` and ``paper_splits`` come from.
        builder: ``regroup`` (the G-RefC recipe, :mod:`.refer`), ``grefcoco`` (one group per
            image, :mod:`.grefcoco`), ``res`` (the classic RES benchmarks, one sample per
            sentence, :mod:`.res`), ``d3`` or ``files`` (converted, not built from refer data).
        partition_splits: ``{split_by: splits}`` where a partition has other splits than
            ``splits`` (RefCOCOg ``google``: train / val).
        cites: keys of :data:`BIBTEX`, the dataset's paper and every source it is built from,
            in the order its card's "Citation" section lists them.
        license: the HuggingFace ``license`` id of the card (``other`` when the terms are not a
            standard licence; then ``license_name`` / ``license_link`` name and link them).
        tags: the card's Hub tags (task, setting, source dataset).
        source_datasets: the card's ``source_datasets`` (HF convention: ``extended|<name>``).
    """

    name: str
    pretty_name: str
    source: str
    split_bys: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val", "test")
    paper: dict[str, int] = field(default_factory=dict)
    citation: str = ""
    builder: str = "regroup"
    paper_splits: dict[str, dict[str, int]] = field(default_factory=dict)
    partition_splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    cites: tuple[str, ...] = ("wu2023gres",)
    license: str = "other"
    license_name: str = ""
    license_link: str = ""
    tags: tuple[str, ...] = ("referring-expression-segmentation", "gres")
    source_datasets: tuple[str, ...] = ()

    def splits_of(self, split_by: str | None) -> tuple[str, ...]:
        """The splits of partition ``split_by`` (``splits`` unless the partition differs)."""
        return self.partition_splits.get(split_by or "", self.splits)

    @property
    def default_split_by(self) -> str | None:
        return self.split_bys[0] if self.split_bys else None

    def check_split_by(self, split_by: str | None) -> str:
        """The partition to read: ``split_by`` or the default.

        Raises:
            InputError: ``split_by`` is not a partition of this dataset.
        """
        if split_by is None:
            if not self.split_bys:
                raise InputError(None, f"{self.name} is not built from a refer partition")
            return self.split_bys[0]
        if split_by not in self.split_bys:
            raise InputError(None, f"{self.source} has no splitBy {split_by!r}",
                             self.name, f"choose one of {', '.join(self.split_bys)}")
        return split_by


_GRES = "Wu et al., Advancing Referring Expression Segmentation Beyond Single Image, ICCV 2023"
_LTS = "Jing et al., Locate then Segment, CVPR 2021, §4.1"
_MABP = "Bring Adaptive Binding Prototypes to Generalized RES (MABP), IEEE TMM, §IV-A"

# The BibTeX of every dataset and source a card cites: the one source of the cards' citations.
BIBTEX: dict[str, str] = {
    "wu2023gres": """@inproceedings{wu2023gres,
  title     = {Advancing Referring Expression Segmentation Beyond Single Image},
  author    = {Wu, Yixuan and Zhang, Zhao and Xie, Chi and Zhu, Feng and Zhao, Rui},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
    "lin2014coco": """@inproceedings{lin2014coco,
  title     = {Microsoft {COCO}: Common Objects in Context},
  author    = {Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and
               Perona, Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2014}
}""",
    "yu2016refcoco": """@inproceedings{yu2016refcoco,
  title     = {Modeling Context in Referring Expressions},
  author    = {Yu, Licheng and Poirson, Patrick and Yang, Shan and Berg, Alexander C. and
               Berg, Tamara L.},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2016}
}""",
    "kazemzadeh2014referitgame": """@inproceedings{kazemzadeh2014referitgame,
  title     = {{ReferItGame}: Referring to Objects in Photographs of Natural Scenes},
  author    = {Kazemzadeh, Sahar and Ordonez, Vicente and Matten, Mark and Berg, Tamara},
  booktitle = {Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year      = {2014}
}""",
    "mao2016refcocog": """@inproceedings{mao2016refcocog,
  title     = {Generation and Comprehension of Unambiguous Object Descriptions},
  author    = {Mao, Junhua and Huang, Jonathan and Toshev, Alexander and Camburu, Oana and
               Yuille, Alan L. and Murphy, Kevin},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2016}
}""",
    "nagaraja2016umd": """@inproceedings{nagaraja2016umd,
  title     = {Modeling Context Between Objects for Referring Expression Understanding},
  author    = {Nagaraja, Varun K. and Morariu, Vlad I. and Davis, Larry S.},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2016}
}""",
    "liu2023gres": """@inproceedings{liu2023gres,
  title     = {{GRES}: Generalized Referring Expression Segmentation},
  author    = {Liu, Chang and Ding, Henghui and Jiang, Xudong},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}""",
    "xie2023d3": """@inproceedings{xie2023d3,
  title     = {Described Object Detection: Liberating Object Detection with Flexible Expressions},
  author    = {Xie, Chi and Zhang, Zhao and Wu, Yixuan and Zhu, Feng and Zhao, Rui and
               Liang, Shuang},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023}
}""",
    "zhang2020gicd": """@inproceedings{zhang2020gicd,
  title     = {Gradient-Induced Co-Saliency Detection},
  author    = {Zhang, Zhao and Jin, Wenda and Xu, Jun and Cheng, Ming-Ming},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2020}
}""",
    "zhang2016cosal2015": """@article{zhang2016cosal2015,
  title     = {Detection of Co-salient Objects by Looking Deep and Wide},
  author    = {Zhang, Dingwen and Han, Junwei and Li, Chao and Wang, Jingdong and Li, Xuelong},
  journal   = {International Journal of Computer Vision (IJCV)},
  volume    = {120},
  number    = {2},
  pages     = {215--232},
  year      = {2016}
}""",
    "fan2020cosod3k": """@inproceedings{fan2020cosod3k,
  title     = {Taking a Deeper Look at Co-Salient Object Detection},
  author    = {Fan, Deng-Ping and Lin, Zheng and Ji, Ge-Peng and Zhang, Dingwen and Fu, Huazhu and
               Cheng, Ming-Ming},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}""",
}

_COCO_TERMS = {"license_name": "coco-and-refer-terms",
               "license_link": "https://cocodataset.org/#termsofuse"}
_REFC = ("yu2016refcoco", "kazemzadeh2014referitgame", "lin2014coco")
_REFCG = ("mao2016refcocog", "nagaraja2016umd", "lin2014coco")
_RES_TAGS = ("referring-expression-segmentation", "res")


def _gres(source: str, cites: tuple[str, ...]) -> dict:
    """Card fields of a G-RefC* dataset regrouped from ``source`` (RefCOCO, ...)."""
    return {"cites": ("wu2023gres", *cites), **_COCO_TERMS,
            "tags": ("referring-expression-segmentation", "gres", source.lower()),
            "source_datasets": (f"extended|{source.lower()}", "extended|coco")}


def _res(source: str, cites: tuple[str, ...]) -> dict:
    """Card fields of a classic RES benchmark (one sample per sentence)."""
    return {"cites": cites, **_COCO_TERMS, "tags": (*_RES_TAGS, source.lower()),
            "source_datasets": (f"extended|{source.lower()}", "extended|coco")}


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("g-refcoco", "G-RefC", "RefCOCO", ("unc", "google"),
                ("train", "val", "test", "testA", "testB"), {"groups": 8717}, f"{_GRES}, §5.1",
                **_gres("RefCOCO", _REFC)),
    DatasetSpec("g-refcoco+", "G-RefC+", "RefCOCO+", ("unc",),
                ("train", "val", "testA", "testB"), {"groups": 8020}, f"{_GRES}, §5.1",
                **_gres("RefCOCO+", _REFC)),
    DatasetSpec("g-refcocog", "G-RefCg", "RefCOCOg", ("umd", "google"),
                ("train", "val", "test"), {"groups": 2451}, f"{_GRES}, §5.1",
                **_gres("RefCOCOg", _REFCG)),
    DatasetSpec("grd", "GRD", "D³", (), ("test",),
                # §4.3; §1 also gives 16,480 positive object-expression pairs and 41,231
                # negative image-expression pairs (more than §4.3's 31,524 pairs in all)
                {"groups": 106, "images": 10578, "expressions": 316, "pairs": 31524,
                 "positive_objects": 16480, "negative_pairs": 41231},
                f"{_GRES}, §4.3 and §1", "d3", cites=("wu2023gres", "xie2023d3"),
                license="cc-by-nc-4.0", tags=("referring-expression-segmentation", "gres", "d3"),
                source_datasets=("extended|d3",)),
    DatasetSpec("grefcoco", "gRefCOCO", "gRefCOCO", ("unc",), ("train", "val", "testA", "testB"),
                {"expressions": 278232, "multi_target_expressions": 80022,
                 "no_target_expressions": 32202, "images": 19994},
                f"Liu et al., GRES: Generalized Referring Expression Segmentation, CVPR 2023; "
                f"counts: {_MABP}", "grefcoco", cites=("liu2023gres", *_REFC),
                license_name="grefcoco-and-coco-terms",
                license_link="https://github.com/henghuiding/gRefCOCO",
                tags=("referring-expression-segmentation", "generalized-res", "grefcoco"),
                source_datasets=("extended|grefcoco", "extended|coco")),
    # the classic single-image RES benchmarks: one sample per (ref, sentence)
    DatasetSpec("refcoco", "RefCOCO", "RefCOCO", ("unc",), ("train", "val", "testA", "testB"),
                {"images": 19994, "expressions": 142210}, _LTS, "res",
                {"unc": {"train": 120624, "val": 10834, "testA": 5657, "testB": 5095}},
                **_res("RefCOCO", _REFC)),
    DatasetSpec("refcoco+", "RefCOCO+", "RefCOCO+", ("unc",), ("train", "val", "testA", "testB"),
                {"images": 19992, "expressions": 141564}, _LTS, "res",
                {"unc": {"train": 120191, "val": 10758, "testA": 5726, "testB": 4889}},
                **_res("RefCOCO+", _REFC)),
    DatasetSpec("refcocog", "RefCOCOg", "RefCOCOg", ("umd", "google"), ("train", "val", "test"),
                {"images": 26711, "expressions": 104560}, _LTS, "res",
                partition_splits={"google": ("train", "val")}, **_res("RefCOCOg", _REFCG)),
    DatasetSpec("cosod", "Co-SOD groups", "Co-SOD group folders", (), ("test",), {},
                "CoCA / CoSal2015 / CoSOD3k folder layout", "files",
                cites=("wu2023gres", "zhang2020gicd", "zhang2016cosal2015", "fan2020cosod3k"),
                license_name="co-sod-dataset-terms", license_link="http://zhaozhang.net/coca.html",
                tags=("referring-expression-segmentation", "gres", "co-salient-object-detection"),
                source_datasets=("extended|other",)),
)}

# every refer partition any dataset has (the refer toolkit's names)
SPLIT_BYS = ("unc", "umd", "google")


def dataset_spec(name: str) -> DatasetSpec:
    """The registry record of ``name``; ``ValueError`` naming the choices if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None


def refer_datasets() -> list[str]:
    """Names of the datasets built from refer-format data (``grdkit build`` choices)."""
    return sorted(n for n, s in DATASETS.items() if s.builder in ("regroup", "grefcoco", "res"))


def split_order(names, spec: DatasetSpec | None = None) -> list[str]:
    """``names`` in the dataset's split order (all known refer split names when ``spec`` is
    None), unknown names last, sorted."""
    known_order = spec.splits if spec else ("train", "val", "test", "testA", "testB", "testC")
    names = set(names)
    known = [s for s in known_order if s in names]
    return known + sorted(names - set(known))

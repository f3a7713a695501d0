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

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("g-refcoco", "G-RefC", "RefCOCO", ("unc", "google"),
                ("train", "val", "test", "testA", "testB"), {"groups": 8717}, f"{_GRES}, §5.1"),
    DatasetSpec("g-refcoco+", "G-RefC+", "RefCOCO+", ("unc",),
                ("train", "val", "testA", "testB"), {"groups": 8020}, f"{_GRES}, §5.1"),
    DatasetSpec("g-refcocog", "G-RefCg", "RefCOCOg", ("umd", "google"),
                ("train", "val", "test"), {"groups": 2451}, f"{_GRES}, §5.1"),
    DatasetSpec("grd", "GRD", "D³", (), ("test",),
                # §4.3; §1 also gives 16,480 positive object-expression pairs and 41,231
                # negative image-expression pairs (more than §4.3's 31,524 pairs in all)
                {"groups": 106, "images": 10578, "expressions": 316, "pairs": 31524,
                 "positive_objects": 16480, "negative_pairs": 41231},
                f"{_GRES}, §4.3 and §1", "d3"),
    DatasetSpec("grefcoco", "gRefCOCO", "gRefCOCO", ("unc",), ("train", "val", "testA", "testB"),
                {"expressions": 278232, "multi_target_expressions": 80022,
                 "no_target_expressions": 32202, "images": 19994},
                f"Liu et al., GRES: Generalized Referring Expression Segmentation, CVPR 2023; "
                f"counts: {_MABP}", "grefcoco"),
    # the classic single-image RES benchmarks: one sample per (ref, sentence)
    DatasetSpec("refcoco", "RefCOCO", "RefCOCO", ("unc",), ("train", "val", "testA", "testB"),
                {"images": 19994, "expressions": 142210}, _LTS, "res",
                {"unc": {"train": 120624, "val": 10834, "testA": 5657, "testB": 5095}}),
    DatasetSpec("refcoco+", "RefCOCO+", "RefCOCO+", ("unc",), ("train", "val", "testA", "testB"),
                {"images": 19992, "expressions": 141564}, _LTS, "res",
                {"unc": {"train": 120191, "val": 10758, "testA": 5726, "testB": 4889}}),
    DatasetSpec("refcocog", "RefCOCOg", "RefCOCOg", ("umd", "google"), ("train", "val", "test"),
                {"images": 26711, "expressions": 104560}, _LTS, "res",
                partition_splits={"google": ("train", "val")}),
    DatasetSpec("cosod", "Co-SOD groups", "Co-SOD group folders", (), ("test",), {},
                "CoCA / CoSal2015 / CoSOD3k folder layout", "files"),
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

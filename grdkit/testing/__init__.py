"""Generators of refer-format and D³ data for tests, the demo and benchmarks (all synthetic).

:mod:`.synth` draws refer data (``refs(*).p`` + ``instances.json``) and D³ pickles from a seed;
gRefCOCO JSON (:func:`grefs_from_refer`), image files and Co-SOD folders
(:func:`write_images`, :func:`write_cosod_folders`) complete the released layouts;
:func:`demo_root` is the bundled demo sample it generated (``grdkit build`` without
``--refer-root`` builds it).
"""

from .synth import (
    d3_json,
    demo_root,
    generate_d3,
    generate_refer,
    grefs_from_refer,
    released_layout,
    write_cosod_folders,
    write_d3,
    write_d3_json,
    write_demo,
    write_demo_files,
    write_grefcoco,
    write_images,
    write_refer,
)

__all__ = [
    "d3_json",
    "demo_root",
    "generate_d3",
    "generate_refer",
    "grefs_from_refer",
    "released_layout",
    "write_cosod_folders",
    "write_d3",
    "write_d3_json",
    "write_demo",
    "write_demo_files",
    "write_grefcoco",
    "write_images",
    "write_refer",
]

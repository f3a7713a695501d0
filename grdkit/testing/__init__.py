"""Generators of refer-format and D³ data for tests, the demo and benchmarks (all synthetic).

:mod:`.synth` draws refer data (``refs(*).p`` + ``instances.json``) and D³ pickles from a seed;
:func:`demo_root` is the bundled demo sample it generated (``grdkit build`` without
``--refer-root`` builds it).
"""

from .synth import demo_root, generate_d3, generate_refer, write_d3, write_demo, write_refer

__all__ = ["demo_root", "generate_d3", "generate_refer", "write_d3", "write_demo", "write_refer"]

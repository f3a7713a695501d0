"""Plots through matplotlib, the optional ``plots`` extra (``pip install 'grdkit[plots]'``).

grdkit's tables and CSVs never need it; the pictures (``grdkit eval --curves`` PNGs,
``grdkit reproduce``'s paper-against-ours plot) do. :func:`pyplot` gives ``matplotlib.pyplot``
on the non-interactive Agg backend, or None when the extra is not installed (callers then say
so and write what they can without it); :func:`png_bytes` renders a figure to PNG bytes without
the metadata that would vary between runs (so the same data gives byte-identical files).
"""

from __future__ import annotations

MISSING = "matplotlib is not installed (pip install 'grdkit[plots]')"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or None without the ``plots`` extra."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no ``Software`` / date metadata: deterministic), then closed."""
    import io

    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()

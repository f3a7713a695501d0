"""``grdkit demo``: the bundled demo sample written out as files, with synthetic photos
(:func:`grdkit.testing.write_demo_files`), so the quickstart runs from a fresh clone."""

from __future__ import annotations

from pathlib import Path

import click

from ..io import ensure_writable
from ..testing import write_demo_files
from .ui import out


@click.command("demo")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write refer/, images/ and photos/ into (created if missing).")
def demo_cmd(out_dir: Path) -> None:
    """Write grdkit's bundled demo sample as files: refer-format annotations, their images and
    Co-SOD-style photo folders (all synthetic, generated; nothing is downloaded).

    \b
    <out>/refer/     refs(umd|unc|google).p + instances.json (60 images)
    <out>/images/    the 60 images (JPEG), each object filled in its category's colour
    <out>/photos/    image/<group>/*.jpg + binary/<group>/*.png: 5 groups of 5 photos

    \b
    Example (the quickstart):
        grdkit demo --out demo
        grdkit build g-refcocog --refer-root demo/refer --out demo/g-refcocog
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_writable(out_dir)
    paths = write_demo_files(out_dir)
    n_img = len(list(paths["images"].glob("*.jpg")))
    n_photo = len(list((paths["photos"] / "image").glob("*/*.jpg")))
    out.print(f"Wrote {paths['refer']} (refer format), {paths['images']} ({n_img} images), "
              f"{paths['photos']} ({n_photo} photos in group folders)")

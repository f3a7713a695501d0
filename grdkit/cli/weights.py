"""``grdkit weights convert``: pretrained weights from their owners' formats to the state dicts
the baselines load (nothing is downloaded; the files are the user's)."""

from __future__ import annotations

from pathlib import Path

import click

from ..io import check_outputs


@click.group("weights")
def weights_group():
    """Convert pretrained weights into the state dicts grdkit's baselines load.

    \b
    grdkit weights convert darknet53 yolov3.weights darknet53-coco.pt
    grdkit train lts --preset lts-paper --vision-weights darknet53-coco.pt \\
        --text glove.840B.300d.txt --data train.json --img-root images --out runs/lts
    """


@weights_group.command("convert")
@click.argument("backbone", type=click.Choice(["darknet53"]))
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
def convert_cmd(backbone, src, dst):
    """Convert SRC (Darknet's binary: yolov3.weights or darknet53.conv.74) to DST, a plain
    state dict of timm's BACKBONE (torch.save, read back with weights_only=True).

    Darknet53 is LTS's backbone (§4.1; MCN's and YOLOv3's, COCO-pretrained). The lts-paper
    preset runs it as Darknet does: vision_norm=unit (0-1 RGB input) and leaky_slope 0.1.
    """
    from ..baselines import require_torch

    require_torch()
    from ..baselines.darknet import convert

    check_outputs([src], {"DST": dst})
    info = convert(backbone, src, dst)
    click.echo(f"{backbone}: Darknet {info['version']} (seen {info['seen']}), "
              f"{info['tensors']} tensors, {info['parameters']:,} values from "
              f"{info['bytes_read']:,} of {info['bytes_total']:,} bytes -> {dst}")
    return 0

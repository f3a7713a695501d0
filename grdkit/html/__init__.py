"""The evaluation report as a static web page: ``grdkit eval --html DIR`` and ``grdkit report``.

A folder that works from ``file://`` with no network: plain HTML pages, one hand-written CSS and
one hand-written JS file shipped inside grdkit (``grdkit/html/assets``, no build step, no CDN),
the pair rows as a ``<script>`` (``pairs.js``; browsers refuse ``fetch`` on ``file://``), and
JPEG thumbnails. Pages (:func:`write_html_report`):

* ``index.html``: every metric of the profile with its paper label, bootstrap intervals, counts,
  the profile and its version, the CI gate's outcome, per split, the breakdowns as bar charts;
* ``pairs.html``: the per-pair table (:mod:`grdkit.evaluators.pairs`), sortable by any column,
  filterable by split, outcome, IoU range and expression text, 100 rows a page;
* ``gallery-worst.html`` (the lowest-IoU positives the model segmented: TP by IoU),
  ``gallery-false-alarms.html`` (FP on negatives, largest predicted area first),
  ``gallery-missed.html`` (FN, largest ground truth first): tiles of the image with the ground
  truth outlined in green, the prediction filled in red, its IoU and outcome; a prediction
  covering at least 95% of the image is tinted orange and framed;
* ``groups.html`` and ``groups/<k>.html``: one page per group, each expression over every image
  of the group side by side (the GRES view of the task).

Bounds: at most ``max_thumbs`` thumbnails are drawn (galleries first, then whole groups, worst
groups first), each ``thumb_width`` pixels wide; every other pair is a text tile and a row of the
pairs table. Galleries list at most ``gallery`` tiles each and link to the table for the rest.
Everything else grows linearly with the number of pairs. All files are written through one
:class:`grdkit.io.Commit` (all or none); same inputs give byte-identical files.
"""

from .build import ASSETS, write_html_report

__all__ = ["ASSETS", "write_html_report"]

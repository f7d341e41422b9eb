"""One self-contained HTML report of a run directory (``interestflow report RUN_DIR``).

The report reads the tables that ``interestflow run`` / ``interestflow demo`` write into a
run directory and draws them as inline SVG generated here, with one small inline script
(snapshot slider, legend highlighting). Nothing is loaded from anywhere else: no CDN, no web
fonts, no images; a Content-Security-Policy in the page forbids every external load and
every script except the page's own (by hash), so a review text that slipped through
unescaped still could not run. Every text from the data is HTML-escaped.

Run-directory schema (columns that the report reads)::

    summary.json                  optional; its scalar entries are listed
    users.parquet                 user_id, segment (int; -1 = noise) [, vector | segment_<j>]
    segments.parquet              segment (int), size (int), keywords (list<str> or str)
                                  [, representative_texts (list<str>)]
    tracking/snapshots.parquet    snapshot, window_start, window_end, segment_id, size,
                                  keywords, representative_texts
    tracking/assignments.parquet  snapshot, user_id, segment_id (-1 = noise)
    tracking/lifecycle.parquet    snapshot, event, segments_from, segments_to, value, detail
                                  [, p_value, stability]
    tracking/transitions.parquet  snapshot (the later one), from_segment, to_segment, n_users
    tracking/map.parquet          snapshot, user_id, x, y
    tracking/lifecycle_candidates.parquet   optional: snapshot, event, reported, reason
    tracking/trends.parquet       optional: snapshot, segment_id, kind, key, share,
                                  previous_share, n_users, p_value

Without a ``tracking/`` folder the report shows the static segments (map by a principal-
component projection of the user vectors, sizes, keywords) and says that tracking was not
run; with one, all five tracking tables are required and every section is drawn from them,
so ``users.parquet`` and ``segments.parquet`` may be absent (the folder that
``SegmentTracker.to_run_dir`` writes holds only ``tracking/``).

The package: ``_tables`` reads and checks those tables, ``_svg`` draws the plots,
``_sections`` builds one HTML section per part of the report from them, ``_html`` holds the
page's CSS and script, the legend and tables, and assembles the page; ``_common`` holds what
they share (event kinds, the noise id, colours, escaping).
"""

from __future__ import annotations

import os
from pathlib import Path

from .._utils import check_int
from ..io import atomic_open
from ._common import LIFECYCLE_EVENTS
from ._html import page
from ._sections import static_sections, tracked_sections
from ._tables import load_run

__all__ = ["LIFECYCLE_EVENTS", "render_report", "write_report"]


def render_report(run_dir, *, title: str | None = None, max_map_points: int = 2000) -> str:
    """The report of ``run_dir`` as one HTML string (see :func:`write_report`)."""
    max_map_points = check_int("max_map_points", max_map_points)
    if max_map_points < 1:
        raise ValueError(f"max_map_points={max_map_points} must be >= 1")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    run = load_run(run_dir)
    title = title if title is not None else f"interestflow report · {run.run_dir.name}"
    if run.tracking is not None:
        sections, status = tracked_sections(run.tracking, max_map_points)
    else:
        sections, status = static_sections(run, max_map_points)
    return page(title, run.run_dir.name, status, run.summary, sections)


def write_report(run_dir, out_path=None, *, title: str | None = None,
                 max_map_points: int = 2000) -> Path:
    """Write a self-contained HTML report of a run directory.

    The page shows a 2-D map of users coloured by segment (one map per snapshot with a
    slider when ``RUN_DIR/tracking/`` exists), segment sizes (over time), transitions
    between snapshots as an alluvial (Sankey) diagram, lifecycle events (appear, vanish,
    split, merge, drift) on a timeline, and keywords and representative texts per segment.
    One colour per segment id in every plot. The file needs no network: all plots are inline
    SVG, the only script is inline, and a Content-Security-Policy blocks any other load.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run directory (see the module docstring for the tables read). Without
        ``tracking/`` the report shows the static segments and says tracking was not run;
        with it, ``tracking/`` alone is enough (the folder ``SegmentTracker.to_run_dir``
        writes).
    out_path : str or os.PathLike, optional
        Destination file; default ``run_dir / "report.html"``. Written atomically.
    title : str, optional
        Page title; default ``"interestflow report · <run_dir name>"``.
    max_map_points : int, default 2000
        At most this many users are drawn per snapshot on the map; above it a deterministic
        sample (by a hash of ``user_id``, the same users in every snapshot) is drawn and the
        report says so.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    FileNotFoundError
        ``run_dir``, or a table the report needs, does not exist (the message names it).
    ValueError, TypeError
        A table lacks a column or holds a value of the wrong type (the message names the
        file, column and row).

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> pd.DataFrame({"user_id": ["u1", "u2", "u3"], "segment": [0, 0, 1],
    ...               "segment_0": [.9, .8, .1], "segment_1": [.1, .2, .9]}
    ...              ).to_parquet(d / "users.parquet")
    >>> pd.DataFrame({"segment": [0, 1], "size": [2, 1], "keywords": [["tea"], ["茶"]]}
    ...              ).to_parquet(d / "segments.parquet")
    >>> write_report(d).name
    'report.html'
    """
    text = render_report(run_dir, title=title, max_map_points=max_map_points)
    out = Path(os.fspath(out_path)) if out_path is not None else \
        Path(os.fspath(run_dir)) / "report.html"
    # mkstemp makes the file owner-only; a report is for sharing
    with atomic_open(out, "w", file_mode=0o644) as f:
        f.write(text)
    return out

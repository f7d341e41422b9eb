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
"""

from __future__ import annotations

import base64
import colorsys
import hashlib
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["LIFECYCLE_EVENTS", "render_report", "write_report"]

LIFECYCLE_EVENTS = ("appear", "vanish", "split", "merge", "drift")
NOISE = -1
_NOISE_COLOR = "#a3a3a3"
# Tableau-10 without its grey (grey means noise here), then ten darker/distinct hues; segments
# beyond these get golden-angle hues. Colours are assigned by rank of the segment id among all
# ids of the run, so one id has one colour in every plot of a report.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#b5179e", "#006d77",
)
_TEXT_CLIP = 400  # characters of one representative text shown


#: The transitions diagram draws at most this many (the latest) snapshots.
_SANKEY_SNAPSHOTS = 12


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------
# reading and checking the run directory
# --------------------------------------------------------------------------------------------

@dataclass
class _Tracking:
    snapshots: pd.DataFrame
    assignments: pd.DataFrame
    lifecycle: pd.DataFrame
    transitions: pd.DataFrame
    map: pd.DataFrame
    candidates: pd.DataFrame | None  # every candidate event (optional file)
    trends: pd.DataFrame | None  # rising items / keywords (optional file)
    order: list  # snapshot numbers, ascending
    labels: dict  # snapshot -> "t3 · 2024-03-01 – 2024-03-08"


@dataclass
class _Run:
    run_dir: Path
    summary: dict | None
    users: pd.DataFrame | None  # None: a tracking-only run directory
    segments: pd.DataFrame | None
    tracking: _Tracking | None


def _read_table(run_dir: Path, rel: str, columns) -> pd.DataFrame:
    path = run_dir / rel
    if not path.is_file():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {rel} ({str(path)!r} "
                                "does not exist)")
    try:
        df = pd.read_parquet(path)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # pyarrow's errors differ by cause; name the file
        raise ValueError(f"could not read {rel} as parquet: {type(exc).__name__}: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{rel} lacks column(s) {missing}; columns present: "
                         f"{list(df.columns)}")
    return df.reset_index(drop=True)


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_int(df: pd.DataFrame, col: str, rel: str) -> None:
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_integer_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold integers, got dtype {s.dtype}")
    if s.isna().any():
        raise ValueError(f"{rel} column {col!r} is missing a value in row "
                         f"{_first_bad_row(s.isna().to_numpy())}")


def _check_float(df: pd.DataFrame, col: str, rel: str, *, allow_nan: bool = False) -> None:
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold numbers, got dtype {s.dtype}")
    v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isinf(v) if allow_nan else ~np.isfinite(v)
    if bad.any():
        i = _first_bad_row(bad)
        raise ValueError(f"{rel} column {col!r} must be finite, row {i} holds {v[i]}")


def _check_time(df: pd.DataFrame, col: str, rel: str) -> None:
    s = df[col]
    if not pd.api.types.is_datetime64_any_dtype(s):
        raise TypeError(f"{rel} column {col!r} must hold timestamps, got dtype {s.dtype}")
    if s.isna().any():
        raise ValueError(f"{rel} column {col!r} is missing a value in row "
                         f"{_first_bad_row(s.isna().to_numpy())}")


def _str_list(value, rel: str, col: str, row: int) -> list[str]:
    """A list<str> cell as a Python list; a plain string is one entry (``"a, b"`` stays)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    raise TypeError(f"{rel} column {col!r} row {row}: expected a list of strings, got "
                    f"{type(value).__name__}")


def _int_list(value, rel: str, col: str, row: int) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        out = []
        for v in value:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{rel} column {col!r} row {row}: expected a list of integer "
                                f"segment ids, found {v!r}")
            out.append(int(v))
        return out
    raise TypeError(f"{rel} column {col!r} row {row}: expected a list of integer segment ids, "
                    f"got {type(value).__name__}")


def _fmt_times(times: pd.Series) -> list[str]:
    t = pd.to_datetime(times)
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC")
    midnight = bool(((t.dt.hour == 0) & (t.dt.minute == 0) & (t.dt.second == 0)).all())
    return list(t.dt.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M"))


def _load_tracking(run_dir: Path) -> _Tracking:
    snap_rel, asg_rel = "tracking/snapshots.parquet", "tracking/assignments.parquet"
    life_rel, tr_rel = "tracking/lifecycle.parquet", "tracking/transitions.parquet"
    map_rel = "tracking/map.parquet"
    snaps = _read_table(run_dir, snap_rel, ["snapshot", "window_start", "window_end",
                                            "segment_id", "size", "keywords",
                                            "representative_texts"])
    asg = _read_table(run_dir, asg_rel, ["snapshot", "user_id", "segment_id"])
    life = _read_table(run_dir, life_rel, ["snapshot", "event", "segments_from", "segments_to",
                                           "value", "detail"])
    trans = _read_table(run_dir, tr_rel, ["snapshot", "from_segment", "to_segment",
                                          "n_users"])
    mp = _read_table(run_dir, map_rel, ["snapshot", "user_id", "x", "y"])

    for col in ("snapshot", "segment_id", "size"):
        _check_int(snaps, col, snap_rel)
    _check_time(snaps, "window_start", snap_rel)
    _check_time(snaps, "window_end", snap_rel)
    if len(snaps) == 0:
        raise ValueError(f"{snap_rel} has no rows; a tracked run has at least one snapshot")
    if (snaps["segment_id"] < 0).any():
        i = _first_bad_row((snaps["segment_id"] < 0).to_numpy())
        raise ValueError(f"{snap_rel} row {i}: segment_id {snaps['segment_id'].iloc[i]} is "
                         "negative; noise (-1) belongs in assignments.parquet only")
    dup = snaps.duplicated(["snapshot", "segment_id"]).to_numpy()
    if dup.any():
        i = _first_bad_row(dup)
        raise ValueError(f"{snap_rel} row {i}: segment_id {snaps['segment_id'].iloc[i]} "
                         f"appears twice in snapshot {snaps['snapshot'].iloc[i]}")
    snaps = snaps.copy()
    snaps["keywords"] = [_str_list(v, snap_rel, "keywords", i)
                         for i, v in enumerate(snaps["keywords"])]
    snaps["representative_texts"] = [_str_list(v, snap_rel, "representative_texts", i)
                                     for i, v in enumerate(snaps["representative_texts"])]

    for col in ("snapshot", "segment_id"):
        _check_int(asg, col, asg_rel)
    asg = asg.assign(user_id=asg["user_id"].astype(str))
    dup = asg.duplicated(["snapshot", "user_id"]).to_numpy()
    if dup.any():
        i = _first_bad_row(dup)
        raise ValueError(f"{asg_rel} row {i}: user {asg['user_id'].iloc[i]!r} is assigned "
                         f"twice in snapshot {asg['snapshot'].iloc[i]}")

    _check_int(life, "snapshot", life_rel)
    _check_float(life, "value", life_rel, allow_nan=True)
    life = life.copy()
    bad = ~life["event"].isin(LIFECYCLE_EVENTS).to_numpy()
    if bad.any():
        i = _first_bad_row(bad)
        raise ValueError(f"{life_rel} row {i}: event {life['event'].iloc[i]!r} is not one of "
                         f"{list(LIFECYCLE_EVENTS)}")
    life["segments_from"] = [_int_list(v, life_rel, "segments_from", i)
                             for i, v in enumerate(life["segments_from"])]
    life["segments_to"] = [_int_list(v, life_rel, "segments_to", i)
                           for i, v in enumerate(life["segments_to"])]
    life["detail"] = life["detail"].fillna("").astype(str)

    for col in ("snapshot", "from_segment", "to_segment", "n_users"):
        _check_int(trans, col, tr_rel)
    if (trans["n_users"] < 0).any():
        i = _first_bad_row((trans["n_users"] < 0).to_numpy())
        raise ValueError(f"{tr_rel} row {i}: n_users must be >= 0, got "
                         f"{trans['n_users'].iloc[i]}")

    _check_int(mp, "snapshot", map_rel)
    _check_float(mp, "x", map_rel)
    _check_float(mp, "y", map_rel)
    mp = mp.assign(user_id=mp["user_id"].astype(str))

    order = sorted(int(s) for s in snaps["snapshot"].unique())
    for rel, df, first in ((asg_rel, asg, 0), (life_rel, life, 0), (tr_rel, trans, 1),
                           (map_rel, mp, 0)):
        s = df["snapshot"].to_numpy()
        bad = ~np.isin(s, order) | (s < first)
        if rel == tr_rel:  # a transition at t goes from t-1 to t: both must be snapshots
            bad |= ~np.isin(s - 1, order)
        if bad.any():
            i = _first_bad_row(bad)
            what = ("a snapshot >= 1 whose predecessor is a snapshot in " + snap_rel
                    if rel == tr_rel else "a snapshot listed in " + snap_rel)
            raise ValueError(f"{rel} row {i}: snapshot {s[i]} is not {what} "
                             f"({order[:10]}{' ...' if len(order) > 10 else ''})")

    first = snaps.drop_duplicates("snapshot").set_index("snapshot").loc[order]
    starts, ends = _fmt_times(first["window_start"]), _fmt_times(first["window_end"])
    labels = {t: f"t{t} · {a} – {b}" for t, a, b in zip(order, starts, ends)}
    cand = trends = None
    cand_rel, trend_rel = "tracking/lifecycle_candidates.parquet", "tracking/trends.parquet"
    if (run_dir / cand_rel).is_file():
        cand = _read_table(run_dir, cand_rel, ["snapshot", "event", "reported", "reason"])
    if (run_dir / trend_rel).is_file():
        trends = _read_table(run_dir, trend_rel, ["snapshot", "segment_id", "kind", "key",
                                                  "share", "previous_share", "n_users",
                                                  "p_value"])
        for col in ("snapshot", "segment_id", "n_users"):
            _check_int(trends, col, trend_rel)
        for col in ("share", "previous_share", "p_value"):
            _check_float(trends, col, trend_rel)
    for col in ("p_value", "stability"):
        if col in life.columns:
            _check_float(life, col, life_rel, allow_nan=True)
    return _Tracking(snaps, asg, life, trans, mp, cand, trends, order, labels)


def _load_run(run_dir) -> _Run:
    run_dir = Path(os.fspath(run_dir))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist or is not a "
                                "directory")
    summary = None
    spath = run_dir / "summary.json"
    if spath.is_file():
        try:
            summary = json.loads(spath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"summary.json in {str(run_dir)!r} is not valid JSON: {exc}") from exc
    tracking = _load_tracking(run_dir) if (run_dir / "tracking").exists() else None
    users = segments = None
    # a tracked run is drawn from tracking/ alone (SegmentTracker.to_run_dir writes only
    # that); the static tables are read, and so checked, when they are there
    if tracking is None or (run_dir / "users.parquet").exists():
        if tracking is None and not (run_dir / "users.parquet").exists():
            raise FileNotFoundError(
                f"run directory {str(run_dir)!r} has no users.parquet and no tracking/ folder; "
                "pass the folder written by `interestflow run` / `interestflow demo` or by "
                "SegmentTracker.to_run_dir")
        users = _read_table(run_dir, "users.parquet", ["user_id", "segment"])
        _check_int(users, "segment", "users.parquet")
    if tracking is None or (run_dir / "segments.parquet").exists():
        segments = _read_table(run_dir, "segments.parquet", ["segment", "size", "keywords"])
        _check_int(segments, "segment", "segments.parquet")
        _check_int(segments, "size", "segments.parquet")
        segments = segments.copy()
        segments["keywords"] = [_str_list(v, "segments.parquet", "keywords", i)
                                for i, v in enumerate(segments["keywords"])]
        if "representative_texts" in segments.columns:
            segments["representative_texts"] = [
                _str_list(v, "segments.parquet", "representative_texts", i)
                for i, v in enumerate(segments["representative_texts"])]
    return _Run(run_dir, summary if isinstance(summary, dict) else None, users, segments,
                tracking)


# --------------------------------------------------------------------------------------------
# colours, sampling, projection
# --------------------------------------------------------------------------------------------

def _segment_colors(ids) -> dict[int, str]:
    out = {NOISE: _NOISE_COLOR}
    for rank, sid in enumerate(sorted({int(i) for i in ids if int(i) != NOISE})):
        if rank < len(_PALETTE):
            out[sid] = _PALETTE[rank]
        else:
            r, g, b = colorsys.hls_to_rgb(((rank * 137.508) % 360) / 360, 0.45, 0.6)
            out[sid] = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return out


def _hash_keys(user_ids) -> np.ndarray:
    """A stable pseudo-random key per user id (independent of row order and of Python's
    per-process string hashing) so a subsample keeps the same users in every snapshot."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(u.encode("utf-8"), digest_size=8)
                                       .digest(), "little") for u in user_ids),
                       dtype=np.uint64, count=len(user_ids))


def _pca_2d(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0, keepdims=True)
    _, vecs = np.linalg.eigh(x.T @ x)
    comps = vecs[:, ::-1][:, :2]
    # eigenvector signs are arbitrary: make the largest loading positive so reruns agree
    signs = np.sign(comps[np.abs(comps).argmax(axis=0), [0, 1]])
    signs[signs == 0] = 1
    return x @ (comps * signs)


def _static_coordinates(users: pd.DataFrame):
    """(coords (n_users, 2), description) or (None, reason) for a run without tracking."""
    if "vector" in users.columns:
        vals = users["vector"].to_numpy()
        dims = {len(v) for v in vals}
        if len(dims) != 1:
            raise ValueError(f"users.parquet column 'vector' holds vectors of different "
                             f"lengths {sorted(dims)[:5]}; expected one dimension")
        x = np.stack([np.asarray(v, dtype=np.float64) for v in vals]) if len(vals) else \
            np.zeros((0, 2))
        what = "the user vectors (users.parquet column 'vector')"
    else:
        soft = [c for c in users.columns if c.startswith("segment_") and c[8:].isdigit()]
        if not soft:
            return None, ("users.parquet has neither a 'vector' column nor soft segment "
                          "columns 'segment_<j>', so there are no coordinates to draw")
        x = users[soft].to_numpy(dtype=np.float64)
        what = "the soft segment memberships (users.parquet columns 'segment_<j>')"
    if not np.isfinite(x).all():
        i = _first_bad_row(~np.isfinite(x).all(axis=1))
        raise ValueError(f"users.parquet row {i}: {what} hold a non-finite value")
    if len(x) < 2 or x.shape[1] < 2:
        return None, f"too few users or dimensions in {what} for a 2-D projection"
    return _pca_2d(x), f"principal-component projection (PCA, computed for this report) of {what}"


# --------------------------------------------------------------------------------------------
# SVG pieces
# --------------------------------------------------------------------------------------------

def _nice_step(span: float, n: int = 5) -> float:
    raw = max(span, 1e-12) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _fmt_num(v: float) -> str:
    return f"{int(round(v)):,}" if abs(v - round(v)) < 1e-9 else f"{v:,.3g}"


def _x_positions(n: int, left: float, right: float) -> list[float]:
    if n == 1:
        return [(left + right) / 2]
    return [left + (right - left) * i / (n - 1) for i in range(n)]


def _x_axis_labels(xs, names, y: float) -> list[str]:
    # 11 px labels such as "t10 · 2024-03-18" are about 110 px wide: thin them to fit
    width = max([len(n) for n in names] + [1]) * 6.6 + 10
    spacing = (xs[-1] - xs[0]) / (len(xs) - 1) if len(xs) > 1 else width
    step = max(1, math.ceil(width / max(spacing, 1e-9)))
    out = []
    for i, (x, name) in enumerate(zip(xs, names)):
        if i % step == 0 or (i == len(xs) - 1 and (i % step) * spacing >= width):
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" '
                       f'class="axis">{_esc(name)}</text>')
    return out


def _seg_name(sid: int) -> str:
    return "noise" if sid == NOISE else f"S{sid}"


def _svg_map(points_by_snap, labels, colors, describe) -> str:
    """Scatter of users; one <g class="snap"> per snapshot, the last one visible."""
    w, h, pad = 760, 520, 14
    allx = np.concatenate([p["x"] for _, p in points_by_snap]) if points_by_snap else []
    ally = np.concatenate([p["y"] for _, p in points_by_snap]) if points_by_snap else []
    if len(allx) == 0:
        return '<p class="note">No users to draw.</p>'
    x0, x1, y0, y1 = float(allx.min()), float(allx.max()), float(ally.min()), float(ally.max())
    span = max(x1 - x0, y1 - y0, 1e-9)
    scale = min((w - 2 * pad) / max(x1 - x0, span * 1e-3), (h - 2 * pad) / max(y1 - y0,
                                                                              span * 1e-3))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    parts = [f'<svg class="plot" id="map-svg" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="2-D map of users coloured by segment">',
             f'<rect x="0" y="0" width="{w}" height="{h}" class="frame"/>']
    last = len(points_by_snap) - 1
    for k, (snap, pts) in enumerate(points_by_snap):
        n = len(pts)
        r = 3.4 if n <= 600 else 2.6 if n <= 2000 else 1.9
        style = "" if k == last else ' style="display:none"'
        parts.append(f'<g class="snap" data-snapshot="{snap}" data-label="{_esc(labels[snap])}"'
                     f'{style}>')
        px = w / 2 + (pts["x"].to_numpy() - cx) * scale
        py = h / 2 - (pts["y"].to_numpy() - cy) * scale
        seg = pts["segment"].to_numpy()
        # noise underneath, then segments by id
        for sid in sorted(set(seg.tolist()), key=lambda s: (s != NOISE, s)):
            sel = np.flatnonzero(seg == sid)
            parts.append(f'<g class="sg s{sid}" fill="{colors.get(sid, _NOISE_COLOR)}">'
                         f'<title>{_esc(describe(snap, sid, len(sel)))}</title>')
            parts.append("".join(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="{r}"/>'
                                 for i in sel))
            parts.append("</g>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _svg_sizes_over_time(order, labels_short, sizes: pd.DataFrame, noise: dict,
                         colors) -> str:
    """Stacked area of segment sizes per snapshot (a stacked bar when there is one snapshot)."""
    w, h, ml, mr, mt, mb = 960, 360, 64, 24, 16, 44
    seg_ids = sorted(sizes.columns)
    layers = [(sid, sizes[sid].reindex(order, fill_value=0).to_numpy(dtype=float))
              for sid in seg_ids]
    nz = np.array([noise.get(t, 0) for t in order], dtype=float)
    if nz.any():
        layers.append((NOISE, nz))
    total = np.sum([v for _, v in layers], axis=0) if layers else np.zeros(len(order))
    step = _nice_step(float(total.max()) if len(total) else 1.0)
    ymax = max(step, math.ceil(float(total.max()) / step) * step) if len(total) else 1.0

    def yy(v):
        return mt + (h - mt - mb) * (1 - v / ymax)

    xs = _x_positions(len(order), ml + 20, w - mr - 20)
    parts = [f'<svg class="plot" id="sizes-svg" viewBox="0 0 {w} {h}" role="img" '
             'aria-label="segment sizes over time">']
    tick = 0.0
    while tick <= ymax + 1e-9:
        parts.append(f'<line x1="{ml}" x2="{w - mr}" y1="{yy(tick):.1f}" y2="{yy(tick):.1f}" '
                     f'class="grid"/><text x="{ml - 6}" y="{yy(tick) + 4:.1f}" '
                     f'text-anchor="end" class="axis">{_fmt_num(tick)}</text>')
        tick += step
    base = np.zeros(len(order))
    for sid, vals in layers:
        top = base + vals
        tip = f"{_seg_name(sid)} users per snapshot: " + ", ".join(
            f"t{t} {int(v):,}" for t, v in zip(order, vals))
        cls = f'class="sg s{sid}" fill="{colors.get(sid, _NOISE_COLOR)}"'
        if len(order) == 1:
            x = xs[0]
            parts.append(f'<rect {cls} x="{x - 40:.1f}" y="{yy(top[0]):.1f}" width="80" '
                         f'height="{yy(base[0]) - yy(top[0]):.1f}"><title>{_esc(tip)}'
                         '</title></rect>')
        else:
            pts = [f"{x:.1f},{yy(v):.1f}" for x, v in zip(xs, top)]
            pts += [f"{x:.1f},{yy(v):.1f}" for x, v in zip(xs[::-1], base[::-1])]
            parts.append(f'<polygon {cls} points="{" ".join(pts)}" fill-opacity="0.85" '
                         f'stroke="#fff" stroke-width="0.6"><title>{_esc(tip)}</title>'
                         '</polygon>')
        base = top
    parts += _x_axis_labels(xs, labels_short, h - mb + 18)
    parts.append(f'<text x="{ml - 48}" y="{mt + (h - mt - mb) / 2:.0f}" class="axis" '
                 f'transform="rotate(-90 {ml - 48} {mt + (h - mt - mb) / 2:.0f})" '
                 'text-anchor="middle">users</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_static_sizes(seg_sizes: list[tuple[int, int, str]], colors) -> str:
    """Horizontal bars: (segment, size, keyword text) sorted by size."""
    bar, gap, ml, mr, mt = 20, 6, 64, 300, 8
    w = 960
    h = mt * 2 + len(seg_sizes) * (bar + gap)
    vmax = max([s for _, s, _ in seg_sizes] + [1])
    parts = [f'<svg class="plot" id="sizes-svg" viewBox="0 0 {w} {h}" role="img" '
             'aria-label="segment sizes">']
    for k, (sid, size, kw) in enumerate(seg_sizes):
        y = mt + k * (bar + gap)
        bw = max(1.0, (w - ml - mr) * size / vmax)
        parts.append(f'<text x="{ml - 8}" y="{y + bar * 0.72:.1f}" text-anchor="end" '
                     f'class="axis">{_esc(_seg_name(sid))}</text>'
                     f'<rect class="sg s{sid}" x="{ml}" y="{y}" width="{bw:.1f}" height="{bar}" '
                     f'fill="{colors.get(sid, _NOISE_COLOR)}"><title>'
                     f'{_esc(f"{_seg_name(sid)}: {size:,} users · {kw}")}</title></rect>'
                     f'<text x="{ml + bw + 6:.1f}" y="{y + bar * 0.72:.1f}" class="axis">'
                     f'{size:,}  {_esc(kw[:60])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_sankey(order, labels_short, trans: pd.DataFrame, colors) -> str:
    """Alluvial diagram: one column of nodes per snapshot, bands = users moving t-1 -> t."""
    w, h, ml, mr, mt, mb, node_w, gap = 960, 460, 40, 56, 14, 40, 12, 8
    col = {t: i for i, t in enumerate(order)}
    # node values: max(inflow, outflow) per (snapshot, segment)
    inflow: dict = {}
    outflow: dict = {}
    links = []
    for row in trans.itertuples(index=False):
        if row.n_users <= 0:
            continue
        t1, t0 = int(row.snapshot), order[col[int(row.snapshot)] - 1]
        a, b, n = int(row.from_segment), int(row.to_segment), int(row.n_users)
        links.append((t0, a, t1, b, n))
        outflow[(t0, a)] = outflow.get((t0, a), 0) + n
        inflow[(t1, b)] = inflow.get((t1, b), 0) + n
    nodes: dict = {}
    for key in set(inflow) | set(outflow):
        nodes[key] = max(inflow.get(key, 0), outflow.get(key, 0))

    def sort_key(sid):
        return (sid == NOISE, sid)

    columns = {t: sorted((sid for (tt, sid) in nodes if tt == t), key=sort_key) for t in order}
    scale = math.inf
    for t, sids in columns.items():
        if sids:
            avail = h - mt - mb - gap * (len(sids) - 1)
            scale = min(scale, avail / sum(nodes[(t, s)] for s in sids))
    if not math.isfinite(scale):
        return ('<p class="note">No users moved between snapshots (tracking/transitions.parquet '
                'holds no positive n_users).</p>')
    xs = dict(zip(order, _x_positions(len(order), ml, w - mr - node_w)))
    ypos = {}
    for t, sids in columns.items():
        y = mt
        for s in sids:
            ypos[(t, s)] = y
            y += nodes[(t, s)] * scale + gap
    parts = [f'<svg class="plot" id="sankey-svg" viewBox="0 0 {w} {h}" role="img" '
             'aria-label="transitions between snapshots">']
    # links stacked at the source in target order and at the target in source order
    out_off = {k: 0.0 for k in nodes}
    in_off = {k: 0.0 for k in nodes}
    src_sorted = sorted(links, key=lambda l: (l[0], sort_key(l[1]), sort_key(l[3])))
    y_src = {}
    for lk in src_sorted:
        t0, a, _, _, n = lk
        y_src[lk] = ypos[(t0, a)] + out_off[(t0, a)]
        out_off[(t0, a)] += n * scale
    for lk in sorted(links, key=lambda l: (l[2], sort_key(l[3]), sort_key(l[1]))):
        t0, a, t1, b, n = lk
        th = n * scale
        ya, yb = y_src[lk], ypos[(t1, b)] + in_off[(t1, b)]
        in_off[(t1, b)] += th
        xa, xb = xs[t0] + node_w, xs[t1]
        xm = (xa + xb) / 2
        sid = a if a != NOISE else b
        tip = (f"{_seg_name(a)} (t{t0}) → {_seg_name(b)} (t{t1}): {n:,} users")
        parts.append(f'<path class="sg s{sid} link" fill="{colors.get(sid, _NOISE_COLOR)}" '
                     f'd="M{xa:.1f},{ya:.1f} C{xm:.1f},{ya:.1f} {xm:.1f},{yb:.1f} {xb:.1f},'
                     f'{yb:.1f} L{xb:.1f},{yb + th:.1f} C{xm:.1f},{yb + th:.1f} {xm:.1f},'
                     f'{ya + th:.1f} {xa:.1f},{ya + th:.1f} Z"><title>{_esc(tip)}</title></path>')
    for (t, s), v in sorted(nodes.items(), key=lambda kv: (kv[0][0], sort_key(kv[0][1]))):
        y, hh = ypos[(t, s)], max(v * scale, 1.0)
        tip = (f"{_seg_name(s)} at t{t}: {inflow.get((t, s), 0):,} users in from t-1, "
               f"{outflow.get((t, s), 0):,} out to t+1")
        parts.append(f'<rect class="sg s{s} node" x="{xs[t]:.1f}" y="{y:.1f}" width="{node_w}" '
                     f'height="{hh:.1f}" fill="{colors.get(s, _NOISE_COLOR)}"><title>{_esc(tip)}'
                     '</title></rect>')
        if hh >= 11:
            parts.append(f'<text x="{xs[t] + node_w + 3:.1f}" y="{y + hh / 2 + 4:.1f}" '
                         f'class="nodelabel">{_esc(_seg_name(s))}</text>')
    parts += _x_axis_labels([xs[t] + node_w / 2 for t in order], labels_short, h - mb + 22)
    parts.append("</svg>")
    return "".join(parts)


def _marker(kind: str, x: float, y: float, s: float, attrs: str, inner: str = "") -> str:
    """One lifecycle marker: triangle up/down, diamond, square or circle by ``kind``."""
    if kind == "merge":
        return (f'<rect x="{x - s * .8:.1f}" y="{y - s * .8:.1f}" width="{s * 1.6:.1f}" '
                f'height="{s * 1.6:.1f}" {attrs}>{inner}</rect>')
    if kind == "drift":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{s * .8:.1f}" {attrs}>{inner}</circle>'
    pts = {"appear": ((0, -1), (1, .8), (-1, .8)), "vanish": ((0, 1), (1, -.8), (-1, -.8)),
           "split": ((0, -1), (1, 0), (0, 1), (-1, 0))}[kind]
    d = "M" + " L".join(f"{x + a * s:.1f},{y + b * s:.1f}" for a, b in pts) + " Z"
    return f'<path d="{d}" {attrs}>{inner}</path>'


def _event_segment(kind: str, seg_from: list[int], seg_to: list[int]) -> int:
    prefer = seg_from + seg_to if kind in ("vanish", "split") else seg_to + seg_from
    return prefer[0] if prefer else NOISE


def _event_text(row, labels) -> str:
    src = ", ".join(_seg_name(s) for s in row.segments_from) or "–"
    dst = ", ".join(_seg_name(s) for s in row.segments_to) or "–"
    val = "" if pd.isna(row.value) else f" · value {row.value:.3f}"
    det = f" · {row.detail}" if row.detail else ""
    return f"{row.event} at {labels[int(row.snapshot)]}: {src} → {dst}{val}{det}"


def _svg_timeline(order, labels, labels_short, life: pd.DataFrame, colors) -> str:
    w, ml, mr, mt, lane, mb = 960, 80, 24, 12, 40, 40
    h = mt + lane * len(LIFECYCLE_EVENTS) + mb
    xs = dict(zip(order, _x_positions(len(order), ml + 24, w - mr - 24)))
    colw = (w - ml - mr - 48) / max(1, len(order) - 1) if len(order) > 1 else 200
    parts = [f'<svg class="plot" id="timeline-svg" viewBox="0 0 {w} {h}" role="img" '
             'aria-label="lifecycle events over time">']
    for k, kind in enumerate(LIFECYCLE_EVENTS):
        y = mt + lane * (k + 0.5)
        parts.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{ml - 8}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
                     f'{kind}</text>')
    for t in order:
        parts.append(f'<line x1="{xs[t]:.1f}" x2="{xs[t]:.1f}" y1="{mt}" '
                     f'y2="{mt + lane * len(LIFECYCLE_EVENTS)}" class="grid faint"/>')
    for (t, kind), grp in life.groupby(["snapshot", "event"], sort=True):
        k = LIFECYCLE_EVENTS.index(kind)
        y = mt + lane * (k + 0.5)
        n = len(grp)
        step = min(15.0, 0.8 * colw / max(n, 1))
        for j, row in enumerate(grp.itertuples(index=False)):
            x = xs[int(t)] + (j - (n - 1) / 2) * step
            sid = _event_segment(kind, row.segments_from, row.segments_to)
            parts.append(_marker(kind, x, y, 7.0,
                                 f'class="sg s{sid} ev ev-{kind}" '
                                 f'fill="{colors.get(sid, _NOISE_COLOR)}"',
                                 f"<title>{_esc(_event_text(row, labels))}</title>"))
    parts += _x_axis_labels(list(xs.values()), labels_short, h - mb + 22)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d232a;--muted:#5b6570;--line:#dde2e7;--bg:#fff;--panel:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",
"Noto Sans CJK SC","PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;
color:var(--fg);background:var(--bg)}
header{padding:18px 28px;border-bottom:1px solid var(--line);background:var(--panel)}
header h1{margin:0 0 4px;font-size:22px}
nav a{margin-right:14px;color:#0b62a4;text-decoration:none}
main{padding:8px 28px 40px;max-width:1100px}
section{margin:26px 0;padding-top:6px;border-top:1px solid var(--line)}
h2{font-size:18px;margin:10px 0 6px}
.note{color:var(--muted);margin:4px 0 10px}
.warn{background:#fff6db;border:1px solid #f0d27a;padding:8px 12px;border-radius:6px}
.plot{width:100%;height:auto;display:block;background:#fff}
#map-svg{max-width:820px}
.frame{fill:#fbfcfd;stroke:var(--line)}
.axis{font-size:11px;fill:var(--muted)}
.nodelabel{font-size:11px;fill:var(--fg)}
.grid{stroke:#e8ebee;stroke-width:1}
.faint{stroke-dasharray:2 3}
.link{fill-opacity:.38}
.link:hover{fill-opacity:.7}
.ev{stroke:#222;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin:8px 0}
.legend span.item{display:inline-flex;align-items:center;gap:5px;cursor:default;font-size:12px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;flex:none}
.controls{display:flex;align-items:center;gap:10px;margin:6px 0}
.controls input[type=range]{width:320px}
table{border-collapse:collapse;width:100%;margin:6px 0 14px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th,td.nw{white-space:nowrap}
td.wrap{overflow-wrap:anywhere}
table.segtable td:nth-child(3){min-width:180px}
th{background:var(--panel)}
td ul{margin:0;padding-left:18px}
td.num{text-align:right;white-space:nowrap}
details{margin:6px 0}
summary{cursor:pointer;font-weight:600}
.shapes svg{vertical-align:middle}
"""

# The page's only script: snapshot slider + play for the map, legend hover highlighting.
# Written defensively (elements may be absent when tracking was not run); text is set with
# textContent only.
_JS = """
(function () {
  "use strict";
  var snaps = document.querySelectorAll("#map-svg g.snap");
  var slider = document.getElementById("map-slider");
  var label = document.getElementById("map-label");
  var play = document.getElementById("map-play");
  function show(i) {
    for (var j = 0; j < snaps.length; j++) {
      snaps[j].style.display = (j === i) ? "" : "none";
    }
    if (label) { label.textContent = snaps[i].getAttribute("data-label"); }
    if (slider) { slider.value = String(i); }
  }
  if (slider && snaps.length > 0) {
    var timer = null;
    slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
    if (play) {
      play.addEventListener("click", function () {
        if (timer !== null) {
          clearInterval(timer); timer = null; play.textContent = "Play"; return;
        }
        play.textContent = "Pause";
        timer = setInterval(function () {
          show((parseInt(slider.value, 10) + 1) % snaps.length);
        }, 900);
      });
    }
    show(snaps.length - 1);
  }
  var focus = document.getElementById("focus-style");
  var items = document.querySelectorAll(".legend [data-seg]");
  for (var k = 0; k < items.length; k++) {
    items[k].addEventListener("mouseenter", function (e) {
      var seg = e.currentTarget.getAttribute("data-seg");
      if (focus && /^-?[0-9]+$/.test(seg)) {
        focus.textContent = ".sg:not(.s" + seg + "){opacity:.12}";
      }
    });
    items[k].addEventListener("mouseleave", function () {
      if (focus) { focus.textContent = ""; }
    });
  }
})();
"""


def _script_hash(js: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()


def _legend(ids, colors, keywords: dict) -> str:
    items = []
    for sid in sorted(ids, key=lambda s: (s == NOISE, s)):
        kw = ", ".join(keywords.get(sid, [])[:3])
        text = _seg_name(sid) + (f" · {kw}" if kw else "")
        items.append(f'<span class="item" data-seg="{sid}"><span class="sw" '
                     f'style="background:{colors.get(sid, _NOISE_COLOR)}"></span>'
                     f'{_esc(text)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _texts_cell(texts: list[str]) -> str:
    if not texts:
        return "<td>–</td>"
    lis = "".join(f"<li>{_esc(t if len(t) <= _TEXT_CLIP else t[:_TEXT_CLIP - 1] + '…')}</li>"
                  for t in texts)
    return f'<td class="wrap"><ul>{lis}</ul></td>'


def _segment_table(rows, colors) -> str:
    """rows: (segment, size, keywords list, texts list or None)."""
    has_texts = any(r[3] is not None for r in rows)
    head = ("<tr><th>segment</th><th>users</th><th>keywords</th>"
            + ("<th>representative texts</th>" if has_texts else "") + "</tr>")
    body = []
    for sid, size, kws, texts in rows:
        body.append(f'<tr><td><span class="sw" style="background:'
                    f'{colors.get(sid, _NOISE_COLOR)}"></span> {_esc(_seg_name(sid))}</td>'
                    f'<td class="num">{size:,}</td>'
                    f'<td class="wrap">{_esc(", ".join(kws)) or "–"}</td>'
                    + (_texts_cell(texts or []) if has_texts else "") + "</tr>")
    return f'<table class="segtable">{head}{"".join(body)}</table>'


def _summary_table(summary: dict | None) -> str:
    if not summary:
        return ""
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items()
                          if not isinstance(b, (dict, list)))
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        rows.append(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>")
    return (f"<details><summary>run summary (summary.json)</summary><table>{''.join(rows)}"
            "</table></details>")


def _sample(df: pd.DataFrame, cap: int) -> pd.DataFrame:
    if len(df) <= cap:
        return df
    return df.assign(_k=_hash_keys(df["user_id"].tolist())).nsmallest(cap, "_k").drop(
        columns="_k")


def _trends_section(tr: "_Tracking", colors) -> str:
    """Rising items / keywords per snapshot and segment (tracking/trends.parquet)."""
    if tr.trends is None:
        return ('<p class="note">This run directory has no tracking/trends.parquet (run '
                'directories written before trends were tracked lack it): no trends to '
                'show.</p>')
    t = tr.trends
    note = ('<p class="note">Items and keywords whose share of a segment\'s users rose '
            'significantly since the previous snapshot (tracking/trends.parquet: one-sided '
            'Fisher p-value against the previous share, Bonferroni over the keys tested in '
            'that segment and snapshot). '
            'Share = users of the segment who used it in that window.</p>')
    if not len(t):
        return note + '<p class="note" id="no-trends">Nothing rose significantly.</p>'
    blocks = []
    for snap in sorted(t["snapshot"].unique(), reverse=True):
        rows = t[t["snapshot"] == snap].sort_values(["segment_id", "kind", "p_value"],
                                                    kind="stable")
        body = "".join(
            f'<tr><td class="nw"><span class="sw" style="background:'
            f'{colors.get(int(r.segment_id), "#999")}"></span>{_esc(_seg_name(r.segment_id))}'
            f'</td><td>{_esc(r.kind)}</td><td class="wrap">{_esc(r.key)}'
            + (f'<br><span class="note">{_esc(r.label)}</span>'
               if isinstance(getattr(r, "label", None), str) and r.label
               and r.label != r.key else "") + '</td>'
            f'<td class="num">{100 * r.previous_share:.0f}% → {100 * r.share:.0f}%</td>'
            f'<td class="num">{int(r.n_users):,}</td><td class="num">{r.p_value:.2g}</td></tr>'
            for r in rows.itertuples(index=False))
        opened = " open" if snap == t["snapshot"].max() else ""
        label = tr.labels.get(int(snap), f"t{snap}")
        blocks.append(f"<details{opened}><summary>{_esc(label)} · {len(rows)} rising</summary>"
                      "<table><tr><th>segment</th><th>kind</th><th>item / keyword</th>"
                      "<th>share</th><th>users</th><th>p-value</th></tr>"
                      f"{body}</table></details>")
    return note + "".join(blocks)


def render_report(run_dir, *, title: str | None = None, max_map_points: int = 2000) -> str:
    """The report of ``run_dir`` as one HTML string (see :func:`write_report`)."""
    if isinstance(max_map_points, bool) or not isinstance(max_map_points, (int, np.integer)):
        raise TypeError(f"max_map_points must be an int, got {type(max_map_points).__name__}")
    if max_map_points < 1:
        raise ValueError(f"max_map_points={max_map_points} must be >= 1")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    run = _load_run(run_dir)
    tr = run.tracking
    title = title if title is not None else f"interestflow report · {run.run_dir.name}"
    sections: list[tuple[str, str, str]] = []  # (id, heading, html)

    if tr is not None:
        ids = set(tr.snapshots["segment_id"].tolist()) | set(tr.assignments["segment_id"])
        ids |= set(tr.transitions["from_segment"]) | set(tr.transitions["to_segment"])
        for col in ("segments_from", "segments_to"):
            for lst in tr.lifecycle[col]:
                ids |= set(lst)
        colors = _segment_colors(ids)
        latest_kw = {int(r.segment_id): list(r.keywords) for r in
                     tr.snapshots.sort_values("snapshot").itertuples(index=False)}
        short = [f"t{t} · {tr.labels[t].split(' · ', 1)[1].split(' – ')[1]}" for t in tr.order]
        legend_ids = sorted({i for i in ids})
        legend = _legend(legend_ids, colors, latest_kw)

        # --- map
        pts = tr.map.merge(tr.assignments.rename(columns={"segment_id": "segment"}),
                           on=["snapshot", "user_id"], how="left")
        unmatched = pts["segment"].isna().to_numpy()
        if unmatched.any():
            i = _first_bad_row(unmatched)
            raise ValueError(f"tracking/map.parquet has {int(unmatched.sum())} (snapshot, "
                             f"user_id) rows with no row in tracking/assignments.parquet, e.g. "
                             f"snapshot {pts['snapshot'].iloc[i]}, user {pts['user_id'].iloc[i]!r}")
        pts["segment"] = pts["segment"].astype(np.int64)
        per_snap, n_total, sampled = [], {}, False
        for t in tr.order:
            p = pts[pts["snapshot"] == t]
            n_total[t] = len(p)
            if len(p) > max_map_points:
                sampled = True
            per_snap.append((t, _sample(p, max_map_points)))
        shown = {t: len(p) for t, p in per_snap}

        def describe(snap, sid, n):
            kws = ", ".join(tr.snapshots.loc[(tr.snapshots["snapshot"] == snap)
                                             & (tr.snapshots["segment_id"] == sid),
                                             "keywords"].explode().dropna().astype(str)
                            .tolist()[:5])
            return (f"{_seg_name(sid)} at t{snap}: {n:,} users shown"
                    + (f" · {kws}" if kws else ""))

        notes = ['<p class="note">Each dot is a user at one snapshot, placed by the 2-D '
                 'projection in tracking/map.parquet (one projection for all snapshots, so the '
                 'maps align); colour = the user\'s segment at that snapshot, grey = noise. '
                 'Hover a legend entry to highlight one segment in every plot.</p>']
        if sampled:
            notes.append(f'<p class="note warn" id="map-sample-note">Subsampled: at most '
                         f'{max_map_points:,} users are drawn per snapshot (largest snapshot: '
                         f'{max(n_total.values()):,} users, {max(shown.values()):,} drawn). '
                         'The sample is deterministic (by a hash of user_id), so the same users '
                         'are kept in every snapshot they appear in.</p>')
        controls = ""
        if len(tr.order) > 1:
            controls = (f'<div class="controls"><button id="map-play" type="button">Play'
                        f'</button><input id="map-slider" type="range" min="0" '
                        f'max="{len(tr.order) - 1}" value="{len(tr.order) - 1}" step="1" '
                        f'aria-label="snapshot"><span id="map-label">'
                        f'{_esc(tr.labels[tr.order[-1]])}</span></div>'
                        '<noscript><p class="note">JavaScript is off: the map shows the last '
                        'snapshot only.</p></noscript>')
        else:
            controls = f'<p class="note">{_esc(tr.labels[tr.order[0]])}</p>'
        sections.append(("map", "Map of users", "".join(notes) + controls + legend
                         + _svg_map(per_snap, tr.labels, colors, describe)))

        # --- sizes over time
        sizes = tr.snapshots.pivot_table(index="snapshot", columns="segment_id", values="size",
                                         aggfunc="sum", fill_value=0)
        noise = tr.assignments[tr.assignments["segment_id"] == NOISE].groupby(
            "snapshot").size().to_dict()
        sections.append(("sizes", "Segment sizes over time",
                         '<p class="note">Users per segment at each snapshot (stacked; from '
                         'tracking/snapshots.parquet; grey = noise users from '
                         'tracking/assignments.parquet).</p>' + legend
                         + _svg_sizes_over_time(tr.order, short, sizes, noise, colors)))

        # --- transitions
        if len(tr.order) > 1:
            shown_t = tr.order[-_SANKEY_SNAPSHOTS:]
            cut = ""
            if len(shown_t) < len(tr.order):
                cut = (f'<p class="note warn" id="sankey-cut-note">The last '
                       f'{len(shown_t)} of {len(tr.order)} snapshots are drawn (more columns '
                       'would not be readable); every transition is in '
                       'tracking/transitions.parquet.</p>')
            body = ('<p class="note">Users moving between consecutive snapshots '
                    '(tracking/transitions.parquet). Node "noise" = users absent or unassigned '
                    'at that snapshot. Hover a band for the count.</p>' + cut
                    + _svg_sankey(shown_t, [short[tr.order.index(t)] for t in shown_t],
                                  tr.transitions[tr.transitions["snapshot"].isin(shown_t[1:])],
                                  colors))
        else:
            body = '<p class="note">Only one snapshot: there are no transitions to draw.</p>'
        sections.append(("transitions", "Transitions between snapshots", body))

        # --- lifecycle
        life = tr.lifecycle.sort_values(["snapshot", "event"], kind="stable")
        has_sig = "p_value" in life.columns and "stability" in life.columns
        # the table: most significant first (smallest p-value, then highest stability)
        table_rows = (life.assign(_p=life["p_value"].fillna(1.0),
                                  _s=-life["stability"].fillna(0.0))
                      .sort_values(["_p", "_s", "snapshot"], kind="stable")
                      if has_sig else life)

        def sig_cells(r):
            if not has_sig:
                return ""
            return "".join(f'<td class="num">{"–" if pd.isna(v) else f"{v:.2g}"}</td>'
                           for v in (r.p_value, r.stability))
        grey = 'fill="#ccc" class="ev"'
        shapes = "".join(
            f'<span class="item"><svg width="18" height="18" viewBox="0 0 18 18">'
            f'{_marker(k, 9, 9, 6, grey)}</svg> {k}</span>' for k in LIFECYCLE_EVENTS)
        rows = "".join(
            f'<tr><td class="nw">{_esc(tr.labels[int(r.snapshot)])}</td>'
            f'<td class="nw">{_esc(r.event)}</td>'
            f"<td>{_esc(', '.join(map(_seg_name, r.segments_from)) or '–')}</td>"
            f"<td>{_esc(', '.join(map(_seg_name, r.segments_to)) or '–')}</td>"
            f"<td class=\"num\">{'' if pd.isna(r.value) else f'{r.value:.3f}'}</td>"
            + sig_cells(r) +
            f'<td class="wrap">{_esc(r.detail)}</td></tr>'
            for r in table_rows.itertuples(index=False))
        sig_head = "<th>p-value</th><th>stability</th>" if has_sig else ""
        table = (f"<table><tr><th>snapshot</th><th>event</th><th>from</th><th>to</th>"
                 f"<th>value</th>{sig_head}<th>detail</th></tr>{rows}</table>" if len(life)
                 else '<p class="note" id="no-events">No lifecycle events were detected.</p>')
        counts = life["event"].value_counts()
        left_out = ""
        if tr.candidates is not None:
            out = tr.candidates[~tr.candidates["reported"].astype(bool)]
            why = out["reason"].astype(str).str.split(":").str[0].value_counts()
            left_out = (f' {len(out):,} candidate events were not reported (' + _esc(
                ", ".join(f"{k}: {int(v)}" for k, v in why.items())) + '; all of them, with '
                'their reasons, are in tracking/lifecycle_candidates.parquet).'
                if len(out) else " No candidate event was left out.")
        sections.append(("lifecycle", "Lifecycle events",
                         '<p class="note">Events in tracking/lifecycle.parquet at the snapshot '
                         'where they are observed; marker shape = kind, colour = segment. Hover '
                         'a marker for details. Counts: '
                         + _esc(", ".join(f"{k} {int(counts.get(k, 0))}"
                                          for k in LIFECYCLE_EVENTS)) + "."
                         + (" Reported are the events that pass the significance tests "
                            "(stability over re-clustered half-samples, a p-value that the "
                            "segments involved are new or gone, no flip-flop within 2 "
                            "snapshots); the table lists the most significant first."
                            if has_sig else "") + left_out + "</p>"
                         + f'<div class="legend shapes">{shapes}</div>'
                         + _svg_timeline(tr.order, tr.labels, short, life, colors) + table))

        # --- trending inside segments
        sections.append(("trends", "Trending inside segments", _trends_section(tr, colors)))

        # --- keywords per snapshot
        blocks = []
        for t in tr.order:
            s = tr.snapshots[tr.snapshots["snapshot"] == t].sort_values(
                ["size", "segment_id"], ascending=[False, True])
            rows = [(int(r.segment_id), int(r.size), list(r.keywords),
                     list(r.representative_texts)) for r in s.itertuples(index=False)]
            opened = " open" if t == tr.order[-1] else ""
            blocks.append(f"<details{opened}><summary>{_esc(tr.labels[t])} · {len(rows)} "
                          f"segments</summary>{_segment_table(rows, colors)}</details>")
        sections.append(("keywords", "Keywords and representative texts",
                         '<p class="note">Per snapshot (latest open): top keywords by class-based '
                         'TF-IDF and the texts closest to each segment centroid.</p>'
                         + "".join(blocks)))
        n_users = tr.assignments["user_id"].nunique()
        first_day = tr.labels[tr.order[0]].split(" · ", 1)[1].split(" – ")[0]
        last_day = tr.labels[tr.order[-1]].split(" – ")[-1]
        status = (f"{len(tr.order)} snapshot(s) from {first_day} to {last_day}; "
                  f"{n_users:,} users tracked; "
                  f"{len(ids - {NOISE}):,} segment ids; {len(tr.lifecycle):,} lifecycle events")
    else:
        seg = run.segments
        users = run.users
        ids = set(seg["segment"].tolist()) | set(users["segment"].tolist())
        colors = _segment_colors(ids)
        kw = {int(r.segment): list(r.keywords) for r in seg.itertuples(index=False)}
        legend = _legend(sorted(ids), colors, kw)
        not_run = ('<p class="note warn tracking-not-run">Tracking was not run: this run '
                   'directory has no tracking/ folder, so there are no snapshots, '
                   'transitions or lifecycle events. The report shows the static segments.</p>')
        coords, how = _static_coordinates(users)
        if coords is None:
            map_body = f'<p class="note warn">No map: {_esc(how)}.</p>'
        else:
            p = pd.DataFrame({"user_id": users["user_id"].astype(str), "x": coords[:, 0],
                              "y": coords[:, 1], "segment": users["segment"].to_numpy()})
            shown = _sample(p, max_map_points)
            note = (f'<p class="note">Each dot is a user, placed by a {_esc(how)}; colour = '
                    'segment, grey = noise.</p>')
            if len(shown) < len(p):
                note += (f'<p class="note warn" id="map-sample-note">Subsampled: {len(shown):,} '
                         f'of {len(p):,} users are drawn (at most {max_map_points:,}; a '
                         'deterministic sample by a hash of user_id).</p>')

            def describe(_snap, sid, n):
                return f"{_seg_name(sid)}: {n:,} users shown · {', '.join(kw.get(sid, [])[:5])}"

            map_body = note + legend + _svg_map([(0, shown)], {0: "segments"}, colors, describe)
        sections.append(("map", "Map of users", not_run + map_body))
        sizes = [(int(r.segment), int(r.size), ", ".join(r.keywords)[:200])
                 for r in seg.itertuples(index=False)]
        n_noise = int((users["segment"] == NOISE).sum())
        if n_noise and NOISE not in set(seg["segment"]):
            sizes.append((NOISE, n_noise, "users in no segment"))
        sizes.sort(key=lambda r: (-r[1], r[0]))
        sections.append(("sizes", "Segment sizes",
                         not_run + '<p class="note">Users per segment (segments.parquet).</p>'
                         + _svg_static_sizes(sizes, colors)))
        sections.append(("transitions", "Transitions between snapshots", not_run))
        sections.append(("lifecycle", "Lifecycle events", not_run))
        sections.append(("trends", "Trending inside segments", not_run))
        texts = "representative_texts" in seg.columns
        rows = [(int(r.segment), int(r.size), list(r.keywords),
                 list(r.representative_texts) if texts else None)
                for r in seg.sort_values(["size", "segment"], ascending=[False, True])
                .itertuples(index=False)]
        sections.append(("keywords", "Keywords and representative texts",
                         '<p class="note">Top keywords per segment (segments.parquet)'
                         + ("" if texts else "; segments.parquet has no representative_texts "
                            "column") + ".</p>" + _segment_table(rows, colors)))
        status = (f"tracking was not run; {len(users):,} users in "
                  f"{len(ids - {NOISE}):,} segments")

    nav = "".join(f'<a href="#{sid}">{_esc(head)}</a>' for sid, head, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_esc(head)}</h2>{content}</section>'
                   for sid, head, content in sections)
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src '{_script_hash(_JS)}'; base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style><style id=\"focus-style\"></style>"
        f"</head><body><header><h1>{_esc(title)}</h1>"
        f'<div class="note" id="run-status">{_esc(run.run_dir.name)}: {_esc(status)}</div>'
        f"{_summary_table(run.summary)}<nav>{nav}</nav></header><main>{body}</main>"
        f"<script>{_JS}</script></body></html>\n")


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
    from .io import atomic_open

    # mkstemp makes the file owner-only; a report is for sharing
    with atomic_open(out, "w", file_mode=0o644) as f:
        f.write(text)
    return out

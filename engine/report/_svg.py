"""The report's drawings as inline SVG: the map of users, segment sizes (over time), the
transitions (Sankey) diagram, the lifecycle timeline and its markers, and their axes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._common import LIFECYCLE_EVENTS, NOISE, NOISE_COLOR, esc, seg_name

__all__ = ["marker", "svg_map", "svg_sankey", "svg_sizes_over_time", "svg_static_sizes",
           "svg_timeline"]

# Sankey geometry (px): canvas, margins (left, right, top, bottom), node width, gap between nodes
_SK_W, _SK_H = 960, 460
_SK_ML, _SK_MR, _SK_MT, _SK_MB = 40, 56, 14, 40
_SK_NODE_W, _SK_GAP = 12, 8


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------

def _nice_step(span: float, n: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``n`` ticks."""
    raw = max(span, 1e-12) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _fmt_num(v: float) -> str:
    """A tick value: an integer with thousands separators, else three significant digits."""
    return f"{int(round(v)):,}" if abs(v - round(v)) < 1e-9 else f"{v:,.3g}"


def _x_positions(n: int, left: float, right: float) -> list[float]:
    """``n`` evenly spaced x positions from ``left`` to ``right`` (the middle for one)."""
    if n == 1:
        return [(left + right) / 2]
    return [left + (right - left) * i / (n - 1) for i in range(n)]


def _x_axis_labels(xs, names, y: float) -> list[str]:
    """Axis labels at ``xs``, thinned so that they do not overlap."""
    # 11 px labels such as "t10 · 2024-03-18" are about 110 px wide: thin them to fit
    width = max([len(n) for n in names] + [1]) * 6.6 + 10
    spacing = (xs[-1] - xs[0]) / (len(xs) - 1) if len(xs) > 1 else width
    step = max(1, math.ceil(width / max(spacing, 1e-9)))
    out = []
    for i, (x, name) in enumerate(zip(xs, names)):
        if i % step == 0 or (i == len(xs) - 1 and (i % step) * spacing >= width):
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" '
                       f'class="axis">{esc(name)}</text>')
    return out


def _noise_last(sid: int) -> tuple:
    """Sort key: segments by id, noise after them."""
    return (sid == NOISE, sid)


# --------------------------------------------------------------------------------------------
# map and sizes
# --------------------------------------------------------------------------------------------

def svg_map(points_by_snap, labels, colors, describe) -> str:
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
        parts.append(f'<g class="snap" data-snapshot="{snap}" data-label="{esc(labels[snap])}"'
                     f'{style}>')
        px = w / 2 + (pts["x"].to_numpy() - cx) * scale
        py = h / 2 - (pts["y"].to_numpy() - cy) * scale
        seg = pts["segment"].to_numpy()
        # noise underneath, then segments by id
        for sid in sorted(set(seg.tolist()), key=lambda s: (s != NOISE, s)):
            sel = np.flatnonzero(seg == sid)
            parts.append(f'<g class="sg s{sid}" fill="{colors.get(sid, NOISE_COLOR)}">'
                         f'<title>{esc(describe(snap, sid, len(sel)))}</title>')
            parts.append("".join(f'<circle cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="{r}"/>'
                                 for i in sel))
            parts.append("</g>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def svg_sizes_over_time(order, labels_short, sizes: pd.DataFrame, noise: dict,
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
        tip = f"{seg_name(sid)} users per snapshot: " + ", ".join(
            f"t{t} {int(v):,}" for t, v in zip(order, vals))
        cls = f'class="sg s{sid}" fill="{colors.get(sid, NOISE_COLOR)}"'
        if len(order) == 1:
            x = xs[0]
            parts.append(f'<rect {cls} x="{x - 40:.1f}" y="{yy(top[0]):.1f}" width="80" '
                         f'height="{yy(base[0]) - yy(top[0]):.1f}"><title>{esc(tip)}'
                         '</title></rect>')
        else:
            pts = [f"{x:.1f},{yy(v):.1f}" for x, v in zip(xs, top)]
            pts += [f"{x:.1f},{yy(v):.1f}" for x, v in zip(xs[::-1], base[::-1])]
            parts.append(f'<polygon {cls} points="{" ".join(pts)}" fill-opacity="0.85" '
                         f'stroke="#fff" stroke-width="0.6"><title>{esc(tip)}</title>'
                         '</polygon>')
        base = top
    parts += _x_axis_labels(xs, labels_short, h - mb + 18)
    parts.append(f'<text x="{ml - 48}" y="{mt + (h - mt - mb) / 2:.0f}" class="axis" '
                 f'transform="rotate(-90 {ml - 48} {mt + (h - mt - mb) / 2:.0f})" '
                 'text-anchor="middle">users</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_static_sizes(seg_sizes: list[tuple[int, int, str]], colors) -> str:
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
                     f'class="axis">{esc(seg_name(sid))}</text>'
                     f'<rect class="sg s{sid}" x="{ml}" y="{y}" width="{bw:.1f}" height="{bar}" '
                     f'fill="{colors.get(sid, NOISE_COLOR)}"><title>'
                     f'{esc(f"{seg_name(sid)}: {size:,} users · {kw}")}</title></rect>'
                     f'<text x="{ml + bw + 6:.1f}" y="{y + bar * 0.72:.1f}" class="axis">'
                     f'{size:,}  {esc(kw[:60])}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# transitions (Sankey)
# --------------------------------------------------------------------------------------------

def _sankey_flows(order, trans: pd.DataFrame):
    """(links, inflow, outflow, nodes): links ``(t0, from, t1, to, n)`` with n > 0, users
    in and out per (snapshot, segment), and node values max(inflow, outflow)."""
    col = {t: i for i, t in enumerate(order)}
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
    return links, inflow, outflow, nodes


def _sankey_layout(order, nodes: dict):
    """(scale, ypos): px per user so that the fullest column fits, and each node's top y;
    scale is infinite when no user moved."""
    columns = {t: sorted((sid for (tt, sid) in nodes if tt == t), key=_noise_last)
               for t in order}
    scale = math.inf
    for t, sids in columns.items():
        if sids:
            avail = _SK_H - _SK_MT - _SK_MB - _SK_GAP * (len(sids) - 1)
            scale = min(scale, avail / sum(nodes[(t, s)] for s in sids))
    ypos = {}
    if math.isfinite(scale):
        for t, sids in columns.items():
            y = _SK_MT
            for s in sids:
                ypos[(t, s)] = y
                y += nodes[(t, s)] * scale + _SK_GAP
    return scale, ypos


def _sankey_bands(links, nodes, ypos, xs, scale, colors) -> list[str]:
    """One band per link, stacked at the source in target order and at the target in
    source order."""
    out_off = {k: 0.0 for k in nodes}
    in_off = {k: 0.0 for k in nodes}
    src_sorted = sorted(links, key=lambda l: (l[0], _noise_last(l[1]), _noise_last(l[3])))
    y_src = {}
    for lk in src_sorted:
        t0, a, _, _, n = lk
        y_src[lk] = ypos[(t0, a)] + out_off[(t0, a)]
        out_off[(t0, a)] += n * scale
    parts = []
    for lk in sorted(links, key=lambda l: (l[2], _noise_last(l[3]), _noise_last(l[1]))):
        t0, a, t1, b, n = lk
        th = n * scale
        ya, yb = y_src[lk], ypos[(t1, b)] + in_off[(t1, b)]
        in_off[(t1, b)] += th
        xa, xb = xs[t0] + _SK_NODE_W, xs[t1]
        xm = (xa + xb) / 2
        sid = a if a != NOISE else b
        tip = (f"{seg_name(a)} (t{t0}) → {seg_name(b)} (t{t1}): {n:,} users")
        parts.append(f'<path class="sg s{sid} link" fill="{colors.get(sid, NOISE_COLOR)}" '
                     f'd="M{xa:.1f},{ya:.1f} C{xm:.1f},{ya:.1f} {xm:.1f},{yb:.1f} {xb:.1f},'
                     f'{yb:.1f} L{xb:.1f},{yb + th:.1f} C{xm:.1f},{yb + th:.1f} {xm:.1f},'
                     f'{ya + th:.1f} {xa:.1f},{ya + th:.1f} Z"><title>{esc(tip)}</title></path>')
    return parts


def _sankey_nodes(nodes, inflow, outflow, ypos, xs, scale, colors) -> list[str]:
    """One bar per (snapshot, segment), labelled when it is tall enough."""
    parts = []
    for (t, s), v in sorted(nodes.items(), key=lambda kv: (kv[0][0], _noise_last(kv[0][1]))):
        y, hh = ypos[(t, s)], max(v * scale, 1.0)
        tip = (f"{seg_name(s)} at t{t}: {inflow.get((t, s), 0):,} users in from t-1, "
               f"{outflow.get((t, s), 0):,} out to t+1")
        parts.append(f'<rect class="sg s{s} node" x="{xs[t]:.1f}" y="{y:.1f}" '
                     f'width="{_SK_NODE_W}" height="{hh:.1f}" fill="{colors.get(s, NOISE_COLOR)}">'
                     f'<title>{esc(tip)}</title></rect>')
        if hh >= 11:
            parts.append(f'<text x="{xs[t] + _SK_NODE_W + 3:.1f}" y="{y + hh / 2 + 4:.1f}" '
                         f'class="nodelabel">{esc(seg_name(s))}</text>')
    return parts


def svg_sankey(order, labels_short, trans: pd.DataFrame, colors) -> str:
    """Alluvial diagram: one column of nodes per snapshot, bands = users moving t-1 -> t."""
    links, inflow, outflow, nodes = _sankey_flows(order, trans)
    scale, ypos = _sankey_layout(order, nodes)
    if not math.isfinite(scale):
        return ('<p class="note">No users moved between snapshots (tracking/transitions.parquet '
                'holds no positive n_users).</p>')
    xs = dict(zip(order, _x_positions(len(order), _SK_ML, _SK_W - _SK_MR - _SK_NODE_W)))
    parts = [f'<svg class="plot" id="sankey-svg" viewBox="0 0 {_SK_W} {_SK_H}" role="img" '
             'aria-label="transitions between snapshots">']
    parts += _sankey_bands(links, nodes, ypos, xs, scale, colors)
    parts += _sankey_nodes(nodes, inflow, outflow, ypos, xs, scale, colors)
    parts += _x_axis_labels([xs[t] + _SK_NODE_W / 2 for t in order], labels_short,
                            _SK_H - _SK_MB + 22)
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# lifecycle timeline
# --------------------------------------------------------------------------------------------

def marker(kind: str, x: float, y: float, s: float, attrs: str, inner: str = "") -> str:
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
    """The segment whose colour an event's marker takes."""
    prefer = seg_from + seg_to if kind in ("vanish", "split") else seg_to + seg_from
    return prefer[0] if prefer else NOISE


def _event_text(row, labels) -> str:
    """An event's tooltip: kind, snapshot, segments from and to, value and detail."""
    src = ", ".join(seg_name(s) for s in row.segments_from) or "–"
    dst = ", ".join(seg_name(s) for s in row.segments_to) or "–"
    val = "" if pd.isna(row.value) else f" · value {row.value:.3f}"
    det = f" · {row.detail}" if row.detail else ""
    return f"{row.event} at {labels[int(row.snapshot)]}: {src} → {dst}{val}{det}"


def svg_timeline(order, labels, labels_short, life: pd.DataFrame, colors) -> str:
    """Lifecycle events over time: one lane per kind, one marker per event."""
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
            parts.append(marker(kind, x, y, 7.0,
                                f'class="sg s{sid} ev ev-{kind}" '
                                f'fill="{colors.get(sid, NOISE_COLOR)}"',
                                f"<title>{esc(_event_text(row, labels))}</title>"))
    parts += _x_axis_labels(list(xs.values()), labels_short, h - mb + 22)
    parts.append("</svg>")
    return "".join(parts)

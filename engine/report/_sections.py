"""The report's sections (map, sizes, transitions, lifecycle, trends, keywords) as HTML, one
function per section: drawn from the tracking tables when the run was tracked, from the
static tables (users, segments) otherwise."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pandas as pd

from .._utils import pca_2d
from ._common import LIFECYCLE_EVENTS, NOISE, esc, seg_name, segment_colors
from ._html import legend, segment_table
from ._svg import (marker, svg_map, svg_sankey, svg_sizes_over_time, svg_static_sizes,
                   svg_timeline)
from ._tables import Run, Tracking, first_bad_row

__all__ = ["sample_users", "static_sections", "tracked_sections"]

#: The transitions diagram draws at most this many (the latest) snapshots.
_SANKEY_SNAPSHOTS = 12

_NOT_RUN = ('<p class="note warn tracking-not-run">Tracking was not run: this run '
            'directory has no tracking/ folder, so there are no snapshots, '
            'transitions or lifecycle events. The report shows the static segments.</p>')


# --------------------------------------------------------------------------------------------
# sampling and projection of the map's points
# --------------------------------------------------------------------------------------------

def _hash_keys(user_ids) -> np.ndarray:
    """A stable pseudo-random key per user id (independent of row order and of Python's
    per-process string hashing) so a subsample keeps the same users in every snapshot."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(u.encode("utf-8"), digest_size=8)
                                       .digest(), "little") for u in user_ids),
                       dtype=np.uint64, count=len(user_ids))


def sample_users(df: pd.DataFrame, cap: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``df``: those whose ``user_id`` hashes lowest, so the same
    users are kept in every snapshot."""
    if len(df) <= cap:
        return df
    return df.assign(_k=_hash_keys(df["user_id"].tolist())).nsmallest(cap, "_k").drop(
        columns="_k")


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
        i = first_bad_row(~np.isfinite(x).all(axis=1))
        raise ValueError(f"users.parquet row {i}: {what} hold a non-finite value")
    if len(x) < 2 or x.shape[1] < 2:
        return None, f"too few users or dimensions in {what} for a 2-D projection"
    return pca_2d(x), f"principal-component projection (PCA, computed for this report) of {what}"


# --------------------------------------------------------------------------------------------
# a tracked run
# --------------------------------------------------------------------------------------------

def _tracked_ids(tr: Tracking) -> set:
    """Every segment id that any tracking table names (noise included)."""
    ids = set(tr.snapshots["segment_id"].tolist()) | set(tr.assignments["segment_id"])
    ids |= set(tr.transitions["from_segment"]) | set(tr.transitions["to_segment"])
    for col in ("segments_from", "segments_to"):
        for lst in tr.lifecycle[col]:
            ids |= set(lst)
    return ids


def _map_points(tr: Tracking) -> pd.DataFrame:
    """map.parquet joined with each user's segment at that snapshot (assignments.parquet)."""
    pts = tr.map.merge(tr.assignments.rename(columns={"segment_id": "segment"}),
                       on=["snapshot", "user_id"], how="left")
    unmatched = pts["segment"].isna().to_numpy()
    if unmatched.any():
        i = first_bad_row(unmatched)
        raise ValueError(f"tracking/map.parquet has {int(unmatched.sum())} (snapshot, "
                         f"user_id) rows with no row in tracking/assignments.parquet, e.g. "
                         f"snapshot {pts['snapshot'].iloc[i]}, user {pts['user_id'].iloc[i]!r}")
    pts["segment"] = pts["segment"].astype(np.int64)
    return pts


def _describe_tracked(snapshots: pd.DataFrame, snap, sid, n) -> str:
    """A map group's tooltip: segment, snapshot, users shown and its keywords then."""
    kws = ", ".join(snapshots.loc[(snapshots["snapshot"] == snap)
                                  & (snapshots["segment_id"] == sid),
                                  "keywords"].explode().dropna().astype(str).tolist()[:5])
    return (f"{seg_name(sid)} at t{snap}: {n:,} users shown"
            + (f" · {kws}" if kws else ""))


def _map_notes(n_total: dict, shown: dict, max_map_points: int) -> str:
    """What the map shows, and how it was subsampled when it was."""
    notes = ['<p class="note">Each dot is a user at one snapshot, placed by the 2-D '
             'projection in tracking/map.parquet (one projection for all snapshots, so the '
             'maps align); colour = the user\'s segment at that snapshot, grey = noise. '
             'Hover a legend entry to highlight one segment in every plot.</p>']
    if any(n > max_map_points for n in n_total.values()):
        notes.append(f'<p class="note warn" id="map-sample-note">Subsampled: at most '
                     f'{max_map_points:,} users are drawn per snapshot (largest snapshot: '
                     f'{max(n_total.values()):,} users, {max(shown.values()):,} drawn). '
                     'The sample is deterministic (by a hash of user_id), so the same users '
                     'are kept in every snapshot they appear in.</p>')
    return "".join(notes)


def _map_controls(tr: Tracking) -> str:
    """The snapshot slider and play button (or the one snapshot's label)."""
    if len(tr.order) > 1:
        return (f'<div class="controls"><button id="map-play" type="button">Play'
                f'</button><input id="map-slider" type="range" min="0" '
                f'max="{len(tr.order) - 1}" value="{len(tr.order) - 1}" step="1" '
                f'aria-label="snapshot"><span id="map-label">'
                f'{esc(tr.labels[tr.order[-1]])}</span></div>'
                '<noscript><p class="note">JavaScript is off: the map shows the last '
                'snapshot only.</p></noscript>')
    return f'<p class="note">{esc(tr.labels[tr.order[0]])}</p>'


def _tracked_map(tr: Tracking, colors, leg: str, max_map_points: int) -> str:
    """The map section: one scatter per snapshot, at most ``max_map_points`` users each."""
    pts = _map_points(tr)
    per_snap, n_total = [], {}
    for t in tr.order:
        p = pts[pts["snapshot"] == t]
        n_total[t] = len(p)
        per_snap.append((t, sample_users(p, max_map_points)))
    shown = {t: len(p) for t, p in per_snap}
    describe = functools.partial(_describe_tracked, tr.snapshots)
    return (_map_notes(n_total, shown, max_map_points) + _map_controls(tr) + leg
            + svg_map(per_snap, tr.labels, colors, describe))


def _tracked_sizes(tr: Tracking, short, colors, leg: str) -> str:
    """The sizes section: users per segment at each snapshot, stacked, noise on top."""
    sizes = tr.snapshots.pivot_table(index="snapshot", columns="segment_id", values="size",
                                     aggfunc="sum", fill_value=0)
    noise = tr.assignments[tr.assignments["segment_id"] == NOISE].groupby(
        "snapshot").size().to_dict()
    return ('<p class="note">Users per segment at each snapshot (stacked; from '
            'tracking/snapshots.parquet; grey = noise users from '
            'tracking/assignments.parquet).</p>' + leg
            + svg_sizes_over_time(tr.order, short, sizes, noise, colors))


def _transitions(tr: Tracking, short, colors) -> str:
    """The transitions section: a Sankey diagram of the latest ``_SANKEY_SNAPSHOTS``."""
    if len(tr.order) <= 1:
        return '<p class="note">Only one snapshot: there are no transitions to draw.</p>'
    shown_t = tr.order[-_SANKEY_SNAPSHOTS:]
    cut = ""
    if len(shown_t) < len(tr.order):
        cut = (f'<p class="note warn" id="sankey-cut-note">The last '
               f'{len(shown_t)} of {len(tr.order)} snapshots are drawn (more columns '
               'would not be readable); every transition is in '
               'tracking/transitions.parquet.</p>')
    return ('<p class="note">Users moving between consecutive snapshots '
            '(tracking/transitions.parquet). Node "noise" = users absent or unassigned '
            'at that snapshot. Hover a band for the count.</p>' + cut
            + svg_sankey(shown_t, [short[tr.order.index(t)] for t in shown_t],
                         tr.transitions[tr.transitions["snapshot"].isin(shown_t[1:])],
                         colors))


def _sig_cells(r, has_sig: bool) -> str:
    """An event's p-value and stability cells (none when the table lacks them)."""
    if not has_sig:
        return ""
    return "".join(f'<td class="num">{"–" if pd.isna(v) else f"{v:.2g}"}</td>'
                   for v in (r.p_value, r.stability))


def _lifecycle_table(life: pd.DataFrame, labels: dict, has_sig: bool) -> str:
    """Every event, the most significant first when the table has p-values and stability
    (smallest p-value, then highest stability); a note when there is none."""
    if not len(life):
        return '<p class="note" id="no-events">No lifecycle events were detected.</p>'
    table_rows = (life.assign(_p=life["p_value"].fillna(1.0),
                              _s=-life["stability"].fillna(0.0))
                  .sort_values(["_p", "_s", "snapshot"], kind="stable")
                  if has_sig else life)
    rows = "".join(
        f'<tr><td class="nw">{esc(labels[int(r.snapshot)])}</td>'
        f'<td class="nw">{esc(r.event)}</td>'
        f"<td>{esc(', '.join(map(seg_name, r.segments_from)) or '–')}</td>"
        f"<td>{esc(', '.join(map(seg_name, r.segments_to)) or '–')}</td>"
        f"<td class=\"num\">{'' if pd.isna(r.value) else f'{r.value:.3f}'}</td>"
        + _sig_cells(r, has_sig) +
        f'<td class="wrap">{esc(r.detail)}</td></tr>'
        for r in table_rows.itertuples(index=False))
    sig_head = "<th>p-value</th><th>stability</th>" if has_sig else ""
    return (f"<table><tr><th>snapshot</th><th>event</th><th>from</th><th>to</th>"
            f"<th>value</th>{sig_head}<th>detail</th></tr>{rows}</table>")


def _left_out_note(candidates: pd.DataFrame | None) -> str:
    """How many candidate events were not reported, by reason (lifecycle_candidates)."""
    if candidates is None:
        return ""
    out = candidates[~candidates["reported"].astype(bool)]
    if not len(out):
        return " No candidate event was left out."
    why = out["reason"].astype(str).str.split(":").str[0].value_counts()
    return (f' {len(out):,} candidate events were not reported (' + esc(
        ", ".join(f"{k}: {int(v)}" for k, v in why.items())) + '; all of them, with '
        'their reasons, are in tracking/lifecycle_candidates.parquet).')


def _lifecycle_note(life: pd.DataFrame, has_sig: bool, left_out: str) -> str:
    """What the timeline shows, the count per kind, and what was left out."""
    counts = life["event"].value_counts()
    return ('<p class="note">Events in tracking/lifecycle.parquet at the snapshot '
            'where they are observed; marker shape = kind, colour = segment. Hover '
            'a marker for details. Counts: '
            + esc(", ".join(f"{k} {int(counts.get(k, 0))}" for k in LIFECYCLE_EVENTS)) + "."
            + (" Reported are the events that pass the significance tests "
               "(stability over re-clustered half-samples, a p-value that the "
               "segments involved are new or gone, no flip-flop within 2 "
               "snapshots); the table lists the most significant first."
               if has_sig else "") + left_out + "</p>")


def _lifecycle(tr: Tracking, short, colors) -> str:
    """The lifecycle section: note, marker legend, timeline and the table of events."""
    life = tr.lifecycle.sort_values(["snapshot", "event"], kind="stable")
    has_sig = "p_value" in life.columns and "stability" in life.columns
    grey = 'fill="#ccc" class="ev"'
    shapes = "".join(
        f'<span class="item"><svg width="18" height="18" viewBox="0 0 18 18">'
        f'{marker(k, 9, 9, 6, grey)}</svg> {k}</span>' for k in LIFECYCLE_EVENTS)
    table = _lifecycle_table(life, tr.labels, has_sig)
    return (_lifecycle_note(life, has_sig, _left_out_note(tr.candidates))
            + f'<div class="legend shapes">{shapes}</div>'
            + svg_timeline(tr.order, tr.labels, short, life, colors) + table)


def _trends(tr: Tracking, colors) -> str:
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
        opened = " open" if snap == t["snapshot"].max() else ""
        label = tr.labels.get(int(snap), f"t{snap}")
        blocks.append(f"<details{opened}><summary>{esc(label)} · {len(rows)} rising</summary>"
                      "<table><tr><th>segment</th><th>kind</th><th>item / keyword</th>"
                      "<th>share</th><th>users</th><th>p-value</th></tr>"
                      f"{_trend_rows(rows, colors)}</table></details>")
    return note + "".join(blocks)


def _trend_rows(rows: pd.DataFrame, colors) -> str:
    """One table row per rising key: segment, kind, key (and its label), share, users, p."""
    return "".join(
        f'<tr><td class="nw"><span class="sw" style="background:'
        f'{colors.get(int(r.segment_id), "#999")}"></span>{esc(seg_name(r.segment_id))}'
        f'</td><td>{esc(r.kind)}</td><td class="wrap">{esc(r.key)}'
        + (f'<br><span class="note">{esc(r.label)}</span>'
           if isinstance(getattr(r, "label", None), str) and r.label
           and r.label != r.key else "") + '</td>'
        f'<td class="num">{100 * r.previous_share:.0f}% → {100 * r.share:.0f}%</td>'
        f'<td class="num">{int(r.n_users):,}</td><td class="num">{r.p_value:.2g}</td></tr>'
        for r in rows.itertuples(index=False))


def _tracked_keywords(tr: Tracking, colors) -> str:
    """The keywords section: one collapsible table per snapshot, the latest open."""
    blocks = []
    for t in tr.order:
        s = tr.snapshots[tr.snapshots["snapshot"] == t].sort_values(
            ["size", "segment_id"], ascending=[False, True])
        rows = [(int(r.segment_id), int(r.size), list(r.keywords),
                 list(r.representative_texts)) for r in s.itertuples(index=False)]
        opened = " open" if t == tr.order[-1] else ""
        blocks.append(f"<details{opened}><summary>{esc(tr.labels[t])} · {len(rows)} "
                      f"segments</summary>{segment_table(rows, colors)}</details>")
    return ('<p class="note">Per snapshot (latest open): top keywords by class-based '
            'TF-IDF and the texts closest to each segment centroid.</p>' + "".join(blocks))


def _tracked_status(tr: Tracking, ids: set) -> str:
    """The header's status line: snapshots, their span, users, segments, events."""
    n_users = tr.assignments["user_id"].nunique()
    first_day = tr.labels[tr.order[0]].split(" · ", 1)[1].split(" – ")[0]
    last_day = tr.labels[tr.order[-1]].split(" – ")[-1]
    return (f"{len(tr.order)} snapshot(s) from {first_day} to {last_day}; "
            f"{n_users:,} users tracked; "
            f"{len(ids - {NOISE}):,} segment ids; {len(tr.lifecycle):,} lifecycle events")


def tracked_sections(tr: Tracking, max_map_points: int) -> tuple[list, str]:
    """The sections ``(id, heading, html)`` of a tracked run, and its status line."""
    ids = _tracked_ids(tr)
    colors = segment_colors(ids)
    latest_kw = {int(r.segment_id): list(r.keywords) for r in
                 tr.snapshots.sort_values("snapshot").itertuples(index=False)}
    short = [f"t{t} · {tr.labels[t].split(' · ', 1)[1].split(' – ')[1]}" for t in tr.order]
    leg = legend(sorted(ids), colors, latest_kw)
    sections = [
        ("map", "Map of users", _tracked_map(tr, colors, leg, max_map_points)),
        ("sizes", "Segment sizes over time", _tracked_sizes(tr, short, colors, leg)),
        ("transitions", "Transitions between snapshots", _transitions(tr, short, colors)),
        ("lifecycle", "Lifecycle events", _lifecycle(tr, short, colors)),
        ("trends", "Trending inside segments", _trends(tr, colors)),
        ("keywords", "Keywords and representative texts", _tracked_keywords(tr, colors)),
    ]
    return sections, _tracked_status(tr, ids)


# --------------------------------------------------------------------------------------------
# a run without tracking
# --------------------------------------------------------------------------------------------

def _static_map(users: pd.DataFrame, colors, leg: str, kw: dict, max_map_points: int) -> str:
    """The map section: users by a PCA of their vectors (or soft memberships), or why not."""
    coords, how = _static_coordinates(users)
    if coords is None:
        return f'<p class="note warn">No map: {esc(how)}.</p>'
    p = pd.DataFrame({"user_id": users["user_id"].astype(str), "x": coords[:, 0],
                      "y": coords[:, 1], "segment": users["segment"].to_numpy()})
    shown = sample_users(p, max_map_points)
    note = (f'<p class="note">Each dot is a user, placed by a {esc(how)}; colour = '
            'segment, grey = noise.</p>')
    if len(shown) < len(p):
        note += (f'<p class="note warn" id="map-sample-note">Subsampled: {len(shown):,} '
                 f'of {len(p):,} users are drawn (at most {max_map_points:,}; a '
                 'deterministic sample by a hash of user_id).</p>')

    def describe(_snap, sid, n):
        return f"{seg_name(sid)}: {n:,} users shown · {', '.join(kw.get(sid, [])[:5])}"

    return note + leg + svg_map([(0, shown)], {0: "segments"}, colors, describe)


def _static_sizes(seg: pd.DataFrame, users: pd.DataFrame, colors) -> str:
    """The sizes section: one bar per segment (and noise), largest first."""
    sizes = [(int(r.segment), int(r.size), ", ".join(r.keywords)[:200])
             for r in seg.itertuples(index=False)]
    n_noise = int((users["segment"] == NOISE).sum())
    if n_noise and NOISE not in set(seg["segment"]):
        sizes.append((NOISE, n_noise, "users in no segment"))
    sizes.sort(key=lambda r: (-r[1], r[0]))
    return ('<p class="note">Users per segment (segments.parquet).</p>'
            + svg_static_sizes(sizes, colors))


def _static_keywords(seg: pd.DataFrame, colors) -> str:
    """The keywords section: one table of the segments, largest first."""
    texts = "representative_texts" in seg.columns
    rows = [(int(r.segment), int(r.size), list(r.keywords),
             list(r.representative_texts) if texts else None)
            for r in seg.sort_values(["size", "segment"], ascending=[False, True])
            .itertuples(index=False)]
    return ('<p class="note">Top keywords per segment (segments.parquet)'
            + ("" if texts else "; segments.parquet has no representative_texts "
               "column") + ".</p>" + segment_table(rows, colors))


def static_sections(run: Run, max_map_points: int) -> tuple[list, str]:
    """The sections ``(id, heading, html)`` of a run without tracking, and its status line:
    each tracking-only section says that tracking was not run."""
    seg, users = run.segments, run.users
    ids = set(seg["segment"].tolist()) | set(users["segment"].tolist())
    colors = segment_colors(ids)
    kw = {int(r.segment): list(r.keywords) for r in seg.itertuples(index=False)}
    leg = legend(sorted(ids), colors, kw)
    sections = [
        ("map", "Map of users", _NOT_RUN + _static_map(users, colors, leg, kw, max_map_points)),
        ("sizes", "Segment sizes", _NOT_RUN + _static_sizes(seg, users, colors)),
        ("transitions", "Transitions between snapshots", _NOT_RUN),
        ("lifecycle", "Lifecycle events", _NOT_RUN),
        ("trends", "Trending inside segments", _NOT_RUN),
        ("keywords", "Keywords and representative texts", _static_keywords(seg, colors)),
    ]
    status = (f"tracking was not run; {len(users):,} users in "
              f"{len(ids - {NOISE}):,} segments")
    return sections, status

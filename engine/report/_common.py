"""Names every part of the report shares: the lifecycle event kinds, the noise id, one
colour per segment id, segment names and HTML escaping."""

from __future__ import annotations

import colorsys
import html

__all__ = ["LIFECYCLE_EVENTS", "NOISE", "NOISE_COLOR", "esc", "seg_name", "segment_colors"]

LIFECYCLE_EVENTS = ("appear", "vanish", "split", "merge", "drift")
NOISE = -1
NOISE_COLOR = "#a3a3a3"
# Tableau-10 without its grey (grey means noise here), then ten darker/distinct hues; segments
# beyond these get golden-angle hues. Colours are assigned by rank of the segment id among all
# ids of the run, so one id has one colour in every plot of a report.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1", "#b5179e", "#006d77",
)


def esc(value) -> str:
    """``str(value)`` HTML-escaped, quotes included (safe in text and in attributes)."""
    return html.escape(str(value), quote=True)


def seg_name(sid: int) -> str:
    """``"S3"`` for segment 3, ``"noise"`` for the noise id."""
    return "noise" if sid == NOISE else f"S{sid}"


def segment_colors(ids) -> dict[int, str]:
    """One ``#rrggbb`` per segment id (by rank among ``ids``), grey for noise."""
    out = {NOISE: NOISE_COLOR}
    for rank, sid in enumerate(sorted({int(i) for i in ids if int(i) != NOISE})):
        if rank < len(_PALETTE):
            out[sid] = _PALETTE[rank]
        else:
            r, g, b = colorsys.hls_to_rgb(((rank * 137.508) % 360) / 360, 0.45, 0.6)
            out[sid] = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return out

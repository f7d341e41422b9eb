"""The page around the drawings: its CSS and its one script (allowed by hash in the
Content-Security-Policy), the legend, the segment and summary tables, and the assembly of
the sections into one HTML document."""

from __future__ import annotations

import base64
import hashlib

from ._common import NOISE, NOISE_COLOR, esc, seg_name

__all__ = ["legend", "page", "segment_table"]

_TEXT_CLIP = 400  # characters of one representative text shown

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
    """The CSP source that allows the inline script ``js``."""
    return "sha256-" + base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode()


def legend(ids, colors, keywords: dict) -> str:
    """One swatch per segment id (noise last) with its first three keywords; hovering one
    highlights that segment in every plot."""
    items = []
    for sid in sorted(ids, key=lambda s: (s == NOISE, s)):
        kw = ", ".join(keywords.get(sid, [])[:3])
        text = seg_name(sid) + (f" · {kw}" if kw else "")
        items.append(f'<span class="item" data-seg="{sid}"><span class="sw" '
                     f'style="background:{colors.get(sid, NOISE_COLOR)}"></span>'
                     f'{esc(text)}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _texts_cell(texts: list[str]) -> str:
    """A table cell listing representative texts, each clipped to ``_TEXT_CLIP`` characters."""
    if not texts:
        return "<td>–</td>"
    lis = "".join(f"<li>{esc(t if len(t) <= _TEXT_CLIP else t[:_TEXT_CLIP - 1] + '…')}</li>"
                  for t in texts)
    return f'<td class="wrap"><ul>{lis}</ul></td>'


def segment_table(rows, colors) -> str:
    """rows: (segment, size, keywords list, texts list or None)."""
    has_texts = any(r[3] is not None for r in rows)
    head = ("<tr><th>segment</th><th>users</th><th>keywords</th>"
            + ("<th>representative texts</th>" if has_texts else "") + "</tr>")
    body = []
    for sid, size, kws, texts in rows:
        body.append(f'<tr><td><span class="sw" style="background:'
                    f'{colors.get(sid, NOISE_COLOR)}"></span> {esc(seg_name(sid))}</td>'
                    f'<td class="num">{size:,}</td>'
                    f'<td class="wrap">{esc(", ".join(kws)) or "–"}</td>'
                    + (_texts_cell(texts or []) if has_texts else "") + "</tr>")
    return f'<table class="segtable">{head}{"".join(body)}</table>'


def _summary_table(summary: dict | None) -> str:
    """summary.json's scalar entries (and flat lists / dicts) in a collapsed table."""
    if not summary:
        return ""
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}: {b}" for a, b in v.items()
                          if not isinstance(b, (dict, list)))
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        rows.append(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>")
    return (f"<details><summary>run summary (summary.json)</summary><table>{''.join(rows)}"
            "</table></details>")


def page(title: str, run_name: str, status: str, summary: dict | None, sections) -> str:
    """The HTML document: header (title, status line, summary, navigation), one
    ``<section>`` per ``(id, heading, html)`` of ``sections``, the script last."""
    nav = "".join(f'<a href="#{sid}">{esc(head)}</a>' for sid, head, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(head)}</h2>{content}</section>'
                   for sid, head, content in sections)
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src '{_script_hash(_JS)}'; base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style><style id=\"focus-style\"></style>"
        f"</head><body><header><h1>{esc(title)}</h1>"
        f'<div class="note" id="run-status">{esc(run_name)}: {esc(status)}</div>'
        f"{_summary_table(summary)}<nav>{nav}</nav></header><main>{body}</main>"
        f"<script>{_JS}</script></body></html>\n")

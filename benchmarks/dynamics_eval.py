"""Segment tracking on the planted scenario: lifecycle events and segment recovery per seed.

For every seed: ``interestflow.planted.make_planted_scenario(random_state=seed)`` (defaults: 160
users, 6 windows of 30 days, ~3,000 texts), the texts encoded once with the default
``Encoder``, then ``SegmentTracker()`` with default settings fitted on the event vectors and
scored by ``interestflow.planted.evaluate_tracking``: precision and recall of the planted
lifecycle events (same window, same kind, same planted segments on both sides) per kind and
overall, and the adjusted Rand index between tracked and planted segments in every snapshot.

Ablations from the same vectors in the same run, as baselines for the matching rule:
``match_weight=1.0`` (ids matched on centroid cosine only) and ``match_weight=0.0`` (member
Jaccard only).

Bar (issue 5): precision and recall >= 0.9 and ARI >= 0.9 in every snapshot, with defaults.
Results: ``benchmarks/results/dynamics.{json,md}``.

    python benchmarks/dynamics_eval.py                 # seeds 0 1 2 3 4
    python benchmarks/dynamics_eval.py --seeds 7 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

BAR = 0.9
STAGES = ("user_vectors_s", "choose_k_s", "cluster_s", "match_s", "labels_s", "map_s",
          "total_s")
ABLATIONS = {"centroid-only matching (match_weight=1)": {"match_weight": 1.0},
             "member-only matching (match_weight=0)": {"match_weight": 0.0}}


def run_seed(seed: int, encoder) -> dict:
    from interestflow.dynamics import SegmentTracker
    from interestflow.planted import evaluate_tracking, make_planted_scenario

    t = time.perf_counter()
    scn = make_planted_scenario(random_state=seed)
    gen_s = time.perf_counter() - t
    ev = scn.events
    texts = ev["text"].tolist()
    t = time.perf_counter()
    vecs = encoder.encode(texts)
    enc_s = time.perf_counter() - t
    tr = SegmentTracker().fit(vecs, ev["user_id"], ev["ts"], texts=texts)
    r = evaluate_tracking(scn, tr.assignments_, tr.lifecycle_)
    out = {
        "seed": seed, "n_users": int(ev["user_id"].nunique()), "n_events": len(ev),
        "n_windows": scn.n_windows, "generate_s": gen_s, "encode_s": enc_s,
        "texts_per_s": len(ev) / enc_s, "timings": dict(tr.timings_),
        "k_per_snapshot": tr.windows_["n_segments"].tolist(),
        "k_planted": [int(scn.truth_labels(w).nunique()) for w in range(scn.n_windows)],
        "init_per_snapshot": tr.windows_["init"].tolist(),
        "ari": r["ari"], "ari_min": r["ari_min"], "precision": r["precision"],
        "recall": r["recall"], "per_kind": r["per_kind"], "missed": r["missed"],
        "spurious": r["spurious"],
        "lifecycle": [[int(x.snapshot), x.event, list(map(int, x.segments_from)),
                       list(map(int, x.segments_to)), float(x.value)]
                      for x in tr.lifecycle_.itertuples()],
        "ablations": {},
    }
    for name, kw in ABLATIONS.items():
        ab = SegmentTracker(**kw).fit(vecs, ev["user_id"], ev["ts"])
        ra = evaluate_tracking(scn, ab.assignments_, ab.lifecycle_)
        out["ablations"][name] = {"precision": ra["precision"], "recall": ra["recall"],
                                  "ari_min": ra["ari_min"], "missed": ra["missed"],
                                  "spurious": ra["spurious"]}
    return out


def _fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def markdown(rows: list[dict]) -> str:
    from interestflow.planted import EVENT_KINDS

    lines = ["Planted scenario (defaults: 160 users, 6 windows of 30 days), "
             "`SegmentTracker()` defaults.", "",
             "| seed | events | precision | recall | ARI per snapshot | min ARI | K tracked / "
             "planted | bar |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["precision"] >= BAR and r["recall"] >= BAR and r["ari_min"] >= BAR
        lines.append(f"| {r['seed']} | {r['n_events']} | {_fmt(r['precision'])} | "
                     f"{_fmt(r['recall'])} | {' '.join(f'{a:.3f}' for a in r['ari'])} | "
                     f"{_fmt(r['ari_min'])} | {r['k_per_snapshot']} / {r['k_planted']} | "
                     f"{'met' if ok else 'NOT met'} |")
    lines += ["", "Per event kind (precision / recall, all seeds pooled):", "",
              "| kind | planted | detected | precision | recall |", "|---|---|---|---|---|"]
    for kind in EVENT_KINDS:
        n_p = sum(r["per_kind"][kind]["n_planted"] for r in rows)
        n_d = sum(r["per_kind"][kind]["n_detected"] for r in rows)
        tp_p = sum(r["per_kind"][kind]["recall"] * r["per_kind"][kind]["n_planted"]
                   for r in rows if r["per_kind"][kind]["n_planted"])
        tp_d = sum(r["per_kind"][kind]["precision"] * r["per_kind"][kind]["n_detected"]
                   for r in rows if r["per_kind"][kind]["n_detected"])
        lines.append(f"| {kind} | {n_p} | {n_d} | {_fmt(tp_d / n_d if n_d else float('nan'))}"
                     f" | {_fmt(tp_p / n_p if n_p else float('nan'))} |")
    same = all(a["precision"] == r["precision"] and a["recall"] == r["recall"]
               and a["ari_min"] == r["ari_min"] for r in rows for a in r["ablations"].values())
    lines += ["", "Baselines (same vectors, same run): matching rule ablations."
              + (" They score the same as the defaults on every seed here: the planted "
                 "segments differ in both content and membership, so either signal alone "
                 "matches them." if same else ""), "",
              "| method | seed | precision | recall | min ARI |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| defaults (match_weight=0.5) | {r['seed']} | {_fmt(r['precision'])} | "
                     f"{_fmt(r['recall'])} | {_fmt(r['ari_min'])} |")
        for name, a in r["ablations"].items():
            lines.append(f"| {name} | {r['seed']} | {_fmt(a['precision'])} | "
                         f"{_fmt(a['recall'])} | {_fmt(a['ari_min'])} |")
    lines += ["", "Time per stage (s, median over seeds; the tracker's stages exclude "
              "encoding):", "", "| stage | median | min | max |", "|---|---|---|---|"]
    for stage in ("encode_s",) + STAGES:
        vals = [r["encode_s"] if stage == "encode_s" else r["timings"][stage] for r in rows]
        lines.append(f"| {stage} | {statistics.median(vals):.3f} | {min(vals):.3f} | "
                     f"{max(vals):.3f} |")
    tps = statistics.median(r["texts_per_s"] for r in rows)
    lines += ["", f"Encoding: {tps:.1f} texts/s (median)."]
    misses = [(r["seed"], m) for r in rows for m in r["missed"]]
    spur = [(r["seed"], m) for r in rows for m in r["spurious"]]
    if misses or spur:
        lines += ["", "Missed: " + "; ".join(f"seed {s}: {m}" for s, m in misses),
                  "", "Spurious: " + "; ".join(f"seed {s}: {m}" for s, m in spur)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="scenario seeds (default 0 1 2 3 4)")
    p.add_argument("--no-write", action="store_true", help="print only, write no results")
    args = p.parse_args(argv)

    from interestflow import Encoder

    encoder = Encoder()
    encoder.encode(["warm-up text for the encoder"] * 8)
    rows = []
    for seed in args.seeds:
        r = run_seed(seed, encoder)
        rows.append(r)
        print(f"seed {seed}: P {r['precision']:.3f} R {r['recall']:.3f} ARI "
              f"{np.round(r['ari'], 3).tolist()} tracker {r['timings']['total_s']:.2f}s "
              f"encode {r['encode_s']:.1f}s", flush=True)
    md = markdown(rows)
    print(md)
    if not args.no_write:
        met = all(r["precision"] >= BAR and r["recall"] >= BAR and r["ari_min"] >= BAR
                  for r in rows)
        jp, mp = write_results("dynamics", {"bar": BAR, "bar_met": met, "seeds": rows}, md)
        print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

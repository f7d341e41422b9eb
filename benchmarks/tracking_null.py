"""Are the tracker's lifecycle events real? Real vs permuted timestamps (issue 14).

Null test: the same events with their timestamps randomly permuted across all events (the
same texts, the same number of events per window, no dynamics left) are tracked with the
same windows and defaults (``InterestEngine().track(events, freq=...)``). Every split /
merge / appear / vanish event reported on permuted data is noise; the bar is at most one
per 10 snapshot transitions. The real data's counts are printed beside them, and both the
reported events (``lifecycle_``) and every candidate before the significance tests
(``lifecycle_candidates_``) are counted. Drift is listed but not part of the bar.

Windows: Amazon yearly (``365D``), MovieLens ratings half-yearly (``182D``), each event's
text as in ``benchmarks/recsys_eval.py`` (review text; the rated movie's text). The
planted scenario (``interestflow.planted``, seeds 0-2) is tracked in the same run: the
same defaults must keep event precision and recall >= 0.9 for every kind.

Usage::

    python benchmarks/tracking_null.py --data ../shared/data [--dataset amazon] [--seeds 0,1,2]

Writes ``benchmarks/results/tracking_null[_<dataset>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import write_results  # noqa: E402

FREQ = {"amazon": "365D", "movielens_ratings": "182D"}
STRUCTURAL = ("split", "merge", "appear", "vanish")
KINDS = (*STRUCTURAL, "drift")


def _counts(df: pd.DataFrame) -> dict:
    vc = df["event"].value_counts()
    return {k: int(vc.get(k, 0)) for k in KINDS}


def track_counts(engine, events: pd.DataFrame, freq: str) -> dict:
    t0 = time.perf_counter()
    tr = engine.track(events[["user_id", "text", "ts"]], freq=freq)
    n_tr = int(tr.n_snapshots_) - 1
    rep, cand = _counts(tr.lifecycle_), _counts(tr.lifecycle_candidates_)
    n_struct = sum(rep[k] for k in STRUCTURAL)
    return {"transitions": n_tr, "reported": rep, "candidates": cand,
            "structural_reported": n_struct,
            "per_10_transitions": 10.0 * n_struct / max(n_tr, 1),
            "k_per_snapshot": tr.windows_["n_segments"].tolist(),
            "users_per_snapshot": tr.windows_["n_users"].tolist(),
            "seconds": time.perf_counter() - t0}


def evaluate(name: str, data: Path, encoder, seeds) -> dict:
    import recsys_eval as R

    from interestflow import InterestEngine

    events, _ = R.LOADERS[name](data)
    texts = list(dict.fromkeys(events["text"]))
    t0 = time.perf_counter()
    vecs = encoder.encode(texts)
    t_enc = time.perf_counter() - t0
    engine = InterestEngine(encoder=R.MemoEncoder(encoder, texts, vecs), show_progress=False)
    print(f"== {name}: {len(events):,} events, {events['user_id'].nunique():,} users, "
          f"windows {FREQ[name]}; encoded {len(texts):,} texts in {t_enc:.0f}s", flush=True)
    runs = {"real": track_counts(engine, events, FREQ[name])}
    for seed in seeds:
        ev = events.copy()
        ev["ts"] = np.random.default_rng(seed).permutation(ev["ts"].to_numpy())
        runs[f"permuted (seed {seed})"] = track_counts(engine, ev, FREQ[name])
    for label, r in runs.items():
        print(f"   {label:20s} {r['transitions']} transitions: reported {r['reported']} "
              f"({r['per_10_transitions']:.2f} structural per 10); candidates "
              f"{r['candidates']}; K {r['k_per_snapshot']}", flush=True)
    worst = max(r["per_10_transitions"] for k, r in runs.items() if k != "real")
    return {"n_events": len(events), "freq": FREQ[name], "encode_s": t_enc, "runs": runs,
            "worst_permuted_per_10": worst, "bar_met": bool(worst <= 1.0)}


def planted(seeds, encoder) -> dict:
    from interestflow import InterestEngine
    from interestflow.planted import evaluate_tracking, make_planted_scenario

    engine = InterestEngine(encoder=encoder, show_progress=False)
    out = {}
    for seed in seeds:
        sc = make_planted_scenario(random_state=seed)
        tr = engine.track(sc.events, freq=sc.freq)
        s = evaluate_tracking(sc, tr.assignments_, tr.lifecycle_)
        out[str(seed)] = {k: {"precision": v["precision"], "recall": v["recall"]}
                          for k, v in s["per_kind"].items()}
        print(f"== planted seed {seed}: " + ", ".join(
            f"{k} P {v['precision']:.2f} R {v['recall']:.2f}" for k, v in s["per_kind"].items()),
            flush=True)
    worst = min(min(v["precision"], v["recall"]) for d in out.values() for v in d.values())
    return {"per_seed": out, "worst": worst, "bar_met": bool(worst >= 0.9)}


def markdown(results: dict, plant: dict) -> str:
    out = ["Lifecycle events with the defaults, real timestamps vs the same events with "
           "timestamps permuted across all events (no dynamics left). \"structural\" = "
           "split + merge + appear + vanish reported; bar: <= 1 per 10 transitions on "
           "permuted data. Counts are reported (candidates before the significance tests).",
           ""]
    for name, r in results.items():
        out += [f"## {name} (windows {r['freq']}, {r['n_events']:,} events)", "",
                "| run | transitions | split | merge | appear | vanish | drift | structural "
                "per 10 transitions |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, run in r["runs"].items():
            cells = " | ".join(f"{run['reported'][k]} ({run['candidates'][k]})" for k in KINDS)
            out.append(f"| {label} | {run['transitions']} | {cells} | "
                       f"**{run['per_10_transitions']:.2f}** |")
        out += ["", f"Worst permuted run: {r['worst_permuted_per_10']:.2f} per 10 transitions; "
                f"bar met: {r['bar_met']}.", ""]
    out += ["## planted scenario (same defaults)", "",
            "| seed | " + " | ".join(f"{k} P / R" for k in KINDS) + " |",
            "|---|" + "---|" * len(KINDS)]
    for seed, d in plant["per_seed"].items():
        out.append(f"| {seed} | " + " | ".join(
            f"{d[k]['precision']:.2f} / {d[k]['recall']:.2f}" for k in KINDS) + " |")
    out += ["", f"Worst precision or recall: {plant['worst']:.2f}; bar (>= 0.9) met: "
            f"{plant['bar_met']}."]
    return "\n".join(out)


def main(argv=None) -> int:
    import recsys_eval as R

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dataset", choices=[*FREQ, "all"], default="all")
    ap.add_argument("--seeds", default="0,1,2", help="permutation seeds (default 0,1,2)")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    wanted = list(FREQ) if a.dataset == "all" else [a.dataset]
    if R.data_missing("tracking_null", a.data, wanted):
        return 0
    from interestflow import Encoder

    encoder = Encoder()
    results = {name: evaluate(name, a.data, encoder, seeds) for name in wanted}
    plant = planted([0, 1, 2], encoder)
    out = "tracking_null" + ("" if a.dataset == "all" else f"_{a.dataset}")
    jp, mp = write_results(out, {"seeds": seeds, "datasets": results, "planted": plant},
                           markdown(results, plant))
    print(f"\nwrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``interestflow demo``, ``run``, ``report`` and ``score``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path



def _n_segments(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-segments must be 'auto' or an int, got {value!r}")


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interestflow",
                                description="LLM-based user-interest clustering and recommendation")
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    sub = p.add_subparsers(dest="command", required=True)

    _add_demo_parser(sub)
    _add_run_parser(sub)
    _add_report_parser(sub)
    _add_score_parser(sub)
    return p


def _add_demo_parser(sub) -> None:
    """Add the ``demo`` command (the whole pipeline on generated data)."""
    d = sub.add_parser("demo", help="run the whole pipeline on generated data (no files, no network)")
    d.add_argument("--users", type=int, default=400, help="number of generated users (default 400)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="interestflow-demo",
                   help="run directory the demo writes (tables, model, report.html); "
                        "default ./interestflow-demo")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_run_parser(sub) -> None:
    """Add the ``run`` command (fit on an event file, write the outputs)."""
    r = sub.add_parser("run", help="fit on an event file and write vectors, segments, recommendations")
    r.add_argument("--events", required=True, help="events file: CSV, Parquet or JSONL")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--items", help="optional items file with item_id, text")
    r.add_argument("--k", type=int, default=10, help="recommendations per user (default 10)")
    r.add_argument("--n-segments", type=_n_segments, default="auto")
    r.add_argument("--half-life-days", type=float, default=30.0)
    r.add_argument("--ranker", choices=["lightgbm", "none"], default="lightgbm",
                   help="lightgbm (default): candidates of every source ranked by a learned "
                        "LightGBM model; none: the fusion recommender (faster fit)")
    r.add_argument("--model", default=None, help="local Hugging Face encoder directory "
                   "(default: the packaged all-MiniLM-L6-v2)")
    r.add_argument("--dtype", default="auto", help="encoder dtype: auto, float32, bfloat16, float16")
    r.add_argument("--embedding-cache", default=None, metavar="PATH",
                   help="persistent embedding store (one SQLite file): texts encoded before "
                        "are looked up, new ones written; refused if made by another encoder")
    for col in ("user", "text", "ts", "item", "weight"):
        r.add_argument(f"--{col}-col", default=None,
                       help=f"name of the column holding {col} (renamed to the standard name)")
    _add_ts_unit(r)
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_report_parser(sub) -> None:
    """Add the ``report`` command (one HTML report of a run directory)."""
    rp = sub.add_parser("report", help="write one self-contained HTML report of a run directory")
    rp.add_argument("run_dir", help="run directory written by `interestflow run` or `demo`")
    rp.add_argument("-o", "--output", default=None,
                    help="output HTML file (default RUN_DIR/report.html)")
    rp.add_argument("--title", default=None, help="page title (default: the run directory name)")
    rp.add_argument("--max-map-points", type=int, default=2000,
                    help="users drawn per snapshot on the map; above it a deterministic "
                         "sample is drawn (default 2000)")


def _add_score_parser(sub) -> None:
    """Add the ``score`` command (score a large event table in chunks)."""
    sc = sub.add_parser("score", help="score every user of a (large) event table with a saved "
                        "model, in chunks of bounded memory; resumable after a kill")
    sc.add_argument("--events", required=True,
                    help="events: Parquet file, folder or glob (CSV/JSONL too)")
    sc.add_argument("--model-dir", required=True, help="saved InterestEngine directory")
    sc.add_argument("--out", required=True, help="output folder (new, or this job's folder to "
                    "resume it)")
    sc.add_argument("--items", default=None, help="items to recommend instead of the model's: "
                    "item_id and a vector column or text")
    sc.add_argument("--k", type=int, default=10, help="recommendations per user (default 10)")
    sc.add_argument("--chunk-users", type=int, default=None,
                    help="users per chunk (default 50000, or from --max-memory)")
    sc.add_argument("--max-memory", default=None,
                    help="memory budget of one scoring process, e.g. 2GB; sets --chunk-users")
    sc.add_argument("--vector-col", default=None,
                    help="column of precomputed vectors (events and/or items)")
    sc.add_argument("--index", default="auto", choices=("auto", "exact", "ivf"),
                    help="item retrieval (default auto)")
    sc.add_argument("--now", default=None, help="reference time of the decay: unix seconds or "
                    "ISO 8601 (default: the latest event)")
    sc.add_argument("--dask", default=None, metavar="ADDR|local[:N]",
                    help="run chunks on Dask: a scheduler address or local[:N] worker processes")
    for col, std in (("user", "user_id"), ("text", "text"), ("ts", "ts"), ("item", "item_id"),
                     ("weight", "weight")):
        sc.add_argument(f"--{col}-col", default=None,
                        help=f"name of the column holding {std} (default {std})")
    _add_ts_unit(sc)
    store = sc.add_mutually_exclusive_group()
    store.add_argument("--embedding-cache", default=None, metavar="PATH",
                       help="persistent embedding store for the texts (default: the model's, "
                            "else one for this job only, shared by its chunks)")
    store.add_argument("--no-embedding-cache", dest="embedding_cache", action="store_const",
                       const=False, help="no embedding store: each chunk encodes its own texts")
    sc.add_argument("--max-rejected", default=None, metavar="N|P%",
                    help="most rejected rows allowed: a count (100) or a share of the rows "
                         "(5%%, 0.05); above it the outputs and summary are still written, "
                         "then the command exits with status 3 (default: no limit; the "
                         "counts are always printed on stderr)")
    sc.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_ts_unit(parser) -> None:
    from .validation import TS_UNITS

    parser.add_argument("--ts-unit", default="s", choices=tuple(TS_UNITS),
                        help="unit of numeric timestamps (default s: unix seconds); times "
                             "outside 1990-01-01..2100-01-01 UTC are rejected")


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            return demo(n_users=args.users, random_state=args.seed,
                        show_progress=not args.no_progress,
                        out_dir=args.out)
        if args.command == "report":
            return report(args)
        if args.command == "score":
            return score(args)
        return run(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"interestflow: error: {exc}", file=sys.stderr)
        return 2


def demo(*, n_users: int = 400, random_state: int = 0, show_progress: bool = True,
         out=sys.stdout, out_dir="interestflow-demo", seed=None, progress=None) -> int:
    """The whole pipeline on generated data: segments, recommendations, then segments tracked
    over time on a planted scenario, written to ``out_dir`` with an HTML report.
    (``seed`` and ``progress`` are the deprecated names of ``random_state`` and
    ``show_progress``.)"""
    from ._utils import renamed
    from .outdir import check_run_dir, new_run_dir
    from .report import write_report

    seed = renamed("random_state", random_state, "seed", seed, 0)
    progress = renamed("show_progress", show_progress, "progress", progress, True)

    t0 = time.perf_counter()
    final = check_run_dir(out_dir, what="--out")  # before any work
    with new_run_dir(final, command="demo", what="--out") as tmp:
        engine, enc = _demo_fit(n_users, seed, progress, out)
        tracker, scores, scenario = _demo_tracking(engine, seed, out)
        _write_run_outputs(engine, enc, tmp, 10, t0)
        tracker.to_run_dir(tmp)
        write_report(tmp, tmp / "report.html", title="interestflow demo")
    print(f"\nwrote {final}/ (users, segments, recommendations, model, tracking tables) and "
          f"the report {final / 'report.html'}", file=out)
    print(f"\ndone in {time.perf_counter() - t0:.1f} s", file=out)
    return 0


def _demo_fit(n_users: int, seed: int, progress: bool, out):
    """Fit on generated users and print the segments, their recovery and recommendations."""
    from sklearn.metrics import adjusted_rand_score

    from .engine import InterestEngine
    from .datasets import make_demo_events

    data = make_demo_events(n_users=n_users, random_state=seed)
    ev = data.events
    print(f"interestflow demo: {ev['user_id'].nunique()} users, {len(ev)} events, "
          f"{len(data.items)} items, {len(data.topic_names)} planted interests "
          f"({', '.join(data.topic_names)})", file=out)
    engine = InterestEngine(show_progress=progress).fit(ev, data.items)
    enc = engine.encoder
    name = "all-MiniLM-L6-v2 (packaged)" if enc.is_default_model else str(enc.model_path)
    print(f"encoder: {name}, dtype {str(enc.dtype).replace('torch.', '')} "
          f"({enc.dtype_reason}), {engine.n_texts_encoded_} distinct texts in "
          f"{engine.timings_['encode_s']:.1f} s", file=out)

    summary = engine.segment_summary().sort_values("size", ascending=False)
    rule = {"use": "K by inner-split segment-popularity recall",
            "silhouette": "K by silhouette"}.get(engine.n_segments_rule_, engine.n_segments_rule_)
    print(f"\nsegments found: {engine.n_segments_} (n_segments='auto': {rule})", file=out)
    for row in summary.itertuples():
        print(f"  segment {row.segment:>2}  {row.size:>4} users  {row.keywords}", file=out)

    truth = data.user_topic.reindex(engine.user_ids_).to_numpy()
    ari = adjusted_rand_score(truth, engine.segments_)
    print(f"\nplanted interests recovered: adjusted Rand index = {ari:.3f} "
          f"(1.0 = perfect, 0 = chance)", file=out)

    users = list(engine.user_ids_[:: max(1, len(engine.user_ids_) // 3)][:3])
    recs = engine.recommend(users, k=5)
    item_text = data.items.set_index("item_id")["text"]
    print("\nexample recommendations (k=5):", file=out)
    for u in users:
        last = ev[ev["user_id"] == u].sort_values("ts")["text"].iloc[-1]
        print(f"  {u} (planted: {data.user_topic[u]}; latest: \"{_clip(last, 70)}\")", file=out)
        for r in recs[recs["user_id"] == u].itertuples():
            print(f"     {r.rank}. {r.item_id}  {r.score:+.3f}  {_clip(item_text.get(r.item_id, ''), 60)}",
                  file=out)
    return engine, enc


def _demo_tracking(engine, seed: int, out):
    """Track segments over the planted scenario's windows and score what was recovered."""
    from .datasets import evaluate_tracking, make_planted_scenario

    scenario = make_planted_scenario(random_state=seed)
    ev = scenario.events
    print(f"\nsegments over time: planted scenario, {ev['user_id'].nunique()} users, "
          f"{len(ev)} events, {scenario.n_windows} windows of {scenario.freq}", file=out)
    tracker = engine.track(ev, freq=scenario.freq)
    scores = evaluate_tracking(scenario, tracker.assignments_, tracker.lifecycle_)
    for row in tracker.lifecycle_.itertuples():
        print(f"  t{row.snapshot}: {row.event:<6} {list(row.segments_from)} -> "
              f"{list(row.segments_to)}", file=out)
    print(f"  lifecycle events vs planted: precision {scores['precision']:.2f}, recall "
          f"{scores['recall']:.2f}; segment recovery ARI per snapshot: min "
          f"{scores['ari_min']:.2f}", file=out)
    return tracker, scores, scenario


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run(args) -> int:
    from .encoder import Encoder
    from .engine import InterestEngine
    from .io import read_table
    from .outdir import check_run_dir, new_run_dir

    t0 = time.perf_counter()
    final = check_run_dir(args.out, what="--out")  # before reading or fitting anything
    # ids and text are read as written under the names this file uses (CSV has no types:
    # "007" stays "007" whether the column is called user_id or uid)
    user_col, item_col, text_col = (args.user_col or "user_id", args.item_col or "item_id",
                                    args.text_col or "text")
    events = read_table(args.events, string_columns=(user_col, item_col, text_col))
    rename = {getattr(args, f"{c}_col"): std for c, std in
              (("user", "user_id"), ("text", "text"), ("ts", "ts"), ("item", "item_id"),
               ("weight", "weight")) if getattr(args, f"{c}_col")}
    missing = [c for c in rename if c not in events.columns]
    if missing:
        raise ValueError(f"column(s) {missing} named by --*-col options are not in "
                         f"{args.events}; columns present: {list(events.columns)}")
    events = events.rename(columns=rename)
    keep = [c for c in ("user_id", "text", "ts", "item_id", "weight") if c in events.columns]
    events = events[keep] if "user_id" in keep and "text" in keep and "ts" in keep else events
    items = read_table(args.items, string_columns=(item_col, text_col)) if args.items else None
    if items is not None:  # the same --item-col / --text-col names apply to the items file
        items = items.rename(columns={k: v for k, v in ((args.item_col, "item_id"),
                                                         (args.text_col, "text"))
                                      if k and k in items.columns})
        events, items = _same_item_id_type(events, items)
    if args.k < 1:
        raise ValueError(f"--k={args.k} must be >= 1")

    # the run is written into a fresh folder that replaces --out as a whole (interestflow.outdir)
    with new_run_dir(final, command="run", what="--out") as out:
        encoder = Encoder(args.model, dtype=args.dtype, cache=args.embedding_cache)
        engine = InterestEngine(encoder=encoder, embedding_cache=args.embedding_cache,
                                n_segments=args.n_segments,
                                half_life_days=args.half_life_days,
                                ranker=None if args.ranker == "none" else args.ranker,
                                show_progress=not args.no_progress)
        engine.fit(events, items, ts_unit=args.ts_unit)
        summary = _write_run_outputs(engine, encoder, out, args.k, t0)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def _same_item_id_type(events, items):
    """Events and items files that disagree on the type of ``item_id`` (one has strings, e.g.
    CSV, the other integers, e.g. JSON numbers or Parquet int64): the integers are written
    as decimal strings, which is lossless.  Never the other way round, which would merge
    "007" and "7"; other combinations are left to the engine's type check."""
    import pandas as pd

    if "item_id" not in events.columns or "item_id" not in items.columns:
        return events, items

    def kind(col):
        if pd.api.types.is_integer_dtype(col.dtype):
            return "int"
        return "str" if pd.api.types.infer_dtype(col, skipna=True) == "string" else None

    ke, ki = kind(events["item_id"]), kind(items["item_id"])
    if {ke, ki} == {"int", "str"}:
        which = "items" if ki == "int" else "events"
        logging.getLogger(__name__).info("item_id: %s hold integers, the other file strings: "
                                         "comparing them as decimal strings", which)
        if ki == "int":
            items = items.assign(item_id=items["item_id"].astype(str))
        else:
            events = events.assign(item_id=events["item_id"].astype(str))
    return events, items


def _write_run_outputs(engine, encoder, out: Path, k: int, t0: float) -> dict:
    from .io import write_parquet

    feats = engine.user_features()
    feats.insert(2, "vector", list(engine.user_vectors_))
    write_parquet(feats, out / "users.parquet")
    seg = engine.segment_summary()
    seg["centroid"] = list(engine.segment_centroids_)
    write_parquet(seg, out / "segments.parquet")
    n_recs = 0
    if len(engine.item_ids_):
        recs = engine.recommend(engine.user_ids_, k=k)
        write_parquet(recs, out / "recommendations.parquet")
        n_recs = len(recs)
    engine.save(out / "model")
    summary = {
        "events": int(engine.n_events_), "users": int(len(engine.user_ids_)),
        "items": int(len(engine.item_ids_)), "distinct_texts": int(engine.n_texts_encoded_),
        "n_segments": int(engine.n_segments_), "recommendations": n_recs,
        "encoder": {"model": str(encoder.model_path), "dtype": str(encoder.dtype),
                    "dtype_reason": encoder.dtype_reason},
        "timings_s": {k: round(v, 3) for k, v in engine.timings_.items()},
        "wall_s": round(time.perf_counter() - t0, 3),
        "outputs": ["users.parquet", "segments.parquet"]
                   + (["recommendations.parquet"] if n_recs else []) + ["model/"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def report(args) -> int:
    """``interestflow report RUN_DIR [-o FILE]``: :func:`interestflow.report.write_report`."""
    from .outdir import locked_run_dir
    from .report import write_report

    run_dir = Path(args.run_dir).resolve()
    inside = args.output is None or run_dir in Path(args.output).resolve().parents
    # writing into the run folder: hold its lock, so no run replaces it meanwhile
    with locked_run_dir(run_dir) if inside else contextlib.nullcontext():
        path = write_report(args.run_dir, args.output, title=args.title,
                            max_map_points=args.max_map_points)
    print(f"report written to {path}")
    return 0


def score(args) -> int:
    """``interestflow score ...``: :func:`interestflow.batch.score`; prints the JSON summary."""
    from .batch import RejectedRowsError
    from .batch import score as batch_score

    now = args.now
    if now is not None:
        try:
            now = float(now)
        except ValueError:
            pass  # an ISO 8601 time, parsed by batch.score
    column_map = {std: getattr(args, f"{col}_col") for col, std in
                  (("user", "user_id"), ("text", "text"), ("ts", "ts"), ("item", "item_id"),
                   ("weight", "weight")) if getattr(args, f"{col}_col")}
    try:
        summary = batch_score(args.events, args.model_dir, args.out, items=args.items, k=args.k,
                              chunk_users=args.chunk_users, max_memory=args.max_memory,
                              vector_col=args.vector_col, index=args.index, now=now,
                              dask=args.dask, show_progress=False if args.no_progress else None,
                              column_map=column_map or None, ts_unit=args.ts_unit,
                              max_rejected=args.max_rejected,
                              embedding_cache=args.embedding_cache)
    except RejectedRowsError as exc:  # finished and written, but too many rows rejected
        print(json.dumps(exc.summary, indent=2, ensure_ascii=False))
        _print_rejected(exc.summary, args.out)
        print(f"interestflow: error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    _print_rejected(summary, args.out)
    return 0


def _print_rejected(summary: dict, out, n_examples: int = 5) -> None:
    """Rejected rows on stderr, whatever the limit: total, by reason, the first few."""
    rej = summary["rejected"]
    rows = int(summary["events"]["rows"])
    total = int(rej["total"])
    err = sys.stderr
    share = f" ({total / rows:.1%})" if rows else ""
    print(f"interestflow score: {total} of {rows} rows rejected{share}"
          + (":" if total else ""), file=err)
    if not total:
        return
    for reason, count in sorted(rej["by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"  {count:>10}  {reason}", file=err)
    examples = rej.get("examples", [])[:n_examples]
    if examples:
        print("  first rejected rows (row = 0-based across the input files):", file=err)
    for e in examples:
        print(f"    row {e['row']} ({Path(e['file']).name} row {e['file_row']}, user_id "
              f"{e['user_id']!r}): {e['reason']}", file=err)
    print(f"  every rejected row: {Path(out) / rej['file']}", file=err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

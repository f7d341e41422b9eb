"""Flatten the Douban DMR sample into interestflow's event and item files.

The sample stores one JSON object per sampled review, each with the user's full review
history under ``user_reviews``. This writes (outside the repository) ``events.jsonl``
(user_id, item_id, text, ts, weight=1) with one row per distinct (user, movie, date, text): the sample repeats a user's
history under each of their sampled reviews and
``items.jsonl`` (item_id, text from the movie's Chinese profile), so that

    python benchmarks/prepare_douban.py --data ../shared/data --out /tmp/douban
    interestflow run --events /tmp/douban/events.jsonl --items /tmp/douban/items.jsonl --out /tmp/douban/run

runs the Chinese data end to end. Empty review texts are counted and reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="/tmp/douban")
    args = ap.parse_args(argv)
    src = Path(args.data) / "douban_dmr_sample"
    if not (src / "reviews.json").is_file():
        print(f"skip: {src}/reviews.json not found (pass --data)", file=sys.stderr)
        return 0
    reviews = json.loads((src / "reviews.json").read_text(encoding="utf-8"))
    movies = json.loads((src / "movies.json").read_text(encoding="utf-8"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seen, n_empty, n_dup, rows = set(), 0, 0, []
    for rec in reviews.values():
        uid = rec["user_id"]
        for r in rec["user_reviews"].values():
            key = (uid, str(r["movie_id"]), r["date"], r["text"])
            if key in seen:
                n_dup += 1
                continue
            seen.add(key)
            if not str(r["text"]).strip():
                n_empty += 1
                continue
            rows.append({"user_id": uid, "item_id": str(r["movie_id"]), "text": r["text"],
                         "ts": r["date"], "weight": 1.0})
    with open(out / "events.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / "items.jsonl", "w", encoding="utf-8") as fh:
        for mid, m in movies.items():
            parts = [m.get("movie_name", "")]
            for field in ("genres", "directors", "actors", "producing_regions"):
                val = m.get(field) or []
                vals = list(val.values()) if isinstance(val, dict) else list(val)
                if vals:
                    parts.append(" ".join(map(str, vals[:5])))
            text = "；".join(p for p in parts if p)
            if text:
                fh.write(json.dumps({"item_id": str(mid), "text": text}, ensure_ascii=False) + "\n")
    print(json.dumps({"events": len(rows), "users": len({r['user_id'] for r in rows}),
                      "empty_texts_skipped": n_empty, "duplicates_skipped": n_dup,
                      "items": len(movies), "out": str(out)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

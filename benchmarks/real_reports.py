"""Track the real data sets with the defaults and write their HTML reports (issue 14).

Amazon (yearly windows) and MovieLens ratings (half-year windows), events as in
``benchmarks/tracking_null.py`` (with their item ids, so the reports show rising items).
The run directories and reports hold the data's texts, so they are written outside the
repository (``--out``, default ``/tmp/interestflow-real-reports``) and never committed; with
``--screenshot`` a headless Chromium saves a full-page PNG of each report beside it.

Usage::

    python benchmarks/real_reports.py --data ../shared/data [--out DIR] [--screenshot]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FREQ = {"amazon": "365D", "movielens_ratings": "182D"}


def screenshot(html: Path, png: Path, height: int = 9000) -> bool:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(n)), None)
    if exe is None:
        print("   no chromium on PATH: no screenshot")
        return False
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1280,{height}", f"--screenshot={png}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return png.is_file()


def main(argv=None) -> int:
    import recsys_eval as R

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/interestflow-real-reports"))
    ap.add_argument("--screenshot", action="store_true")
    a = ap.parse_args(argv)
    if R.data_missing("real_reports", a.data, list(FREQ)):
        return 0
    from interestflow import Encoder, InterestEngine
    from interestflow.report import write_report

    encoder = Encoder()
    for name, freq in FREQ.items():
        events, _ = R.LOADERS[name](a.data)
        texts = list(dict.fromkeys(events["text"]))
        vecs = encoder.encode(texts)
        engine = InterestEngine(encoder=R.MemoEncoder(encoder, texts, vecs),
                                show_progress=False)
        t0 = time.perf_counter()
        tr = engine.track(events[["user_id", "item_id", "text", "ts"]], freq=freq)
        run = a.out / name
        if run.exists():
            shutil.rmtree(run)
        tr.to_run_dir(run)
        html = write_report(run, run / "report.html", title=f"interestflow · {name} ({freq})")
        print(f"== {name}: {tr.n_snapshots_} snapshots, {len(tr.lifecycle_)} events reported "
              f"({len(tr.lifecycle_candidates_)} candidates), {len(tr.trends_)} rising "
              f"items/keywords; tracked in {time.perf_counter() - t0:.0f}s; report "
              f"{html.stat().st_size / 1e6:.1f} MB at {html}")
        if a.screenshot and screenshot(html, run / "report.png"):
            print(f"   screenshot {run / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

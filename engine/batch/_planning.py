"""Memory planning: users per chunk from ``max_memory`` (an estimate of one scoring
process's fixed cost and cost per user)."""

from __future__ import annotations

import math
import os

from ._common import GATHER_ROWS

#: Users per chunk when neither ``chunk_users`` nor ``max_memory`` is given.
DEFAULT_CHUNK_USERS = 50_000
#: Memory assumed for the scoring process besides the catalogue and the chunk: the numba
#: kernels' buffers and JIT, Arrow's pool, Parquet writer buffers.
RUNTIME_MARGIN_BYTES = 384 * 2**20
#: An encoder (all-MiniLM-L6-v2 and torch's working set) when events carry texts.
ENCODER_BYTES = 512 * 2**20


def _rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def bytes_per_row(dataset, files, fmt, columns, rows) -> float:
    """Estimated in-memory bytes of one staged row (for max_memory)."""
    if not rows:
        return 64.0
    if fmt == "parquet":
        total = 0
        for frag in dataset.get_fragments():
            md = frag.metadata
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for j in range(rg.num_columns):
                    col = rg.column(j)
                    if col.path_in_schema.split(".")[0] in columns:
                        total += col.total_uncompressed_size
        return max(32.0, total / rows + 16)
    size = sum(os.path.getsize(f) for f in files)
    compressed = any(str(f).endswith((".gz", ".bz2", ".xz", ".zst")) for f in files)
    return max(32.0, size * (5 if compressed else 1) / rows + 16)


def chunk_users_for_memory(max_memory: int, *, n_items: int, dim: int, n_seg: int, k: int,
                           rows_per_user: float, bytes_per_row: float, has_text: bool,
                           has_vector: bool, index: dict | None = None,
                           two_stage: dict | None = None) -> int:
    """Users per chunk so that one scoring process stays under ``max_memory`` (an estimate:
    see the benchmark for measured peaks). ``index``: what
    :func:`~interestflow.batch._model.build_index` built.

    ``two_stage`` (the :func:`~interestflow.batch._model.read_model` record of a model with
    a ranker) adds the fixed cost of the two stages: the loaded engine (its arrays file,
    EASE's ``B`` included), the candidate generator's own content index, and one sub-chunk
    of ``CandidateConfig.chunk_users`` users: its candidates (``chunk_users x total cut``
    rows of the ranker's features in float32, plus the union's keys and the per-source
    entries), EASE's dense ``chunk_users x n_items`` float32 block when EASE is on, and the
    segment sources' ``chunk_users x pool`` float64 blocks. Per user it adds the seeds/seen
    CSR entries, the (k) ranked output and the content source's (cut) search result."""
    from ..retrieval import bf16_scan_bytes

    # the catalogue twice (the index's unit rows and FAISS's lists, or the exact kind's
    # copy), plus the bf16 copy of the lists that a bf16 IVF scan makes (padded per list)
    index_bytes = 2 * n_items * dim * 4
    if index and index.get("candidates") == "bfloat16":
        index_bytes += bf16_scan_bytes(n_items, dim, index["nlist"])
    fixed = (_rss_bytes() + index_bytes + RUNTIME_MARGIN_BYTES
             + 2 * GATHER_ROWS * dim * 4 + (ENCODER_BYTES if has_text else 0))
    per_row = 3 * bytes_per_row + 24 + (2 * dim * 4 if has_vector else 0)
    per_user = rows_per_user * per_row + 3 * dim * 4 + 3 * n_seg * 4 \
        + (k + rows_per_user) * 48
    if two_stage is not None:
        from ..candidates import CandidateConfig

        cut = CandidateConfig.from_dict(two_stage["candidates_config"]["config"]).content
        fixed += two_stage_bytes(two_stage, dim, n_seg)
        # seeds/seen CSR entries, the ranked output, segment weights, and the content
        # source searched for the whole chunk at once (scores and rows, cut per user)
        per_user += rows_per_user * 3 * 8 + k * 16 + n_seg * 4 + cut * 12
    # 15% headroom: allocator caches and the moment-to-moment mix of buffers (measured
    # peaks at max_memory=1.8GB: 1.42-1.86 GB)
    room = max_memory / 1.15 - fixed
    users = int(room // per_user) if room > 0 else 0
    if users < 100:
        need = 1.15 * (fixed + 100 * per_user)
        raise ValueError(
            f"max_memory={max_memory} bytes is too small: about {fixed / 2**20:.0f} MiB go to "
            f"the process, the {n_items} catalogue vectors and buffers, and each user needs "
            f"about {per_user / 1024:.1f} KiB; pass max_memory >= {math.ceil(need / 2**20)}MiB")
    return users


def two_stage_bytes(model: dict, dim: int, n_seg: int) -> int:
    """Fixed memory of the two stages in a scoring process (see chunk_users_for_memory)."""
    from ..candidates import SOURCES, CandidateConfig
    from ..ranker import RANKER_FEATURES

    cfg = CandidateConfig.from_dict(model["candidates_config"]["config"])
    n_items = int(model["n_items"])
    # ranker.rank_users runs num_threads sub-chunks side by side
    threads = int((model.get("ranker_config") or {}).get("num_threads", 2))
    cu = cfg.chunk_users * max(1, threads)
    total_cut = sum(cfg.cut(s) for s in SOURCES)
    # features twice (candidate columns, then the ranker's copy with its extra columns),
    # union keys / items / per-source entries (~6 int64 per entry)
    cand = cu * total_cut * (2 * len(RANKER_FEATURES) * 4 + 6 * 8)
    ease = 2 * cu * n_items * 4 if cfg.ease > 0 and n_items <= cfg.ease_max_items else 0
    pool = n_seg * cfg.segment_pool_factor * max(cfg.segment_popularity, cfg.segment_trending)
    segment = 2 * cu * min(n_items, pool) * 8
    return int(model["arrays_bytes"]) + 2 * n_items * dim * 4 + cand + ease + segment

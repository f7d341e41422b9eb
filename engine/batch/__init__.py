"""Offline batch scoring: an event table of any size -> user vectors, segments and top-k items.

:func:`score` (CLI ``interestflow score``) runs a fitted :class:`~interestflow.InterestEngine`
over an event table that need not fit in memory, in chunks of users whose size, not the
number of users, sets the peak memory, and it survives being killed at any moment.

How it works
------------
1. **Catalogue.** The items to recommend (the model's items, or ``items=``: its vector column,
   else its encoded texts) are indexed once by :class:`interestflow.retrieval.ItemIndex`
   (``index=``), saved to ``OUT/_staging/index`` with their ids and unit vectors.
2. **Count.** A first read of the events' user id column only hashes every user id (a fixed
   seeded hash, the same in every process and run) and counts distinct users with a bounded
   k-minimum-values sketch (exact up to 16,384 users), one task per input file, the sketches
   merged by the driver. The number of chunks ``B`` follows from that count and
   ``chunk_users`` (or ``max_memory``); the rows per file number the input's rows.
3. **Staging.** A second, streaming read of the needed columns, again one task per input file,
   validates every row, rejects bad ones with a reason (counted in the summary and listed in
   ``OUT/rejected.parquet``), and spills the good ones to ``OUT/_staging/bNNNNN/`` (bucket =
   hash(user_id) mod B) through an in-memory buffer of bounded size: no file stays open and
   all of a user's events land in one bucket. A marker written last
   (``_staging/_COMPLETE.json``, with the reference time: ``now`` or the latest valid ``ts``)
   makes a finished staging pass reusable; an unfinished one is redone from scratch.
4. **Chunks.** Each bucket is scored on its own: events -> vectors (the ``vector_col`` value,
   else the encoded text, else the vector of the event's catalogue item) -> time-decayed user
   means (:func:`~interestflow.interests.decayed_user_means`, the model's half-life) -> unit user
   vectors -> nearest model centroid and soft segment features (the model's temperature) ->
   top-k items, by the same stages as :meth:`InterestEngine.recommend
   <interestflow.InterestEngine.recommend>` where the model has a learned ranker:

   * **Model with a ranker** (``InterestEngine(ranker="lightgbm")``): stage 1, the model's
     :class:`~interestflow.candidates.CandidateGenerator` (content, item-kNN, EASE,
     popularity, segment popularity, segment trending) through
     :meth:`~interestflow.candidates.CandidateGenerator.generate_for`, fed with what ``fit``
     would have stored for these users, built from the chunk's events by the functions
     ``fit`` uses: seen items and item-kNN seeds (:func:`~interestflow.recommend.user_seeds`
     of the events with a catalogue item), segment weights
     (:func:`~interestflow.recommend.segment_weights`), interaction count and latest time
     (:func:`~interestflow.ranker.user_activity`); stage 2, the model's LightGBM ranker over
     :func:`~interestflow.ranker.ranking_features`. The ranker's reference time (its
     ``user_recency_days``) is the latest time of a staged event with a catalogue item, as
     ``fit``'s ``behaviour_time_`` is the latest interaction time (``now`` does not move it).
     Scoring the events a model was fitted on therefore gives every user the list
     ``recommend`` gives (tested). Users pass through both stages
     ``CandidateConfig.chunk_users`` (default 1,024) at a time, so the two stages add one
     sub-chunk's arrays, not the chunk's: its candidates (``chunk_users x`` the sum of the
     source cuts, at most 450, rows of ``len(RANKER_FEATURES)`` float32) and EASE's dense
     ``chunk_users x n_items`` float32 block (EASE exists only up to ``ease_max_items``
     items, 20,000 by default: at most 82 MB); nothing of (users x catalogue) is allocated.
     Each process also holds the model's fitted state (its arrays, EASE's ``B``, the
     generator's content index), loaded once. Per-user interests are not built from events,
     so a ranker model with ``multi_interest=True`` is refused, as is ``items=``.
   * **Model without a ranker**: the top-k catalogue items by cosine (``ItemIndex.search``),
     leaving out items the user's events mention. These are ``recommend``'s items, in its
     order, for a content-only recommender (``RecommendConfig(weights={"content": w})``,
     ``index="exact"``; ``recommend``'s scores are the z-scores of these cosines over the
     unseen items); the other recommenders blend behaviour components over the whole
     catalogue per user (dense users x items blocks) and ``multi_interest=True`` engines rank
     per interest, which batch scoring does not reproduce: their batch lists are content-only.

   The two part files ``users/part-NNNNN.parquet`` and ``recommendations/part-NNNNN.parquet``
   are written atomically (temp file + rename); then the chunk is recorded in
   ``manifest.json`` (rewritten atomically by the one driver process).
5. **Finish.** ``summary.json`` (counts, rejected rows by reason, timings per stage); the staging
   folder is removed.

Resuming: the same call after a crash continues: chunks in the manifest are not redone and a
chunk that was cut off is redone from its staged events, which are the same, so the output is
identical to an uninterrupted run. The manifest holds a fingerprint of the job (input paths,
sizes and modification times, parameters, the model's save id): a different job refuses to
resume into the same ``out``. One job writes an ``out`` at a time: a job holds the OS lock of
``out`` (:mod:`interestflow.outdir`) from before it reads anything until it returns, and a
second job on the same ``out``, started at the same time or later, is refused; the lock dies
with its process, so the job that resumes after a kill is not refused.

With ``dask=`` the file and chunk tasks run on Dask (:mod:`interestflow.distributed`); every
process loads the model state, index and encoder once and keeps them for its later chunks.
Chunks sort their events by (user, input row), so the output does not depend on which
process staged or scored what, nor in which order.

Package layout: ``_inputs`` (memory sizes, input files, the events' columns, row conversion and
rejection reasons), ``_model`` (the saved model, catalogue and index), ``_planning`` (users
per chunk from ``max_memory``), ``_staging`` (the count and staging passes), ``_chunk``
(scoring one chunk: :func:`score_chunk`, the task Dask workers run), ``_job`` (the
resumable job: :func:`score`), ``_common`` (what they share). The names imported here
are the package's; the modules are private.
"""

from __future__ import annotations

import logging

from ._chunk import LOADS as _LOADS  # noqa: F401
from ._chunk import RESOURCES as _RESOURCES  # noqa: F401
from ._chunk import load_resources as _resources  # noqa: F401
from ._chunk import score_chunk  # noqa: F401
from ._common import GATHER_ROWS as _GATHER_ROWS  # noqa: F401
from ._common import REASON_ZERO_WEIGHT  # noqa: F401
from ._inputs import REJECT_REASONS, STANDARD_COLUMNS, parse_memory, resolve_inputs  # noqa: F401
from ._job import MANIFEST_FORMAT, MANIFEST_VERSION, RejectedRowsError, score  # noqa: F401
from ._model import read_model as _read_model  # noqa: F401
from ._planning import DEFAULT_CHUNK_USERS  # noqa: F401
from ._planning import RUNTIME_MARGIN_BYTES as _RUNTIME_MARGIN_BYTES  # noqa: F401
from ._planning import chunk_users_for_memory as _chunk_users_for_memory  # noqa: F401
from ._planning import two_stage_bytes as _two_stage_bytes  # noqa: F401

logger = logging.getLogger(__name__)

__all__ = ["score", "parse_memory", "DEFAULT_CHUNK_USERS", "RejectedRowsError"]

# The private names above are the ones tests and interestflow.distributed's notes read
# here (the same objects as in the modules). To replace a function or constant for a test,
# patch the module that uses it: _job._on_chunk_done, _job.score_chunk (the local runner),
# _chunk.score_chunk (Dask workers unpickle it from there), _planning._rss_bytes,
# _staging._READ_BATCH_ROWS, _staging._STAGING_BUFFER_BYTES.

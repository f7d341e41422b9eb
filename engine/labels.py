"""Human-readable segment labels: keywords by class-based TF-IDF and representative texts.

:func:`segment_keywords` follows BERTopic's c-TF-IDF: all texts of a segment form one class
document; a term's weight in a class is its frequency in the class (L1-normalised per class)
times ``log(1 + A / f_t)``, where ``A`` is the average number of words per class and ``f_t``
the term's frequency across all classes. Terms that are frequent everywhere get a low weight,
terms concentrated in one segment a high one.

Chinese, Japanese and Korean text has no spaces between words, so when most letters of the
corpus are CJK characters (``language="auto"``), terms are character bigrams taken inside runs
of CJK characters (plus any Latin words), and bigrams holding a function character
(的, 了, 是, ...) are skipped in place of an English stop-word list. A word segmenter (jieba
for Chinese) gives better terms; pass its output joined by spaces with ``language="latin"``
and ``stop_words=None`` or a Chinese stop list if you have one.

:func:`representative_texts` gives, per segment, the member texts closest by cosine to the
segment centroid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["detect_language", "representative_texts", "segment_keywords", "term_presence"]

# CJK Unified Ideographs (+ extension A, compatibility), kana and hangul syllables.
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{_CJK_CLASS}]")
_CJK_RUN = re.compile(f"[{_CJK_CLASS}]+")
_LATIN_WORD = re.compile(r"(?u)\b[^\W\d_" + _CJK_CLASS + r"][^\W_" + _CJK_CLASS + r"]+\b")
# Function characters: a bigram containing one is almost never a content word in Chinese.
_CJK_FUNCTION_CHARS = frozenset("的了着吗吧呢啊呀哦嘛么是在和也就都我你他她它这那们个很又还被把")
_LANGUAGES = ("auto", "latin", "cjk")


def detect_language(texts: Sequence[str], *, sample: int = 2000) -> str:
    """``"cjk"`` when more than half of the letters in ``texts`` are CJK, else ``"latin"``.

    Parameters
    ----------
    texts : sequence of str
        The corpus; at most ``sample`` texts, evenly spaced, are inspected.
    sample : int, default 2000
        Number of texts inspected.

    Returns
    -------
    str
        ``"cjk"`` or ``"latin"``.

    Examples
    --------
    >>> detect_language(["这部电影很好看，演员也不错", "great movie"])
    'cjk'
    """
    n = len(texts)
    if n == 0:
        return "latin"
    step = max(1, n // sample)
    cjk = letters = 0
    for i in range(0, n, step):
        t = texts[i]
        cjk += len(_CJK_CHAR.findall(t))
        letters += sum(1 for ch in t if ch.isalpha())
    return "cjk" if letters and cjk / letters > 0.5 else "latin"


def _cjk_analyzer(stop: frozenset[str] | None, skip_function_chars: bool):
    def analyze(text: str) -> list[str]:
        lowered = text.lower()
        terms: list[str] = []
        for run in _CJK_RUN.findall(lowered):
            for i in range(len(run) - 1):
                bigram = run[i:i + 2]
                if skip_function_chars and (bigram[0] in _CJK_FUNCTION_CHARS
                                            or bigram[1] in _CJK_FUNCTION_CHARS):
                    continue
                terms.append(bigram)
        terms.extend(_LATIN_WORD.findall(lowered))
        if stop:
            terms = [t for t in terms if t not in stop]
        return terms
    return analyze


def _check_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not a single string")
    try:
        texts = list(texts)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of strings, got "
                        f"{type(texts).__name__}") from exc
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__} ({t!r})")
    return texts


def _check_labels(labels, n: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D with one label per text, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"labels has {arr.shape[0]} entries but there are {n} texts; "
                         "pass one label per text")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers (segment ids, -1 for noise), got dtype "
                        f"{arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _vectorizer(texts, stop_words, ngram_range, min_df, language, binary=False):
    """The term counter of :func:`segment_keywords` (CJK character bigrams or Latin words)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    if language == "auto":
        language = detect_language(texts)
    if language == "cjk":
        if stop_words is None:
            stop, skip_fn = None, False
        elif isinstance(stop_words, str):
            stop, skip_fn = frozenset(ENGLISH_STOP_WORDS), True
        else:
            stop, skip_fn = frozenset(w.lower() for w in stop_words), True
        return CountVectorizer(analyzer=_cjk_analyzer(stop, skip_fn), min_df=min_df,
                               binary=binary)
    sw = stop_words if stop_words is None or isinstance(stop_words, str) else list(stop_words)
    return CountVectorizer(stop_words=sw, ngram_range=tuple(ngram_range), min_df=min_df,
                           binary=binary)


def term_presence(texts: Sequence[str], *, min_df=2):
    """Which terms each text uses: ``(X, terms)``, ``X`` a binary CSR matrix (n_texts,
    n_terms) with the terms :func:`segment_keywords` counts (English stop words dropped; CJK
    character bigrams for CJK text) but numbers, kept when at least ``min_df`` texts use
    them. No term at all gives an empty matrix.
    """
    from scipy import sparse

    texts = _check_texts(texts)
    vec = _vectorizer(texts, "english", (1, 1), min_df, "auto", binary=True)
    try:
        x = vec.fit_transform(texts).tocsr()
    except ValueError:  # empty vocabulary
        return sparse.csr_matrix((len(texts), 0), dtype=np.int64), np.zeros(0, dtype=object)
    terms = vec.get_feature_names_out()
    words = np.flatnonzero([not t.isdigit() for t in terms])  # numbers (years, sizes) say little
    return x[:, words], terms[words]


def segment_keywords(
    texts: Sequence[str],
    labels,
    *,
    top_n: int = 8,
    stop_words="english",
    ngram_range: tuple[int, int] = (1, 1),
    min_df=2,
    language: str = "auto",
) -> dict[int, list[tuple[str, float]]]:
    """Top keywords of each segment by class-based TF-IDF (BERTopic's c-TF-IDF).

    Parameters
    ----------
    texts : sequence of str, length n_texts
        The texts (reviews, queries, ...); empty strings count as texts without terms.
    labels : array-like of int, shape (n_texts,)
        Segment of each text. ``-1`` (noise) is a segment like any other.
    top_n : int, default 8
        Keywords per segment. Fewer are returned when a segment has fewer terms with a
        positive weight.
    stop_words : "english", None or iterable of str, default "english"
        Latin mode: passed to scikit-learn's ``CountVectorizer``. CJK mode: ``"english"``
        drops English stop words among the Latin words and skips CJK bigrams holding a
        function character (的, 了, 是, ...); a list drops exactly those terms (and also
        skips function-character bigrams); ``None`` keeps every term.
    ngram_range : (int, int), default (1, 1)
        Word n-gram range in Latin mode. CJK mode always uses character bigrams for CJK
        runs and single Latin words.
    min_df : int or float, default 2
        A term is kept when it occurs in at least ``min_df`` texts (a float is a share of
        the texts), counted over the individual texts, not over the class documents (which
        would drop exactly the words that only one segment uses).
    language : {"auto", "latin", "cjk"}, default "auto"
        ``"auto"`` picks ``"cjk"`` when more than half of the letters are CJK characters
        (see :func:`detect_language`).

    Returns
    -------
    dict of int to list of (str, float)
        For every label present, its keywords with their c-TF-IDF weight, highest first
        (ties broken alphabetically). Keys are sorted.

    Raises
    ------
    ValueError
        When no term occurs in at least ``min_df`` texts, or on invalid parameters.

    Examples
    --------
    >>> texts = ["espresso crema", "espresso grinder", "monstera leaves", "monstera pot"]
    >>> kw = segment_keywords(texts, [0, 0, 1, 1], top_n=1)
    >>> kw[0][0][0], kw[1][0][0]
    ('espresso', 'monstera')
    """
    from scipy import sparse

    texts = _check_texts(texts)
    if len(texts) == 0:
        raise ValueError("texts is empty; pass at least one text per segment")
    lab = _check_labels(labels, len(texts))
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n={top_n!r} is invalid; pass an int >= 1")
    if language not in _LANGUAGES:
        raise ValueError(f"language={language!r} is not supported; pass one of {_LANGUAGES}")
    if (not isinstance(ngram_range, (tuple, list)) or len(ngram_range) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in ngram_range)
            or not 1 <= ngram_range[0] <= ngram_range[1]):
        raise ValueError(f"ngram_range={ngram_range!r} is invalid; pass (min_n, max_n) with "
                         "1 <= min_n <= max_n")
    if isinstance(stop_words, str) and stop_words != "english":
        raise ValueError(f"stop_words={stop_words!r} is not supported; pass 'english', None "
                         "or a list of words")
    vec = _vectorizer(texts, stop_words, ngram_range, min_df, language)
    try:
        x = vec.fit_transform(texts)
    except ValueError as exc:
        # scikit-learn says "empty vocabulary" or "max_df ... < min_df"; say what to change.
        raise ValueError(
            f"no term is left to rank ({exc}); with {len(texts)} texts and min_df={min_df!r}, "
            "lower min_df, pass stop_words=None, or check that the texts are not empty"
        ) from exc
    terms = vec.get_feature_names_out()

    classes, codes = np.unique(lab, return_inverse=True)
    member = sparse.csr_matrix(
        (np.ones(len(codes), dtype=np.float64), (codes, np.arange(len(codes)))),
        shape=(len(classes), len(codes)))
    counts = (member @ x).tocsr()                       # (n_classes, n_terms) term counts
    counts.sort_indices()
    words_per_class = np.asarray(counts.sum(axis=1)).ravel()
    term_freq = np.asarray(counts.sum(axis=0)).ravel()  # > 0 for every kept term
    avg_words = float(words_per_class.mean())
    idf = np.log1p(avg_words / term_freq)

    out: dict[int, list[tuple[str, float]]] = {}
    for c, label in enumerate(classes):
        lo, hi = counts.indptr[c], counts.indptr[c + 1]
        if hi == lo:
            out[int(label)] = []
            continue
        idx = counts.indices[lo:hi]
        scores = counts.data[lo:hi] / words_per_class[c] * idf[idx]
        # The vocabulary is sorted and idx ascending, so a stable sort breaks ties by term.
        order = np.argsort(-scores, kind="stable")[:top_n]
        out[int(label)] = [(str(terms[idx[k]]), float(scores[k])) for k in order]
    return out


def representative_texts(
    texts: Sequence[str],
    vectors,
    labels,
    centroids=None,
    n: int = 3,
) -> dict[int, list[str]]:
    """The member texts of each segment closest by cosine to the segment's centroid.

    Parameters
    ----------
    texts : sequence of str, length n_texts
    vectors : array-like, shape (n_texts, dim)
        One vector per text (need not be normalised). A zero vector has cosine 0.
    labels : array-like of int, shape (n_texts,)
        Segment of each text; ``-1`` (noise) is a segment like any other.
    centroids : array-like (n_segments, dim), mapping of int to (dim,) vector, or None
        An array gives the centroid of segment ``i`` in row ``i`` (so labels must be in
        ``0 .. n_segments-1``); a mapping also allows other labels such as ``-1``; ``None``
        uses the mean of each segment's vectors. Every label present needs a centroid.
    n : int, default 3
        Texts per segment. Identical texts are returned once, so a segment with fewer
        distinct texts gives fewer.

    Returns
    -------
    dict of int to list of str
        For every label present, up to ``n`` texts, closest first (ties by input order).
        Keys are sorted.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> representative_texts(["a", "b", "c"], v, [0, 0, 1], np.eye(2), n=1)
    {0: ['a'], 1: ['c']}
    """
    texts = _check_texts(texts)
    lab = _check_labels(labels, len(texts))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} is invalid; pass an int >= 1")
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != len(texts):
        raise ValueError(f"vectors must have shape (n_texts, dim) = ({len(texts)}, dim), got "
                         f"{v.shape}")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"vectors has NaN or inf at row {row} ({int(bad.sum())} bad rows)")
    classes = np.unique(lab)
    cents = _centroids_by_label(centroids, v, lab, classes)
    return _closest_texts(texts, v, lab, classes, cents, n)


def _centroids_by_label(centroids, v, lab, classes) -> dict:
    """``representative_texts``' centroids as ``{label: (dim,) float64}``, checked: every
    label present has one, of the vectors' dimension, finite and not zero."""
    dim = v.shape[1]
    if centroids is None:
        cents = {int(c): v[lab == c].mean(axis=0) for c in classes}
    elif isinstance(centroids, Mapping):
        cents = {int(k): np.asarray(c, dtype=np.float64) for k, c in centroids.items()}
    else:
        arr = np.asarray(centroids, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"centroids must have shape (n_segments, dim) or be a mapping, got "
                             f"shape {arr.shape}")
        cents = {i: arr[i] for i in range(arr.shape[0])}
    for c in classes:
        if int(c) not in cents:
            hint = (" (noise has no centroid in an array; pass a mapping with a -1 entry or "
                    "centroids=None)" if c < 0 else "")
            raise ValueError(f"label {int(c)} has no centroid{hint}; centroids cover "
                             f"{sorted(cents)}")
        cvec = cents[int(c)]
        if cvec.shape != (dim,):
            raise ValueError(f"centroid of label {int(c)} has shape {cvec.shape}, expected "
                             f"({dim},) like the vectors")
        if not np.isfinite(cvec).all() or not np.any(cvec):
            raise ValueError(f"centroid of label {int(c)} is zero or not finite; cosine is "
                             "undefined")
    return cents


def _closest_texts(texts, v, lab, classes, cents, n) -> dict[int, list[str]]:
    """Per label, up to ``n`` distinct member texts by decreasing cosine to its centroid
    (ties by input order)."""
    norms = np.linalg.norm(v, axis=1)
    norms[norms == 0] = 1.0
    vn = v / norms[:, None]
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], classes, side="left").tolist() + [len(order)]
    out: dict[int, list[str]] = {}
    for k, c in enumerate(classes):
        members = order[bounds[k]:bounds[k + 1]]       # ascending input order
        cvec = cents[int(c)]
        sims = vn[members] @ (cvec / np.linalg.norm(cvec))
        ranked = members[np.argsort(-sims, kind="stable")]
        chosen: list[str] = []
        seen: set[str] = set()
        for i in ranked:
            t = texts[i]
            if t not in seen:
                seen.add(t)
                chosen.append(t)
                if len(chosen) == n:
                    break
        out[int(c)] = chosen
    return out

"""numba CPU kernels of the learned ranker (:mod:`interestflow.ranker`).

- :func:`parse_lightgbm` / :class:`TreeEnsemble`: LightGBM text models (what the ranker saves)
  as flat arrays, and their evaluation over float32 feature rows. The result equals
  ``Booster.predict`` of each model to the bit: the same float64 comparisons of LightGBM's
  numerical decision (missing values by each split's missing type and default direction,
  ``|x| <= kZeroThreshold`` read as 0 as LightGBM's dense-row reader does) and the same
  left-to-right float64 sum over the trees; several models are averaged as
  ``Ranker.score`` averages them (their sum in order, then divided by their number).

  Why not ``Booster.predict``: it turns every dense row into a sparse (feature, value) list
  and back before walking the trees, a cost per row and per model (about 0.2 us for a
  28-feature row on one Zen 4 core) that dominated the ranker's time on candidates (millions
  of rows, 4 averaged models of a few dozen small trees each).
  Small trees (at most :data:`TABLE_MAX_SPLITS` splits; the ranker's default ``num_leaves=7``
  gives 6) are scored by leaf tables: every split's comparison is made (independent
  comparisons over a block of rows instead of a chain of dependent loads down the tree) and
  the combination of decisions indexes a table of the leaf the walk would reach.
- :func:`user_topk`: the best ``k`` of each user's candidates (score descending, ties to the
  lower item), the order of ``Ranker.topk``.

Kernels are serial and release the GIL; the callers split rows over threads (each thread
writes its own rows). This module imports numba at import time; :mod:`interestflow.ranker`
imports it only when scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

__all__ = ["TreeEnsemble", "parse_lightgbm", "user_topk"]

#: LightGBM's ``kZeroThreshold`` (``1e-35f`` as a double): values of at most this magnitude
#: are zeros to its dense-row reader and to splits whose missing type is "zero".
K_ZERO = float(np.float32(1e-35))
K_ZERO32 = np.float32(1e-35)  # the same number

_MISSING_ZERO, _MISSING_NAN = 1, 2  # LightGBM missing types (0: none)


@dataclass(frozen=True)
class TreeEnsemble:
    """Trees of one or more LightGBM models as flat arrays.

    Tree ``t`` owns nodes ``node_start[t]`` to ``node_start[t + 1]``: its ``n_internal[t]``
    splits (in LightGBM's order), then one node per leaf. Node ``i`` tests feature
    ``feature[i]`` against ``threshold[i]`` (float64, as LightGBM; the walk compares the float32
    features with ``threshold32[i]``, the largest float32 not above it: the same decision for
    every float32, infinities included, without widening each feature); ``nan_left[i]`` / ``zero_left[i]`` say where a NaN
    and a value of magnitude at most :data:`K_ZERO` go (LightGBM's numerical decision, read
    from the split's decision type); its children are tree-local node numbers
    ``child[2 * i]`` (left) and ``child[2 * i + 1]``; a leaf's node is its own child both ways,
    so ``depth[t]`` steps from the root end on leaf node ``n_internal[t] + l``, whose value is
    ``leaf_value[leaf_start[t] + l]``. Trees ``model_start[m]`` to ``model_start[m + 1]``
    make model ``m``.

    ``child_gt`` holds the same children for the walk without a missing-value branch (used
    when no split has LightGBM's "zero" missing type, ``any_zero_missing`` False): a node
    whose NaN goes right keeps (left, right) and is taken first when ``x <= threshold``
    (False for a NaN), a node whose NaN goes left stores (right, left) and is taken first when
    ``x > threshold`` (also False for a NaN); a value of magnitude at most :data:`K_ZERO` is
    read as 0 first, as LightGBM's dense-row reader does.

    ``leaf_table`` (when every tree has at most :data:`TABLE_MAX_SPLITS` splits, else None):
    tree ``t``'s entries ``table_start[t]`` to ``table_start[t + 1]``, one per combination of
    its split decisions (bit ``b`` of the entry number: split ``b`` sends the row to
    ``child_gt``'s first child, or with ``any_zero_missing`` to ``child``'s left child), give
    the leaf that the walk reaches with those decisions. The table kernel takes every split's
    decision (independent comparisons, no chain of dependent loads) and looks the leaf up.
    """

    feature: np.ndarray
    threshold: np.ndarray
    threshold32: np.ndarray
    nan_left: np.ndarray
    zero_left: np.ndarray
    child: np.ndarray
    child_gt: np.ndarray
    any_zero_missing: bool
    leaf_value: np.ndarray
    node_start: np.ndarray
    leaf_start: np.ndarray
    n_internal: np.ndarray
    depth: np.ndarray
    model_start: np.ndarray
    n_features: int
    table_start: np.ndarray = None
    leaf_table: np.ndarray = None

    @property
    def n_models(self) -> int:
        return len(self.model_start) - 1

    def predict(self, X, *, threads: int = 1) -> np.ndarray:
        """Mean of the models' raw scores for every row of ``X`` (n, n_features), float64."""
        from concurrent.futures import ThreadPoolExecutor

        X = np.ascontiguousarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        n = len(X)
        out = np.empty(n, np.float64)
        if self.leaf_table is not None:
            args = (X, self.any_zero_missing, self.feature, self.threshold32, self.nan_left,
                    self.zero_left, self.node_start, self.n_internal, self.table_start,
                    self.leaf_table, self.leaf_value, self.leaf_start, self.model_start, out)
            kernel = _predict_table
        else:
            args = (X, self.any_zero_missing, self.feature, self.threshold32, self.nan_left,
                    self.zero_left, self.child, self.child_gt, self.leaf_value,
                    self.node_start, self.leaf_start, self.n_internal, self.depth,
                    self.model_start, out)
            kernel = _predict_rows
        threads = max(1, min(int(threads), n // 10_000))
        if threads == 1:
            kernel(0, n, *args)
            return out
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda a: kernel(int(bounds[a]), int(bounds[a + 1]), *args),
                          range(threads)))
        return out


def _ints(line: str, name: str, count: int) -> list[int]:
    vals = [int(v) for v in line.split()] if line else []
    if len(vals) != count:
        raise ValueError(f"LightGBM model: {name} has {len(vals)} values, expected {count}")
    return vals


def _floats(line: str, name: str, count: int) -> list[float]:
    vals = [float(v) for v in line.split()] if line else []
    if len(vals) != count:
        raise ValueError(f"LightGBM model: {name} has {len(vals)} values, expected {count}")
    return vals


def _parse_one(text: str, n_features: int | None):
    """Trees of one LightGBM text model: (n_features, list of per-tree dicts)."""
    head, sep, rest = text.partition("\nTree=")
    if not sep:
        raise ValueError("not a LightGBM text model with trees (no 'Tree=' section)")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if int(header.get("num_tree_per_iteration", 1)) != 1 or int(header.get("num_class", 1)) != 1:
        raise ValueError("LightGBM model: only single-output models are supported")
    if "average_output" in head.splitlines():
        raise ValueError("LightGBM model: average_output (random forest) is not supported")
    nf = int(header["max_feature_idx"]) + 1
    if n_features is not None and nf != n_features:
        raise ValueError(f"LightGBM models disagree on the feature count ({nf} vs {n_features})")
    body = rest.split("\nend of trees", 1)[0]
    trees = []
    for block in body.split("\nTree="):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if not fields:
            continue
        n_leaves = int(fields["num_leaves"])
        if int(fields.get("num_cat", 0)) or int(fields.get("is_linear", 0)):
            raise ValueError("LightGBM model: categorical splits and linear trees are not "
                             "supported")
        n_nodes = n_leaves - 1
        t = {"leaf_value": _floats(fields["leaf_value"], "leaf_value", n_leaves),
             "feature": _ints(fields.get("split_feature", ""), "split_feature", n_nodes),
             "threshold": _floats(fields.get("threshold", ""), "threshold", n_nodes),
             "decision": _ints(fields.get("decision_type", ""), "decision_type", n_nodes),
             "left": _ints(fields.get("left_child", ""), "left_child", n_nodes),
             "right": _ints(fields.get("right_child", ""), "right_child", n_nodes)}
        if any(d & 1 for d in t["decision"]):
            raise ValueError("LightGBM model: categorical splits are not supported")
        if any(not 0 <= f < nf for f in t["feature"]):
            raise ValueError("LightGBM model: a split feature is out of range")
        for side in ("left", "right"):
            if any(not (-n_leaves <= c < n_nodes) for c in t[side]):
                raise ValueError(f"LightGBM model: a {side} child is out of range")
        trees.append(t)
    return nf, trees


def _flatten(models):
    """Every tree of ``models`` (in order) as flat node lists: ``(n_features or None, dict of
    lists)``; per tree its internal nodes, then one node per leaf whose children are itself."""
    n_features = None
    nodes = {"feature": [], "threshold": [], "decision": [], "child": [], "leaf_value": [],
             "node_start": [0], "leaf_start": [0], "n_internal": [], "depth": [],
             "model_start": [0]}
    for text in models:
        n_features, trees = _parse_one(text, n_features)
        for t in trees:
            n_int, n_leaves = len(t["feature"]), len(t["leaf_value"])
            kids = [[c if c >= 0 else n_int + ~c for c in t[side]] for side in ("left", "right")]
            child = nodes["child"]
            for j in range(n_int):
                child += [kids[0][j], kids[1][j]]
            for leaf in range(n_leaves):
                child += [n_int + leaf, n_int + leaf]
            nodes["feature"] += t["feature"] + [0] * n_leaves
            nodes["threshold"] += t["threshold"] + [0.0] * n_leaves
            nodes["decision"] += t["decision"] + [0] * n_leaves
            nodes["leaf_value"] += t["leaf_value"]
            nodes["node_start"].append(nodes["node_start"][-1] + n_int + n_leaves)
            nodes["leaf_start"].append(nodes["leaf_start"][-1] + n_leaves)
            nodes["n_internal"].append(n_int)
            nodes["depth"].append(_depth(kids, n_int))
        nodes["model_start"].append(nodes["model_start"][-1] + len(trees))
    return n_features, nodes


def _numerical_decisions(threshold: np.ndarray, decision: np.ndarray):
    """Per node, LightGBM's NumericalDecision as arrays: ``(missing type, zero_left, nan_left,
    threshold32)``, ``threshold32`` the largest float32 ``<= threshold``."""
    missing = (decision >> 2) & 3
    default_left = (decision & 2) > 0
    # a NaN is 0 unless the missing type is NaN; a value with |x| <= kZeroThreshold goes the
    # default way under missing type "zero"; else x <= threshold
    zero_left = np.where(missing == _MISSING_ZERO, default_left, 0.0 <= threshold)
    nan_left = np.where(missing == _MISSING_NAN, default_left, zero_left)
    with np.errstate(over="ignore"):
        threshold32 = threshold.astype(np.float32)  # nearest; beyond the range: +-inf
    up = threshold32.astype(np.float64) > threshold
    threshold32[up] = np.nextafter(threshold32[up], np.float32(-np.inf))
    return missing, zero_left, nan_left, threshold32


def parse_lightgbm(models) -> TreeEnsemble:
    """:class:`TreeEnsemble` of LightGBM text models (``Booster.model_to_string()``), in the
    order given."""
    if isinstance(models, str):
        models = [models]
    n_features, nodes = _flatten(models)
    if n_features is None:
        raise ValueError("no LightGBM model given")
    threshold = np.asarray(nodes["threshold"], np.float64)
    missing, zero_left, nan_left, threshold32 = _numerical_decisions(
        threshold, np.asarray(nodes["decision"], np.int64))
    child = np.asarray(nodes["child"], np.int32)
    child_gt = child.reshape(-1, 2).copy()
    child_gt[nan_left] = child_gt[nan_left][:, ::-1]
    child_gt = child_gt.ravel()
    node_start = np.asarray(nodes["node_start"], np.int64)
    n_internal = np.asarray(nodes["n_internal"], np.int64)
    any_zero = bool((missing == _MISSING_ZERO).any())
    table_start = leaf_table = None
    if not len(n_internal) or n_internal.max() <= TABLE_MAX_SPLITS:
        table_start, leaf_table = _leaf_tables(child if any_zero else child_gt, node_start,
                                               n_internal)
    return TreeEnsemble(
        table_start=table_start, leaf_table=leaf_table,
        feature=np.asarray(nodes["feature"], np.int32), threshold=threshold,
        threshold32=threshold32, nan_left=nan_left.astype(np.bool_),
        zero_left=zero_left.astype(np.bool_), child=child, child_gt=child_gt,
        any_zero_missing=any_zero, leaf_value=np.asarray(nodes["leaf_value"], np.float64),
        node_start=node_start, leaf_start=np.asarray(nodes["leaf_start"], np.int64),
        n_internal=n_internal, depth=np.asarray(nodes["depth"], np.int64),
        model_start=np.asarray(nodes["model_start"], np.int64), n_features=int(n_features))


#: Trees with at most this many splits are scored by a leaf table (2 ** splits entries each;
#: the default ``num_leaves=7`` gives 6 splits, 64 entries).
TABLE_MAX_SPLITS = 10


def _leaf_tables(child, node_start, n_internal):
    """``(table_start, leaf_table)``: for every tree and every combination ``code`` of its
    split decisions (bit ``b``: split ``b`` takes ``child``'s first child), the leaf the walk
    ends on, as a leaf number (0-based, LightGBM's order)."""
    child = np.asarray(child, np.int64).reshape(-1, 2)
    sizes = 1 << n_internal
    table_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    leaf_table = np.empty(int(table_start[-1]), np.int32)
    for t in range(len(n_internal)):
        ni, base = int(n_internal[t]), int(node_start[t])
        codes = np.arange(1 << ni)
        node = np.zeros(len(codes), np.int64)
        for _ in range(ni):  # a path has at most ni splits; a leaf maps to itself
            inside = node < ni
            bit = (codes >> np.minimum(node, 62)) & 1
            nxt = np.where(bit == 1, child[base + node, 0], child[base + node, 1])
            node = np.where(inside, nxt, node)
        leaf_table[table_start[t]:table_start[t + 1]] = node - ni
    return table_start, leaf_table


def _depth(kids, n_int: int) -> int:
    """Longest root-to-leaf path (in splits) of a tree whose nodes ``>= n_int`` are leaves."""
    if n_int == 0:
        return 0
    best, stack = 0, [(0, 0)]
    while stack:
        node, d = stack.pop()
        if node >= n_int:
            best = max(best, d)
            continue
        if d > n_int:
            raise ValueError("LightGBM model: a tree is not a tree (a cycle)")
        stack += [(kids[0][node], d + 1), (kids[1][node], d + 1)]
    return best


#: Rows walked down each tree together: independent chains of dependent loads that the CPU
#: overlaps (one row at a time waits on each load of its path).
_ROWS = 16


@nb.njit(nogil=True, cache=True)
def _predict_rows(r0, r1, X, general, feature, threshold32, nan_left, zero_left, child,
                  child_gt, leaf_value, node_start, leaf_start, n_internal, depth, model_start,
                  out):
    """Mean score of rows ``r0:r1`` into ``out``. ``general``: LightGBM's decision with its
    missing-value cases (``nan_left``, ``zero_left``, ``child``); else one comparison per
    step (``nan_left`` picks ``x > threshold`` or ``x <= threshold``, ``child_gt``; see
    :class:`TreeEnsemble`), for ensembles without "zero" missing-type splits."""
    n_models = model_start.shape[0] - 1
    node = np.zeros(_ROWS, np.int64)
    acc = np.zeros(_ROWS, np.float64)
    total = np.zeros(_ROWS, np.float64)
    zero = np.float32(0.0)
    for a in range(r0, r1, _ROWS):
        nr = min(_ROWS, r1 - a)
        total[:] = 0.0
        for m in range(n_models):
            acc[:] = 0.0
            for t in range(model_start[m], model_start[m + 1]):
                base = node_start[t]
                node[:] = 0
                # a fixed number of branch-free steps: a leaf's node sends every row to itself
                for _ in range(depth[t]):
                    for i in range(nr):
                        j = base + node[i]
                        x = X[a + i, feature[j]]
                        thr = threshold32[j]
                        if general:
                            go_left = x <= thr
                            go_left = nan_left[j] if np.isnan(x) else go_left
                            go_left = zero_left[j] if abs(x) <= K_ZERO32 else go_left
                            node[i] = child[2 * j + (0 if go_left else 1)]
                        else:
                            x = zero if abs(x) <= K_ZERO32 else x  # LightGBM's reader: 0
                            first = (x > thr) if nan_left[j] else (x <= thr)
                            node[i] = child_gt[2 * j + (0 if first else 1)]
                first_leaf = leaf_start[t] - n_internal[t]
                for i in range(nr):
                    acc[i] += leaf_value[first_leaf + node[i]]
            for i in range(nr):
                total[i] += acc[i]
        for i in range(nr):
            out[a + i] = total[i] / n_models


@nb.njit(nogil=True, cache=True)
def _predict_table(r0, r1, X, general, feature, threshold32, nan_left, zero_left, node_start,
                   n_internal, table_start, leaf_table, leaf_value, leaf_start, model_start,
                   out):
    """:func:`_predict_rows` by leaf tables: for ``_ROWS`` rows at a time (copied feature by
    feature, values of magnitude at most :data:`K_ZERO` as 0), every split's decision is one
    comparison over the rows (bit ``b`` of each row's code), then the tree's table gives the
    leaf. The same decisions as the walk, the same leaves, the same sums: equal to the bit."""
    n_models = model_start.shape[0] - 1
    nf = X.shape[1]
    xt = np.zeros((nf, _ROWS), np.float32)
    code = np.zeros(_ROWS, np.int64)
    acc = np.zeros(_ROWS, np.float64)
    total = np.zeros(_ROWS, np.float64)
    zero = np.float32(0.0)
    for a in range(r0, r1, _ROWS):
        nr = min(_ROWS, r1 - a)
        for i in range(nr):
            for f in range(nf):
                x = X[a + i, f]
                xt[f, i] = zero if abs(x) <= K_ZERO32 else x
        total[:] = 0.0
        for m in range(n_models):
            acc[:] = 0.0
            for t in range(model_start[m], model_start[m + 1]):
                base = node_start[t]
                code[:] = 0
                for b in range(n_internal[t]):
                    j = base + b
                    xs = xt[feature[j]]
                    thr = threshold32[j]
                    if general:  # LightGBM's decision: a 0 (|x| <= K_ZERO) or NaN by type
                        nl, zl = nan_left[j], zero_left[j]
                        for i in range(_ROWS):
                            x = xs[i]
                            left = zl if x == zero else (nl if np.isnan(x) else x <= thr)
                            code[i] |= np.int64(left) << b
                    elif nan_left[j]:
                        for i in range(_ROWS):
                            code[i] |= np.int64(xs[i] > thr) << b
                    else:
                        for i in range(_ROWS):
                            code[i] |= np.int64(xs[i] <= thr) << b
                first_leaf = leaf_start[t]
                start = table_start[t]
                for i in range(nr):
                    acc[i] += leaf_value[first_leaf + leaf_table[start + code[i]]]
            for i in range(nr):
                total[i] += acc[i]
        for i in range(nr):
            out[a + i] = total[i] / n_models


def user_topk(indptr, items, scores, k: int, *, threads: int = 1):
    """Best ``k`` candidates of every user: ``(scores (m, k) float64, items (m, k) int64)``.

    User ``u``'s candidates are ``items[indptr[u]:indptr[u + 1]]`` with ``scores`` there;
    order: score descending, ties to the lower item (NaN scores last); padding ``-inf`` /
    ``-1``.
    """
    from concurrent.futures import ThreadPoolExecutor

    indptr = np.ascontiguousarray(indptr, np.int64)
    items = np.ascontiguousarray(items, np.int64)
    scores = np.ascontiguousarray(scores, np.float64)
    m = len(indptr) - 1
    out_s = np.full((m, k), -np.inf)
    out_i = np.full((m, k), -1, np.int64)
    threads = max(1, min(int(threads), m // 2_000))
    if threads == 1:
        _topk_users(0, m, indptr, items, scores, out_s, out_i)
        return out_s, out_i
    bounds = np.linspace(0, m, threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda a: _topk_users(int(bounds[a]), int(bounds[a + 1]), indptr, items,
                                            scores, out_s, out_i), range(threads)))
    return out_s, out_i


@nb.njit(nogil=True, cache=True, inline="always")
def _before(s1, i1, s2, i2):
    """Whether (score s1, item i1) ranks before (s2, i2): higher score, then lower item; a
    NaN score ranks after every number."""
    if np.isnan(s1):
        return np.isnan(s2) and i1 < i2
    if np.isnan(s2):
        return True
    return s1 > s2 or (s1 == s2 and i1 < i2)


@nb.njit(nogil=True, cache=True)
def _topk_users(u0, u1, indptr, items, scores, out_s, out_i):
    k = out_s.shape[1]
    for u in range(u0, u1):
        n = 0
        for p in range(indptr[u], indptr[u + 1]):
            s, it = scores[p], items[p]
            if n == k and not _before(s, it, out_s[u, k - 1], out_i[u, k - 1]):
                continue
            pos = n if n < k else k - 1
            while pos > 0 and _before(s, it, out_s[u, pos - 1], out_i[u, pos - 1]):
                out_s[u, pos] = out_s[u, pos - 1]
                out_i[u, pos] = out_i[u, pos - 1]
                pos -= 1
            out_s[u, pos] = s
            out_i[u, pos] = it
            if n < k:
                n += 1

"""K-means clustering with scikit-learn's estimator contract and a torch backend (CPU and CUDA).

The algorithm is scikit-learn's Lloyd K-means: greedy k-means++ seeding driven by a numpy
``RandomState``, a tolerance relative to the mean feature variance, strict convergence when
no label changes, empty clusters re-seeded from the points farthest from their centroid, and
``n_init`` restarts that keep the lowest inertia. The heavy steps are the torch reference ops
of :mod:`interestflow.kernels.reference` (chunked assignment, index-add update), so memory is
bounded by a block budget rather than by ``n_samples * n_clusters``.

Backends (one resolver, :func:`interestflow.resolve.resolve_backend`): ``"torch"`` (the
reference ops), ``"numba"`` and ``"triton"`` (the same Lloyd loop on the kernels of
:mod:`interestflow.kernels`), ``"faiss"`` (the same loop with FAISS's k-NN assignment), ``"cuml"`` (cuML's
own k-means started from this class's initial centers), ``"auto"``.
"""

from __future__ import annotations

import functools
import logging
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from interestflow._utils import check_int
from interestflow.kernels.reference import (
    ELEMENTWISE_BLOCK_BYTES,
    chunk_rows_for,
    kmeans_assign,
    kmeans_update,
    pairwise_sq_distances,
)
from interestflow.resolve import KMEANS_BACKENDS, resolve_backend, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["KMeans", "kmeans_plusplus", "AVAILABLE_BACKENDS"]

#: Backends ``KMeans(backend=...)`` accepts (see :func:`interestflow.resolve.resolve_backend`).
AVAILABLE_BACKENDS = KMEANS_BACKENDS

_INIT_OPTIONS = ("k-means++", "random")


def _check_backend(backend) -> str:
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a string, got {type(backend).__name__}; valid options: "
            f"{', '.join(repr(b) for b in AVAILABLE_BACKENDS)}"
        )
    if backend not in AVAILABLE_BACKENDS:
        raise ValueError(
            f"backend={backend!r} is not a known backend; valid options: "
            f"{', '.join(repr(b) for b in AVAILABLE_BACKENDS)}"
        )
    return backend


def _first_nonfinite(t: torch.Tensor):
    """(row, col) of the first NaN/inf entry of a 2-D tensor, or None (one device sync)."""
    if bool(torch.isfinite(t.sum())):
        return None
    step = chunk_rows_for(max(1, t.shape[1]))
    for start in range(0, t.shape[0], step):
        bad = ~torch.isfinite(t[start:start + step])
        if bool(bad.any()):
            r, c = torch.nonzero(bad)[0].tolist()
            return start + r, c
    return None  # the sum overflowed but every entry is finite


def _as_tensor(arr) -> torch.Tensor:
    """numpy -> CPU tensor without a copy (read-only inputs are only ever read here)."""
    if not arr.flags.writeable:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def _prepare_weights(sample_weight, n, dtype, device):
    """Validated weights as a tensor on ``device`` (None stays None: unit weights)."""
    if sample_weight is None:
        return None
    if torch.is_tensor(sample_weight):
        w = sample_weight.detach().to(device=device, dtype=dtype)
    else:
        try:
            arr = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"sample_weight must be an array of numbers of shape ({n},)"
            ) from exc
        w = torch.from_numpy(arr.copy()).to(device=device, dtype=dtype)
    if w.ndim == 0:
        w = w.expand(n).clone()
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight must have shape ({n},) to match X, got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        row = int(torch.nonzero(~torch.isfinite(w))[0])
        raise ValueError(f"sample_weight contains NaN or infinity at row {row}")
    if bool((w < 0).any()):
        row = int(torch.nonzero(w < 0)[0])
        raise ValueError(
            f"sample_weight must be >= 0; row {row} has {float(w[row])}"
        )
    if not bool(w.sum() > 0):
        raise ValueError("sample_weight: all weights are zero; at least one must be positive")
    return w


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means clustering (Lloyd) on CPU or CUDA, following scikit-learn's API.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters; must not exceed the number of samples passed to ``fit``.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), \
default="k-means++"
        ``"k-means++"``: greedy k-means++ with ``2 + int(log(n_clusters))`` local trials
        (:func:`kmeans_plusplus`).
        ``"random"``: ``n_clusters`` distinct rows drawn with probability proportional to
        ``sample_weight``. An array gives the initial centers (then ``n_init`` is forced to 1,
        with a ``RuntimeWarning``, as in scikit-learn).
    n_init : int, default=1
        Number of initialisations; the run with the lowest inertia is kept.
    max_iter : int, default=100
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the summed squared center shift is at most ``tol`` times the mean
        per-feature variance of ``X`` (weighted by ``sample_weight``).
    backend : {"auto", "torch", "numba", "triton", "cuml", "faiss"}, default="auto"
        ``"torch"``: the torch reference ops (CPU or CUDA). ``"numba"``: CPU kernels (a bf16
        candidate pass with a certified exact re-check where the CPU has fast bf16; the rows
        are rounded to bf16 once per run, ``2 * n_samples * n_features`` bytes while fitting).
        ``"triton"``: fused GPU kernels (float32). ``"cuml"``: cuML's KMeans on CUDA data
        (through DLPack). ``"faiss"``: this Lloyd loop with FAISS's brute-force k-NN as the
        assignment (``faiss.knn_gpu`` on CUDA tensors with faiss-gpu; float32). ``"auto"``: cuML, else Triton on
        CUDA; numba on the CPU for problems large enough to pay off; torch otherwise. It logs
        one INFO line (``interestflow.kmeans`` logger) per fit with what it chose and why. An explicit
        backend that is not installed raises ``ImportError`` naming the extra to install.
    random_state : int, numpy.random.RandomState or None, default=None
        Seeds k-means++ / random init; an int makes results reproducible.
    device : str, torch.device or None, default=None
        Where to compute. ``None``/``"auto"``: the device of a torch tensor input, else CUDA
        when visible, else CPU (see :func:`interestflow.resolve.resolve_device`).

    Attributes
    ----------
    cluster_centers_ : numpy.ndarray of shape (n_clusters, n_features)
        In the input's dtype (float32 for float32 input, float64 otherwise).
    labels_ : numpy.ndarray of shape (n_samples,), int64
    inertia_ : float
        Weighted sum of squared distances of samples to their closest center.
    n_iter_ : int
        Lloyd iterations run by the kept initialisation.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray of shape (n_features_in_,)
        Only when ``X`` had string column names.
    backend_ : str
        Backend that ran (``"auto"`` resolved).
    device_ : str
        Device that ran the fit, e.g. ``"cpu"`` or ``"cuda:0"``.

    Notes
    -----
    Computation is float32 for float32 input and float64 for any other numpy input
    (half-precision torch input is computed in float32). Fitted attributes are numpy arrays;
    ``predict``, ``transform`` and ``fit_predict`` return a torch tensor on the input's device
    when given a torch tensor, and numpy otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow import KMeans
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> km = KMeans(n_clusters=2, random_state=0, device="cpu").fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    >>> int(km.predict(np.array([[4.9, 5.2]]))[0]) == int(km.labels_[2])
    True
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=1, max_iter=100, tol=1e-4,
                 backend="auto", random_state=None, device=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.backend = backend
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ validation helpers

    def _validate_params(self):
        check_int("n_clusters", self.n_clusters, 1)
        check_int("n_init", self.n_init, 1)
        check_int("max_iter", self.max_iter, 1)
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"tol must be a real number >= 0, got {tol!r}")
        if not np.isfinite(tol) or tol < 0:
            raise ValueError(f"tol={tol!r} is invalid; pass a finite number >= 0")
        init = self.init
        if isinstance(init, str):
            if init not in _INIT_OPTIONS:
                raise ValueError(
                    f"init={init!r} is not a known init; pass 'k-means++', 'random' or an "
                    "array of shape (n_clusters, n_features)"
                )
        elif not (isinstance(init, (np.ndarray, list, tuple)) or torch.is_tensor(init)):
            raise TypeError(
                f"init must be 'k-means++', 'random' or an array of shape (n_clusters, "
                f"n_features), got {type(init).__name__}"
            )
        backend = _check_backend(self.backend)
        try:
            random_state = check_random_state(self.random_state)
        except ValueError as exc:
            raise ValueError(
                f"random_state={self.random_state!r} is invalid; pass None, an int or a "
                "numpy.random.RandomState"
            ) from exc
        return backend, random_state

    def _resolve_device(self, X, is_torch):
        """(device, reason) following the ``device`` parameter and the input's location.

        ``X`` is the validated tensor; ``is_torch`` says whether the caller passed a tensor
        (numpy input arrives here as a CPU tensor but does not pin the device).
        """
        if self.device is None or (isinstance(self.device, str) and self.device == "auto"):
            if is_torch:
                return X.device, f"input tensor is on {X.device}"
            dev = resolve_device(None)
            why = "a CUDA device is visible" if dev.type == "cuda" else "no CUDA device is visible"
            return dev, why
        return resolve_device(self.device), "requested by device="

    def _prepare_X(self, X, *, reset):
        """Validate ``X``; return (tensor on its own device, numpy_dtype_of_output, is_torch)."""
        if torch.is_tensor(X):
            X = X.detach()
            if X.ndim != 2:
                raise ValueError(
                    f"X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}"
                )
            if X.is_complex():
                raise ValueError("X must be real-valued, got a complex tensor")
            for axis, what in ((0, "samples"), (1, "features")):
                if X.shape[axis] < 1:
                    raise ValueError(
                        f"X has 0 {what} (shape {tuple(X.shape)}); at least 1 is required"
                    )
            if X.dtype in (torch.float32, torch.float16, torch.bfloat16):
                X = X.to(torch.float32)
            elif X.dtype != torch.float64:
                X = X.to(torch.float64)
            if reset:
                self.n_features_in_ = int(X.shape[1])
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            is_torch = True
        else:
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], order="C",
                              accept_sparse=False, ensure_all_finite=False)
            X = _as_tensor(X)
            is_torch = False
        bad = _first_nonfinite(X)
        if bad is not None:
            raise ValueError(
                f"X contains NaN or infinity at row {bad[0]}, column {bad[1]}; "
                "all values must be finite"
            )
        return X, is_torch

    def _prepare_init(self, n_features, dtype, device):
        init = self.init
        if torch.is_tensor(init):
            arr = init.detach().to(device=device, dtype=dtype).clone()
        else:
            try:
                arr = torch.from_numpy(np.array(init, dtype=np.float64)).to(device=device,
                                                                            dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    "init array must contain numbers, shape (n_clusters, n_features)"
                ) from exc
        expected = (self.n_clusters, n_features)
        if tuple(arr.shape) != expected:
            raise ValueError(
                f"init has shape {tuple(arr.shape)}; expected (n_clusters, n_features) = "
                f"{expected}"
            )
        if not bool(torch.isfinite(arr).all()):
            raise ValueError("init contains NaN or infinity; all values must be finite")
        return arr

    # ------------------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Finite values. Not modified.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or torch.Tensor of shape (n_samples,), optional
            Non-negative weights, not all zero. Used by the init (``"k-means++"``,
            ``"random"``), the center updates, the inertia and the tolerance.

        Returns
        -------
        self : KMeans
        """
        backend, random_state = self._validate_params()
        X, is_torch = self._prepare_X(X, reset=True)
        backend, device = self._fit_backend(X, is_torch, backend)
        n_init, max_iter = self._n_runs()
        out_np_dtype = np.float32 if X.dtype == torch.float32 else np.float64
        if backend in ("triton", "faiss"):
            X = X.to(torch.float32)  # these kernels compute in float32 only
        w = _prepare_weights(sample_weight, X.shape[0], X.dtype, device)
        Xc, x_mean, x_sq, w_full = _centered(X, w, device)
        tol = _scaled_tol(Xc, x_sq, w_full, self.tol)
        init_centers = None
        if not isinstance(self.init, str):
            init_centers = self._prepare_init(X.shape[1], X.dtype, device) - x_mean

        best = None
        rows = _bf16_rows(backend, Xc, self.n_clusters)  # shared by the n_init runs
        for _ in range(n_init):
            centers0 = init_centers
            if centers0 is None:
                centers0 = self._seed_centers(Xc, x_sq, w_full, random_state)
            run = _run(backend, Xc, x_sq, w, centers0, max_iter=max_iter, tol=tol,
                       seed=(int(random_state.randint(np.iinfo(np.int32).max))
                             if backend == "cuml" else 0), bf16_rows=rows)
            if best is None or run[1] < best[1]:
                best = run
        return self._set_fitted(best, x_mean, out_np_dtype, backend, device)

    def _fit_backend(self, X, is_torch, backend):
        """``(backend, device)`` that fit ``X`` (``backend`` resolved, its choice logged);
        checks that there are at least ``n_clusters`` samples."""
        n_samples, n_features = X.shape
        if n_samples < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}; "
                f"pass n_clusters <= {n_samples}"
            )
        device, why = self._resolve_device(X, is_torch)
        choice = resolve_backend("KMeans", backend, device, valid=KMEANS_BACKENDS,
                                 work=float(n_samples) * self.n_clusters * n_features,
                                 log=logger, detail=why)
        return choice.name, device

    def _n_runs(self):
        """``(n_init, max_iter)``; an init array forces ``n_init=1`` (with a warning, as in
        scikit-learn)."""
        n_init = check_int("n_init", self.n_init, 1)
        max_iter = check_int("max_iter", self.max_iter, 1)
        if not isinstance(self.init, str) and n_init != 1:
            warnings.warn(
                f"Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={n_init}.",
                RuntimeWarning, stacklevel=3,
            )
            n_init = 1
        return n_init, max_iter

    def _seed_centers(self, Xc, x_sq, w_full, random_state):
        """Initial centers of one run for ``init="k-means++"`` or ``"random"``."""
        if self.init == "k-means++":
            centers0, _idx = _kmeans_plusplus(Xc, x_sq, w_full, self.n_clusters, random_state)
            return centers0
        p = w_full.to(torch.float64).cpu().numpy()
        if np.count_nonzero(p) < self.n_clusters:
            raise ValueError(
                f"init='random' needs at least n_clusters={self.n_clusters} samples "
                f"with positive sample_weight, got {np.count_nonzero(p)}"
            )
        seeds = random_state.choice(Xc.shape[0], size=self.n_clusters, replace=False,
                                    p=p / p.sum())
        return Xc[torch.from_numpy(seeds).to(Xc.device)]

    def _set_fitted(self, best, x_mean, out_np_dtype, backend, device):
        """Store the kept run ``best`` = (labels, inertia, centers, n_iter) as the fitted
        attributes; warns when fewer distinct clusters than ``n_clusters`` were found."""
        labels, inertia, centers, n_iter = best
        self.cluster_centers_ = (centers + x_mean).cpu().numpy().astype(out_np_dtype, copy=False)
        self.labels_ = labels.cpu().numpy()
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.backend_ = backend
        self.device_ = str(device)
        distinct = int(torch.count_nonzero(torch.bincount(labels, minlength=self.n_clusters)))
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning, stacklevel=3,
            )
        return self

    # -------------------------------------------------------------------- fitted methods

    def _fitted_inputs(self, X):
        check_is_fitted(self)
        X, is_torch = self._prepare_X(X, reset=False)
        device, _ = self._resolve_device(X, is_torch)
        centers = torch.from_numpy(self.cluster_centers_).to(device=device, dtype=X.dtype)
        return X, is_torch, centers, device

    def _out(self, t: torch.Tensor, like_torch: bool, like):
        if like_torch:
            return t.to(like.device)
        return t.cpu().numpy()

    def _assign(self, X, centers):
        """Chunked (labels, min_sq_dist) of ``X`` (any device) against ``centers`` (device)."""
        from interestflow.kernels import assign_fn

        k = centers.shape[0]
        n = X.shape[0]
        labels = torch.empty(n, dtype=torch.int64, device=centers.device)
        min_sq = torch.empty(n, dtype=X.dtype, device=centers.device)
        dtype = X.dtype
        choice = resolve_backend("KMeans.predict", "auto", centers.device,
                                 work=float(n) * k * X.shape[1])
        if choice.name == "triton" and dtype != torch.float32:
            choice = resolve_backend("KMeans.predict", "torch", centers.device)
        assign = assign_fn(choice)
        cs, chunks = _shifted_chunks(X, centers)
        for start, xc in chunks:
            lab, d = assign(xc, cs)
            labels[start:start + xc.shape[0]] = lab
            min_sq[start:start + xc.shape[0]] = d.to(dtype)
        return labels, min_sq

    def predict(self, X):
        """Index of the closest cluster center for each sample.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        labels : numpy.ndarray or torch.Tensor of shape (n_samples,), int64
            A tensor on ``X``'s device when ``X`` is a tensor.
        """
        orig = X
        X, is_torch, centers, _ = self._fitted_inputs(X)
        labels, _ = self._assign(X, centers)
        return self._out(labels, is_torch, orig)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit and return ``labels_`` (a tensor on ``X``'s device when ``X`` is a tensor).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like or torch.Tensor of shape (n_samples,), optional

        Returns
        -------
        labels : numpy.ndarray or torch.Tensor of shape (n_samples,), int64
        """
        self.fit(X, sample_weight=sample_weight)
        if torch.is_tensor(X):
            return torch.from_numpy(self.labels_).to(X.device)
        return self.labels_

    def transform(self, X):
        """Euclidean distance of each sample to every cluster center.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        distances : numpy.ndarray or torch.Tensor of shape (n_samples, n_clusters)
            In the compute dtype; a tensor on ``X``'s device when ``X`` is a tensor.
        """
        orig = X
        X, is_torch, centers, device = self._fitted_inputs(X)
        cs, chunks = _shifted_chunks(X, centers)
        c_sq = (cs * cs).sum(1)
        out = torch.empty((X.shape[0], centers.shape[0]), dtype=X.dtype, device=device)
        for start, xc in chunks:
            out[start:start + xc.shape[0]] = pairwise_sq_distances(xc, cs, y_sq_norms=c_sq)
        return self._out(out.sqrt_(), is_torch, orig)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of ``X`` against the fitted centers.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like or torch.Tensor of shape (n_samples,), optional

        Returns
        -------
        float
            ``-sum_i w_i * min_j ||x_i - c_j||^2``.
        """
        X, _, centers, device = self._fitted_inputs(X)
        w = _prepare_weights(sample_weight, X.shape[0], X.dtype, device)
        _, min_sq = self._assign(X, centers)
        if w is None:
            return -float(min_sq.sum(dtype=torch.float64))
        return -float((w.to(torch.float64) * min_sq.to(torch.float64)).sum())

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]


# ------------------------------------------------------------------------ torch algorithm


def kmeans_plusplus(X, n_clusters, *, sample_weight=None, x_squared_norms=None,
                    random_state=None, initial_centers=None, first_center="weighted"):
    """Initial centers by greedy k-means++: the seeding of ``KMeans(init="k-means++")`` and of
    :class:`interestflow.tracking.SegmentTracker`'s warm starts.

    scikit-learn's algorithm on its random stream: the first center is a row drawn with
    probability proportional to ``sample_weight``; each next one is, of ``2 +
    int(log(n_clusters))`` rows drawn with probability proportional to weight times squared
    distance to the nearest center so far, the one that lowers the weighted sum of those
    distances most. For the same ``random_state`` it picks the rows
    :func:`sklearn.cluster.kmeans_plusplus` picks (but for floating-point ties).
    ``initial_centers`` continues a seeding from centers already chosen (the tracker's: the
    previous snapshot's centroids that still have members).

    Parameters
    ----------
    X : numpy.ndarray or torch.Tensor of shape (n_samples, n_features)
        Finite values; a tensor is used on its own device. float32 and float64 are used as
        they are, half precision as float32, anything else as float64. Distances are
        computed as ``||x||^2 - 2 x.c + ||c||^2``: for data far from the origin, pass it
        centred (``KMeans`` seeds its centred copy of ``X``).
    n_clusters : int
        Centers to return, ``initial_centers`` included: ``max(1, n_initial) <= n_clusters
        <= n_samples + n_initial``.
    sample_weight : array-like or torch.Tensor of shape (n_samples,), optional
        Non-negative, finite, not all zero; default all ones.
    x_squared_norms : array-like or torch.Tensor of shape (n_samples,), optional
        ``(X * X).sum(1)``; computed when omitted.
    random_state : int, numpy.random.RandomState or None, default=None
        A ``RandomState`` is advanced, as scikit-learn does.
    initial_centers : array-like or torch.Tensor of shape (n_initial, n_features), optional
        Centers already chosen, finite; taken in the working dtype. They are the first rows
        of the result and the seeding continues from their squared distances (no first
        center is drawn). Zero rows or None: a seeding from scratch.
    first_center : {"weighted", "uniform"}, default="weighted"
        How a center is drawn where no squared distance can guide the draw: the first one,
        and (``"uniform"`` only) any drawn once every row already is a center.
        ``"weighted"``: scikit-learn's rule (the first center with probability proportional
        to ``sample_weight``; once all distances are zero, the candidates fall on row 0).
        ``"uniform"``: one row drawn by ``random_state.randint(n_samples)``, weights
        ignored (the tracker's rule).

    Returns
    -------
    centers : numpy.ndarray or torch.Tensor of shape (n_clusters, n_features)
        ``initial_centers`` then the picked rows of ``X`` (copies) in the working dtype; a
        tensor on ``X``'s device when ``X`` is a tensor, else numpy.
    indices : numpy.ndarray or torch.Tensor of shape (n_clusters,), int64
        Row number in ``X`` of each center, in the order they were picked; ``-1`` for the
        initial centers.

    Raises
    ------
    ValueError
        ``X`` not 2-D, empty or not finite, ``n_clusters`` out of range, bad weights,
        norms or initial centers, an unknown ``first_center``, or a ``random_state`` that is
        not a seed.
    TypeError
        A non-integer ``n_clusters``.

    Examples
    --------
    >>> import numpy as np
    >>> from interestflow.kmeans import kmeans_plusplus
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> centers, idx = kmeans_plusplus(X, 2, random_state=0)
    >>> sorted(int(i) // 2 for i in idx)  # one seed in each pair of nearby rows
    [0, 1]
    >>> centers, idx = kmeans_plusplus(X, 2, initial_centers=X[:1], random_state=0)
    >>> idx.tolist()[0], int(idx[1]) // 2  # the given center, then one of the far pair
    (-1, 1)
    """
    is_torch = torch.is_tensor(X)
    Xt = _seeding_input(X)
    n = Xt.shape[0]
    initial = _initial_centers(initial_centers, Xt)
    n_initial = 0 if initial is None else initial.shape[0]
    n_clusters = check_int("n_clusters", n_clusters, max(1, n_initial), n + n_initial)
    if not isinstance(first_center, str) or first_center not in ("weighted", "uniform"):
        raise ValueError(f"first_center={first_center!r} is not valid; pass 'weighted' or "
                         f"'uniform'")
    w = _prepare_weights(sample_weight, n, Xt.dtype, Xt.device)
    if w is None:
        w = torch.ones(n, dtype=Xt.dtype, device=Xt.device)
    centers, indices = _kmeans_plusplus(Xt, _squared_norms(x_squared_norms, Xt), w,
                                        n_clusters, check_random_state(random_state),
                                        initial=initial, uniform=first_center == "uniform")
    if is_torch:
        return centers, indices
    return centers.cpu().numpy(), indices.cpu().numpy()


def _seeding_input(X) -> torch.Tensor:
    """``X`` of :func:`kmeans_plusplus` as a 2-D finite float32/float64 tensor (numpy without
    a copy where its dtype allows)."""
    if torch.is_tensor(X):
        Xt = X.detach()
        if Xt.dtype in (torch.float16, torch.bfloat16):
            Xt = Xt.to(torch.float32)
        elif Xt.dtype not in (torch.float32, torch.float64):
            Xt = Xt.to(torch.float64)
    else:
        arr = np.asarray(X)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        Xt = _as_tensor(np.ascontiguousarray(arr))
    if Xt.ndim != 2 or Xt.shape[0] < 1:
        raise ValueError(f"X must be 2-D (n_samples, n_features) with at least one sample, "
                         f"got shape {tuple(Xt.shape)}")
    bad = _first_nonfinite(Xt)
    if bad is not None:
        raise ValueError(f"X contains NaN or infinity at row {bad[0]}, column {bad[1]}; "
                         "all values must be finite")
    return Xt


def _initial_centers(initial_centers, Xt):
    """``initial_centers`` of :func:`kmeans_plusplus` checked, as a tensor in ``Xt``'s dtype
    on its device; None when none are given (None or zero rows)."""
    if initial_centers is None:
        return None
    if torch.is_tensor(initial_centers):
        c = initial_centers.detach()
    else:
        arr = np.asarray(initial_centers)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"initial_centers must be an array of numbers, got dtype "
                             f"{arr.dtype}")
        c = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    if c.ndim != 2 or c.shape[1] != Xt.shape[1]:
        raise ValueError(f"initial_centers must have shape (n_initial, {Xt.shape[1]}) to "
                         f"match X, got {tuple(c.shape)}")
    if c.shape[0] == 0:
        return None
    c = c.to(device=Xt.device, dtype=Xt.dtype)
    bad = _first_nonfinite(c)
    if bad is not None:
        raise ValueError(f"initial_centers contains NaN or infinity at row {bad[0]}, column "
                         f"{bad[1]}; all values must be finite")
    return c


def _squared_norms(x_squared_norms, Xt) -> torch.Tensor:
    """``x_squared_norms`` of :func:`kmeans_plusplus` checked, in ``Xt``'s dtype on its
    device; computed from ``Xt`` when None."""
    n = Xt.shape[0]
    if x_squared_norms is None:
        return (Xt * Xt).sum(1)
    x_sq = (x_squared_norms.detach() if torch.is_tensor(x_squared_norms)
            else torch.from_numpy(np.asarray(x_squared_norms, dtype=np.float64)))
    if tuple(x_sq.shape) != (n,):
        raise ValueError(f"x_squared_norms must have shape ({n},) to match X, got "
                         f"{tuple(x_sq.shape)}")
    return x_sq.to(device=Xt.device, dtype=Xt.dtype)


def _kmeans_plusplus(X, x_sq, w, n_clusters, random_state, *, initial=None, uniform=False):
    """Greedy k-means++ (scikit-learn's algorithm) on checked tensors: returns (centers,
    indices) on X's device. :func:`kmeans_plusplus` checks and converts its inputs, then runs
    this; ``KMeans.fit`` runs it on its own checked, centred copy of ``X``.

    Parameters
    ----------
    X : torch.Tensor of shape (n, dim)
    x_sq : torch.Tensor of shape (n,)
        Squared row norms of ``X``.
    w : torch.Tensor of shape (n,)
        Non-negative weights, positive sum.
    n_clusters : int
        Centers returned, ``initial`` included.
    random_state : numpy.random.RandomState
    initial : torch.Tensor of shape (n_initial, dim), optional
        Centers already chosen (at least one row), in ``X``'s dtype on its device; their
        indices are -1.
    uniform : bool, default=False
        Draw one row uniformly (``random_state.randint``) where no distance guides the draw:
        the first center, or once every weighted distance is zero (``first_center``).
    """
    n_trials = 2 + int(np.log(n_clusters))
    n_initial = 0 if initial is None else initial.shape[0]
    indices = torch.empty(n_clusters - n_initial, dtype=torch.int64, device=X.device)
    if n_initial:
        start, closest = 0, _nearest_sq_distances(initial, X, x_sq)
    else:
        first = _first_center(w, random_state, uniform)
        indices[0] = first
        start, closest = 1, pairwise_sq_distances(X[first:first + 1], X, y_sq_norms=x_sq)[0]
    for c in range(start, n_clusters - n_initial):
        cand = _candidates(w, closest, n_trials, random_state, uniform)
        d = pairwise_sq_distances(X[cand], X, y_sq_norms=x_sq)  # (n_trials, n)
        torch.minimum(d, closest, out=d)
        pots = d.to(torch.float64) @ w.to(torch.float64)
        best = torch.argmin(pots)
        closest = d[best]
        indices[c] = cand[best]
    if not n_initial:
        return X[indices], indices
    return (torch.cat([initial, X[indices]]),
            torch.cat([torch.full((n_initial,), -1, dtype=torch.int64, device=X.device),
                       indices]))


def _first_center(w, random_state, uniform: bool) -> int:
    """Row of the first k-means++ center: drawn with probability proportional to ``w``
    (scikit-learn), or uniformly by ``random_state.randint`` when ``uniform``."""
    if uniform:
        return int(random_state.randint(w.shape[0]))
    p = w.to(torch.float64).cpu().numpy()
    return int(random_state.choice(len(p), p=p / p.sum()))


def _nearest_sq_distances(centers, X, x_sq) -> torch.Tensor:
    """Squared distance of every row of ``X`` to its nearest row of ``centers``, computed
    for blocks of centers that keep one ``(block, n)`` temporary under the block budget."""
    step = chunk_rows_for(X.shape[0] * X.element_size())
    closest = None
    for start in range(0, centers.shape[0], step):
        d = pairwise_sq_distances(centers[start:start + step], X, y_sq_norms=x_sq).amin(0)
        closest = d if closest is None else torch.minimum(closest, d)
    return closest


def _candidates(w, closest, n_trials, random_state, uniform: bool) -> torch.Tensor:
    """Rows to try as the next center: ``n_trials`` drawn with probability proportional to
    weight times squared distance to the nearest center; with ``uniform``, one row drawn by
    ``random_state.randint`` once every weighted distance is zero."""
    cum = torch.cumsum((w * closest).to(torch.float64), 0)
    n = cum.shape[0]
    if uniform and not bool(cum[-1] > 0):  # every row already is a center: a duplicate
        return torch.from_numpy(random_state.randint(n, size=1)).to(cum.device)
    rand = torch.from_numpy(random_state.uniform(size=n_trials)).to(cum.device) * cum[-1]
    return torch.searchsorted(cum, rand).clamp_(max=n - 1)


def _shifted_chunks(X, centers):
    """``(cs, chunks)``: ``centers`` minus their mean, and ``(start, block)`` for blocks of
    rows of ``X`` moved to the centers' device minus the same mean.

    The shift leaves distances unchanged and makes their rounding much smaller for data far
    from the origin; shifting block by block avoids copying ``X``. A block holds as many rows
    as keep one ``(rows, max(n_clusters, n_features))`` temporary under the block budget.
    """
    shift = centers.mean(0)
    step = chunk_rows_for(max(centers.shape[0], X.shape[1]) * X.element_size())
    chunks = ((start, X[start:start + step].to(centers.device) - shift)
              for start in range(0, X.shape[0], step))
    return centers - shift, chunks


def _centered(X, w, device):
    """``(Xc, x_mean, x_sq, w_full)``: ``X`` on ``device`` minus its weighted mean, the mean,
    the squared row norms of ``Xc`` and the weights (ones for ``w=None``).

    Centering makes ``||x||^2 - 2 x.c + ||c||^2`` accurate for data far from the origin (as
    scikit-learn does); the weighted mean keeps weights equivalent to repetitions. ``X`` is
    centred in place only when moving it to ``device`` made a copy.
    """
    Xd = X.to(device)
    w_full = w if w is not None else torch.ones(X.shape[0], dtype=X.dtype, device=device)
    x_mean = _weighted_mean(Xd, w_full)
    Xc = Xd.sub_(x_mean) if Xd is not X else Xd - x_mean
    return Xc, x_mean, (Xc * Xc).sum(1), w_full


def _scaled_tol(Xc, x_sq, w_full, tol) -> float:
    """The center-shift tolerance: ``tol`` times the mean per-feature variance of ``Xc``
    (weighted by ``w_full``), as scikit-learn scales it."""
    if tol == 0:
        return 0.0
    # mean per-feature variance = (weighted mean of ||x - mu||^2) / n_features
    resid = _weighted_mean(Xc, w_full).to(torch.float64)
    msq = float((w_full.to(torch.float64) @ x_sq.to(torch.float64))
                / w_full.sum(dtype=torch.float64))
    return max(msq - float(resid @ resid), 0.0) / Xc.shape[1] * float(tol)


def _relocate_empty(Xc, w, labels, min_sq, sums, counts):
    """Re-seed empty clusters, in place, with the points farthest from their centroid.

    Deterministic: empty clusters in increasing index take the farthest points in decreasing
    distance, ties broken by lower row index. Zero-weight rows are never used.
    """
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() == 0:
        return
    key = min_sq.to(torch.float64)
    if w is not None:
        key = torch.where(w > 0, key, torch.full_like(key, -1.0))
    order = torch.sort(key, descending=True, stable=True).indices
    n_fill = min(int(empty.numel()), int((key >= 0).sum()))
    if n_fill == 0:
        return
    far = order[:n_fill]
    empty = empty[:n_fill]
    pts = Xc[far]
    wf = w[far] if w is not None else torch.ones(n_fill, dtype=Xc.dtype, device=Xc.device)
    old = labels[far]
    sums.index_add_(0, old, -(pts * wf[:, None]))
    counts.index_add_(0, old, -wf)
    sums[empty] = pts * wf[:, None]
    counts[empty] = wf


def _weighted_mean(X, w):
    """Weighted column mean of ``X`` (one matrix-vector product): shape (dim,)."""
    return (w @ X) / w.sum()


def _weighted_inertia(Xc, w, centers, labels):
    """sum_i w_i ||x_i - c_{l_i}||^2 computed directly (not by expansion), chunked."""
    total = torch.zeros((), dtype=torch.float64, device=Xc.device)
    step = chunk_rows_for(Xc.shape[1] * Xc.element_size(), block_bytes=ELEMENTWISE_BLOCK_BYTES)
    for start in range(0, Xc.shape[0], step):
        diff = Xc[start:start + step] - centers[labels[start:start + step]]
        d = (diff * diff).sum(1).to(torch.float64)
        total += d.sum() if w is None else d @ w[start:start + step].to(torch.float64)
    return total


def _bf16_rows(backend, Xc, n_clusters):
    """The numba backend's bf16 rounding of ``Xc``, made once per fit (``Xc`` does not change
    while fitting); None for other backends or when the assignments would not use bf16."""
    if backend != "numba" or not Xc.is_contiguous():
        return None
    from interestflow.kernels import backend_module

    return backend_module("numba", "kmeans").prepare_bf16_rows(Xc, n_clusters)


def _run(backend, Xc, x_sq, w, centers, *, max_iter, tol, seed, bf16_rows=None):
    """One run of ``backend`` from ``centers``: (labels, inertia, centers, n_iter).

    ``bf16_rows``: :func:`_bf16_rows` of ``Xc`` for the numba backend."""
    if backend == "cuml":
        return _cuml_run(Xc, w, centers, max_iter=max_iter, tol=tol, seed=seed)
    from interestflow.kernels import assign_fn, update_fn
    from interestflow.resolve import BackendChoice

    if backend == "faiss":
        # FAISS's k-NN does the assignment inside the same Lloyd loop as every other
        # backend (same tolerance, empty-cluster rule and n_iter_); the update is torch's.
        assign, update = _faiss_assign(Xc.device), update_fn(BackendChoice("torch", ""))
    else:
        choice = BackendChoice(backend, "")
        assign, update = assign_fn(choice), update_fn(choice)
        if bf16_rows is not None:
            assign = functools.partial(assign, rows=bf16_rows)
    return _lloyd(Xc, x_sq, w, centers, max_iter=max_iter, tol=tol, assign=assign,
                  update=update)


def _faiss_assign(device):
    """``assign(x, c, x_sq_norms=None) -> (labels, min_sq)`` on FAISS's brute-force k-NN.

    CPU: ``faiss.knn`` on float32 numpy views of the tensors (no copy for float32 input).
    CUDA (faiss-gpu): ``faiss.knn_gpu`` on the torch tensors themselves through
    ``faiss.contrib.torch_utils``, so nothing goes through the host. Equal distances may be
    resolved to either centroid (FAISS does not promise the lower index).
    """
    import faiss

    if device.type == "cuda":
        if not hasattr(faiss, "knn_gpu") or faiss.get_num_gpus() < 1:
            raise ValueError(
                "backend='faiss' on CUDA data needs the GPU build of FAISS (faiss-gpu); this "
                "faiss has no GPU support: pass CPU data or another backend"
            )
        import faiss.contrib.torch_utils  # noqa: F401  (faiss functions accept torch tensors)

        res = faiss.StandardGpuResources()

        def assign(x, c, x_sq_norms=None):
            d, i = faiss.knn_gpu(res, x.float().contiguous(), c.float().contiguous(), 1)
            return i[:, 0].long(), d[:, 0].clamp_min(0).to(x.dtype)

        return assign

    def assign(x, c, x_sq_norms=None):
        xs = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        cs = np.ascontiguousarray(c.numpy(), dtype=np.float32)
        d, i = faiss.knn(xs, cs, 1)
        return (torch.from_numpy(i[:, 0].astype(np.int64)),
                torch.from_numpy(np.maximum(d[:, 0], 0)).to(x.dtype))

    return assign


def _cuml_run(Xc, w, centers, *, max_iter, tol, seed):
    """cuML k-means on CUDA data; arrays cross to CuPy and back through DLPack (no host copy)."""
    import cupy
    from cuml.cluster import KMeans as CuKMeans

    km = CuKMeans(n_clusters=centers.shape[0], init=cupy.from_dlpack(centers.contiguous()),
                  n_init=1, max_iter=max_iter, tol=tol, random_state=seed,
                  output_type="cupy")
    sw = None if w is None else cupy.from_dlpack(w.contiguous())
    km.fit(cupy.from_dlpack(Xc.contiguous()), sample_weight=sw)
    new = torch.from_dlpack(km.cluster_centers_).to(Xc.dtype)
    labels, _ = kmeans_assign(Xc, new)
    inertia = _weighted_inertia(Xc, w, new, labels)
    return labels, float(inertia), new, int(km.n_iter_)


def _lloyd(Xc, x_sq, w, centers, *, max_iter, tol, assign=None, update=None):
    """One Lloyd run from ``centers``; returns (labels, inertia, centers, n_iter).

    ``assign(x, c, x_sq_norms=...)`` and ``update(x, labels, k, w)`` are the backend's kernels
    (default: the torch reference).
    """
    if assign is None:
        assign = _ref_assign
    if update is None:
        update = kmeans_update
    n_clusters = centers.shape[0]
    centers = centers.clone()
    labels_old = None
    strict = False
    for i in range(max_iter):
        labels, min_sq = assign(Xc, centers, x_sq_norms=x_sq)
        sums, counts = update(Xc, labels, n_clusters, w)
        sums, counts = sums.to(Xc.dtype), counts.to(Xc.dtype)
        _relocate_empty(Xc, w, labels, min_sq, sums, counts)
        has = (counts > 0).unsqueeze(1)
        new = torch.where(has, sums / torch.where(has, counts.unsqueeze(1), 1), centers)
        shift = float(((new - centers) ** 2).sum(dtype=torch.float64))
        centers = new
        if labels_old is not None and torch.equal(labels, labels_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old = labels
    if not strict:
        # Labels must match the final centers.
        labels, _ = assign(Xc, centers, x_sq_norms=x_sq)
    inertia = _weighted_inertia(Xc, w, centers, labels)
    return labels, float(inertia), centers, i + 1


def _ref_assign(x, c, x_sq_norms=None):
    return kmeans_assign(x, c, x_sq_norms=x_sq_norms)

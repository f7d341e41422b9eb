// Thin nanobind layer: marshal arrays, release the GIL, call the C++ core.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <stdexcept>
#include <string>

#include "interests.hpp"

namespace nb = nanobind;
using namespace nb::literals;

template <typename T>
using Mat = nb::ndarray<const T, nb::numpy, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Vec = nb::ndarray<const T, nb::numpy, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

static nb::tuple grouped_decayed_mean(Mat<float> vectors, Vec<int64_t> offsets,
                                      Vec<double> ts, Vec<double> weights,
                                      Vec<double> ref, double half_life, int n_threads) {
  const int64_t n_rows = static_cast<int64_t>(vectors.shape(0));
  const int64_t dim = static_cast<int64_t>(vectors.shape(1));
  if (offsets.shape(0) < 1) throw std::invalid_argument("offsets must have n_users + 1 entries");
  const int64_t n_users = static_cast<int64_t>(offsets.shape(0)) - 1;
  if (static_cast<int64_t>(ts.shape(0)) != n_rows)
    throw std::invalid_argument("ts has " + std::to_string(ts.shape(0)) + " rows, vectors has " +
                                std::to_string(n_rows));
  if (static_cast<int64_t>(weights.shape(0)) != n_rows)
    throw std::invalid_argument("weights has " + std::to_string(weights.shape(0)) +
                                " rows, vectors has " + std::to_string(n_rows));
  if (static_cast<int64_t>(ref.shape(0)) != n_users)
    throw std::invalid_argument("ref has " + std::to_string(ref.shape(0)) +
                                " entries, expected n_users=" + std::to_string(n_users));

  float* mean = new float[static_cast<size_t>(n_users * dim)];
  double* lws = new double[static_cast<size_t>(n_users)];
  nb::capsule own_mean(mean, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  nb::capsule own_lws(lws, [](void* p) noexcept { delete[] static_cast<double*>(p); });
  {
    nb::gil_scoped_release release;
    interestflow::grouped_decayed_mean(vectors.data(), n_rows, dim, offsets.data(), n_users,
                                       ts.data(), weights.data(), ref.data(), half_life, mean,
                                       lws, n_threads);
  }
  return nb::make_tuple(
      nb::ndarray<nb::numpy, float, nb::ndim<2>>(mean, {static_cast<size_t>(n_users),
                                                        static_cast<size_t>(dim)}, own_mean),
      nb::ndarray<nb::numpy, double, nb::ndim<1>>(lws, {static_cast<size_t>(n_users)}, own_lws));
}

NB_MODULE(_native, m) {
  m.doc() = "interestflow native kernels (C++, OpenMP)";
  m.def("grouped_decayed_mean", &grouped_decayed_mean, "vectors"_a, "offsets"_a, "ts"_a,
        "weights"_a, "ref"_a, "half_life"_a, "n_threads"_a = 0,
        "Per-user time-decayed weighted mean of event vectors; rows grouped by user via "
        "offsets. Returns (means (n_users, dim) float32, log2 weight sums (n_users,)).");
}

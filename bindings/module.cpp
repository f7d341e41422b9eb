// Thin nanobind layer: check shapes and dtypes, release the GIL, call the C++ core.
// std::invalid_argument thrown by the core reaches Python as ValueError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "interests.hpp"
#include "ward.hpp"

namespace nb = nanobind;
using namespace nb::literals;

// Any dtype: checked below so that a float64 or strided array is an error, not a silent copy.
using AnyMat = nb::ndarray<nb::ro, nb::ndim<2>, nb::device::cpu>;
template <typename T>
using Vec = nb::ndarray<const T, nb::numpy, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

namespace {

std::string dtype_name(nb::dlpack::dtype d) {
  const char* kind = d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float)  ? "float"
                     : d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Int)  ? "int"
                     : d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::UInt) ? "uint"
                     : d.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bool) ? "bool"
                                                                                     : "other";
  return std::string(kind) + std::to_string(d.bits);
}

void check_len(const char* name, size_t got, int64_t want, const char* what) {
  if (static_cast<int64_t>(got) != want) {
    throw std::invalid_argument(std::string(name) + " has " + std::to_string(got) +
                                " entries, expected " + std::to_string(want) + " (" + what + ")");
  }
}

// Shapes and dtype shared by every kernel over user-grouped rows (float32 or float16
// C-contiguous vectors, n_users + 1 offsets, one ts/weight per row, one ref per user).
struct Grouped {
  bool is_f32;
  int64_t n_rows, dim, n_users;
};

Grouped check_grouped(const AnyMat& vectors, const Vec<int64_t>& offsets,
                      const Vec<double>& ts, const Vec<double>& weights,
                      const Vec<double>& ref) {
  const nb::dlpack::dtype dt = vectors.dtype();
  const bool is_f32 = dt == nb::dtype<float>();
  const bool is_f16 =
      dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && dt.bits == 16 &&
      dt.lanes == 1;
  if (!is_f32 && !is_f16) {
    throw nb::type_error(("vectors must be float32 or float16, got " + dtype_name(dt)).c_str());
  }
  const int64_t n_rows = static_cast<int64_t>(vectors.shape(0));
  const int64_t dim = static_cast<int64_t>(vectors.shape(1));
  if (n_rows > 0 && dim > 0 &&
      !(vectors.stride(1) == 1 && (n_rows == 1 || vectors.stride(0) == dim))) {
    throw std::invalid_argument("vectors must be C-contiguous (use np.ascontiguousarray)");
  }
  if (offsets.shape(0) < 1) {
    throw std::invalid_argument("offsets must have n_users + 1 >= 1 entries, got 0");
  }
  const int64_t n_users = static_cast<int64_t>(offsets.shape(0)) - 1;
  check_len("ts", ts.shape(0), n_rows, "one per vector row");
  check_len("weights", weights.shape(0), n_rows, "one per vector row");
  check_len("ref", ref.shape(0), n_users, "one per user, len(offsets) - 1");
  return {is_f32, n_rows, dim, n_users};
}

nb::tuple grouped_decayed_mean(AnyMat vectors, Vec<int64_t> offsets, Vec<double> ts,
                               Vec<double> weights, Vec<double> ref, double half_life,
                               int n_threads) {
  const Grouped g = check_grouped(vectors, offsets, ts, weights, ref);
  const bool is_f32 = g.is_f32;
  const int64_t n_rows = g.n_rows, dim = g.dim, n_users = g.n_users;

  const size_t n_out = static_cast<size_t>(n_users) * static_cast<size_t>(dim);
  std::unique_ptr<float[]> mean(new float[n_out > 0 ? n_out : 1]);
  std::unique_ptr<double[]> lws(new double[n_users > 0 ? n_users : 1]);
  {
    nb::gil_scoped_release release;
    if (is_f32) {
      interestflow::grouped_decayed_mean(static_cast<const float*>(vectors.data()), n_rows, dim,
                                         offsets.data(), n_users, ts.data(), weights.data(),
                                         ref.data(), half_life, mean.get(), lws.get(),
                                         n_threads);
    } else {
      interestflow::grouped_decayed_mean(static_cast<const uint16_t*>(vectors.data()), n_rows,
                                         dim, offsets.data(), n_users, ts.data(), weights.data(),
                                         ref.data(), half_life, mean.get(), lws.get(),
                                         n_threads);
    }
  }
  float* mean_p = mean.release();
  double* lws_p = lws.release();
  nb::capsule own_mean(mean_p, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  nb::capsule own_lws(lws_p, [](void* p) noexcept { delete[] static_cast<double*>(p); });
  return nb::make_tuple(
      nb::ndarray<nb::numpy, float, nb::ndim<2>>(
          mean_p, {static_cast<size_t>(n_users), static_cast<size_t>(dim)}, own_mean),
      nb::ndarray<nb::numpy, double, nb::ndim<1>>(lws_p, {static_cast<size_t>(n_users)},
                                                  own_lws));
}

// numpy array owning a std::vector's buffer (no copy).
template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> owned(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule own(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T, nb::ndim<1>>(heap->data(), {heap->size()}, own);
}

nb::tuple ward_interests(AnyMat vectors, Vec<int64_t> offsets, Vec<double> ts,
                         Vec<double> weights, Vec<double> ref, double half_life,
                         double threshold, int64_t max_events, int64_t max_interests,
                         int n_threads) {
  const Grouped g = check_grouped(vectors, offsets, ts, weights, ref);
  const bool is_f32 = g.is_f32;
  const int64_t n_rows = g.n_rows, dim = g.dim, n_users = g.n_users;

  interestflow::WardInterests r;
  {
    nb::gil_scoped_release release;
    if (is_f32) {
      r = interestflow::ward_user_interests(
          static_cast<const float*>(vectors.data()), n_rows, dim, offsets.data(), n_users,
          ts.data(), weights.data(), ref.data(), half_life, threshold, max_events,
          max_interests, n_threads);
    } else {
      r = interestflow::ward_user_interests(
          static_cast<const uint16_t*>(vectors.data()), n_rows, dim, offsets.data(), n_users,
          ts.data(), weights.data(), ref.data(), half_life, threshold, max_events,
          max_interests, n_threads);
    }
  }
  return nb::make_tuple(owned(std::move(r.interest_offsets)), owned(std::move(r.medoid_rows)),
                        owned(std::move(r.importance)), owned(std::move(r.sizes)),
                        owned(std::move(r.labels)), owned(std::move(r.n_clustered)),
                        owned(std::move(r.n_found)));
}

// Testing aid: convert float16 bit patterns (uint16) with a named implementation.
nb::object f16_to_f32(Vec<uint16_t> halves, const std::string& impl) {
  const size_t n = halves.shape(0);
  std::unique_ptr<float[]> out(new float[n > 0 ? n : 1]);
  if (!interestflow::halves_to_floats_with(impl, halves.data(), out.get(),
                                           static_cast<int64_t>(n))) {
    return nb::none();
  }
  float* p = out.release();
  nb::capsule own(p, [](void* q) noexcept { delete[] static_cast<float*>(q); });
  return nb::cast(nb::ndarray<nb::numpy, float, nb::ndim<1>>(p, {n}, own));
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "interestflow native kernels (C++, OpenMP)";
  m.def("grouped_decayed_mean", &grouped_decayed_mean, "vectors"_a, "offsets"_a, "ts"_a,
        "weights"_a, "ref"_a, "half_life_seconds"_a, "n_threads"_a = 0,
        "grouped_decayed_mean(vectors, offsets, ts, weights, ref, half_life_seconds, "
        "n_threads=0)\n\n"
        "Per-user time-decayed weighted mean of event vectors; rows grouped by user via "
        "offsets.\n\n"
        "vectors: (n_rows, dim) float32 or float16, C-contiguous. offsets: (n_users + 1,) "
        "int64, non-decreasing, 0 .. n_rows. ts, weights: (n_rows,) float64. ref: (n_users,) "
        "float64 reference time of each user. Row i of user u has weight "
        "weights[i] * 2**(-(ref[u] - ts[i]) / half_life_seconds); half_life_seconds <= 0 or "
        "inf disables decay. n_threads <= 0 uses the OpenMP default. Releases the GIL.\n\n"
        "Returns (means (n_users, dim) float32, log2_weight_sums (n_users,) float64); users "
        "with no rows or only zero weights get zeros and -inf. Raises ValueError naming the "
        "row on bad offsets, non-finite or negative weights, non-finite ts / ref / vectors.");
  m.def("ward_interests", &ward_interests, "vectors"_a, "offsets"_a, "ts"_a, "weights"_a,
        "ref"_a, "half_life_seconds"_a, "threshold"_a, "max_events"_a, "max_interests"_a,
        "n_threads"_a = 0,
        "ward_interests(vectors, offsets, ts, weights, ref, half_life_seconds, threshold, "
        "max_events, max_interests, n_threads=0)\n\n"
        "Per-user Ward clustering of event vectors cut at a distance threshold (the partitions "
        "of scipy's linkage(method='ward') + fcluster(criterion='distance')), with a medoid "
        "and a time-decayed importance per cluster; rows grouped by user via offsets.\n\n"
        "vectors: (n_rows, dim) float32 or float16, C-contiguous. offsets: (n_users + 1,) "
        "int64. ts, weights: (n_rows,) float64. ref: (n_users,) float64. Importance of a "
        "cluster: sum of weights[i] * 2**(-(ref[u] - ts[i]) / half_life_seconds) over its "
        "members (half_life_seconds <= 0 or inf: no decay). Only the max_events most recent "
        "events of a user are clustered (1 <= max_events <= ward_max_events_limit); "
        "max_interests > 0 keeps that many most important clusters. Releases the GIL."
        "\n\nReturns (interest_offsets (n_users + 1,), medoid_rows (n_interests,), "
        "importance (n_interests,) float64, sizes (n_interests,), labels (n_rows,): "
        "interest within the user, -1 = not clustered (beyond max_events), -2 = cluster "
        "beyond max_interests; n_clustered (n_users,), n_found (n_users,): clusters "
        "before the max_interests cut); integer arrays are int64.  Interests are ordered "
        "by importance, largest first.");
  m.attr("ward_max_events_limit") = interestflow::kWardMaxEventsLimit;
  m.def("_f16_to_f32", &f16_to_f32, "halves"_a, "impl"_a,
        "Testing aid: float16 bit patterns (uint16) -> float32 with the named implementation "
        "('avx512', 'f16c', 'portable'); None when unavailable on this build / CPU.");
  m.attr("f16_impl") = interestflow::halves_to_floats_impl();
  m.attr("openmp") =
#ifdef INTERESTFLOW_OPENMP
      true;
#else
      false;
#endif
}

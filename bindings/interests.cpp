#include "interests.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef INTERESTFLOW_OPENMP
#include <omp.h>
#endif

// Run-time dispatch to AVX-512 / AVX2 code paths without -march=native, so one wheel runs on
// any x86-64 CPU.  Needs GCC and glibc's ifunc; elsewhere the portable build is used.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define IF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define IF_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define IF_RESTRICT __restrict__
#define IF_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define IF_RESTRICT __restrict
#define IF_INLINE __forceinline
#else
#define IF_RESTRICT
#define IF_INLINE inline
#endif

namespace interestflow {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// Rows per block when one user's rows are split across threads.
constexpr int64_t kSplitBlock = 256;
// A user is split across threads only when it holds at least this many rows and at least
// 1 / (2 * n_threads) of all rows, i.e. when it alone would leave other threads idle.
constexpr int64_t kSplitMinRows = 8192;
// Below this many vector elements, starting threads costs more than the work.
constexpr int64_t kParallelMinElems = int64_t{1} << 16;

std::string num(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

// IEEE binary16 -> binary32, branch-free so that the loops using it vectorise.
IF_INLINE float half_to_float(uint16_t h) {
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  float f;
  std::memcpy(&f, &em, sizeof f);
  f *= 0x1p112f;  // rebias the exponent; exact for normal and subnormal halves
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits = (em >= (0x7c00u << 13)) ? (em | 0x7f800000u) : bits;  // inf / nan keep their payload
  bits |= sign;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

IF_INLINE float load(const float* p, int64_t j) { return p[j]; }
IF_INLINE float load(const uint16_t* p, int64_t j) { return half_to_float(p[j]); }

// acc[0:dim] += sum_i w[i] * rows[i, 0:dim] for n contiguous rows.  Four rows at a time are
// combined in float (full-width SIMD) and the block sum is added to a double accumulator: as
// fast as pure float accumulation here, but the rounding error does not grow with the number
// of rows (relative error of the result stays at float32 rounding, ~1e-7).
template <typename T>
IF_INLINE void accumulate_impl(const T* IF_RESTRICT rows, const double* IF_RESTRICT w,
                               int64_t n, int64_t dim, double* IF_RESTRICT acc) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* IF_RESTRICT r0 = rows + i * dim;
    const T* IF_RESTRICT r1 = r0 + dim;
    const T* IF_RESTRICT r2 = r1 + dim;
    const T* IF_RESTRICT r3 = r2 + dim;
    const float w0 = static_cast<float>(w[i]), w1 = static_cast<float>(w[i + 1]);
    const float w2 = static_cast<float>(w[i + 2]), w3 = static_cast<float>(w[i + 3]);
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) {
      const float block = (w0 * load(r0, j) + w1 * load(r1, j)) +
                          (w2 * load(r2, j) + w3 * load(r3, j));
      acc[j] += static_cast<double>(block);
    }
  }
  for (; i < n; ++i) {
    const T* IF_RESTRICT r = rows + i * dim;
    const double wi = w[i];
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) acc[j] += wi * static_cast<double>(load(r, j));
  }
}

IF_CLONES void accumulate(const float* IF_RESTRICT rows, const double* IF_RESTRICT w, int64_t n,
                          int64_t dim, double* IF_RESTRICT acc) {
  accumulate_impl(rows, w, n, dim, acc);
}

IF_CLONES void accumulate(const uint16_t* IF_RESTRICT rows, const double* IF_RESTRICT w,
                          int64_t n, int64_t dim, double* IF_RESTRICT acc) {
  accumulate_impl(rows, w, n, dim, acc);
}

// out = acc / wsum (zeros when wsum == 0).  Returns false when acc holds a NaN or inf, which
// can only come from a non-finite input vector (finite float32 rows times weights <= 1 cannot
// overflow a double; a four-row float block can only overflow for |values| > 8.5e37), so non-finite vectors are detected without a separate pass over them.
bool finalize(const double* IF_RESTRICT acc, int64_t dim, double wsum, float* IF_RESTRICT out) {
  double probe = 0.0;
  for (int64_t j = 0; j < dim; ++j) probe += acc[j] * 0.0;  // NaN iff some acc[j] is inf/NaN
  if (wsum > 0.0) {
    const double inv = 1.0 / wsum;
    for (int64_t j = 0; j < dim; ++j) out[j] = static_cast<float>(acc[j] * inv);
  } else {
    std::fill(out, out + dim, 0.0f);
  }
  return probe == 0.0;
}

void validate(int64_t n_rows, const int64_t* offsets, int64_t n_users, const double* ts,
              const double* weights, const double* ref) {
  if (offsets[0] != 0) {
    throw std::invalid_argument("offsets[0] must be 0, got " + std::to_string(offsets[0]));
  }
  for (int64_t u = 0; u < n_users; ++u) {
    if (offsets[u + 1] < offsets[u]) {
      throw std::invalid_argument(
          "offsets must be non-decreasing, but offsets[" + std::to_string(u + 1) +
          "]=" + std::to_string(offsets[u + 1]) + " < offsets[" + std::to_string(u) +
          "]=" + std::to_string(offsets[u]) + " (user " + std::to_string(u) + ")");
    }
  }
  if (offsets[n_users] != n_rows) {
    throw std::invalid_argument("offsets[-1] must equal the number of vector rows (" +
                                std::to_string(n_rows) + "), got " +
                                std::to_string(offsets[n_users]));
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    const double w = weights[i];
    if (!(w >= 0.0) || !std::isfinite(w)) {
      throw std::invalid_argument("weights must be finite and >= 0, got " + num(w) +
                                  " at row " + std::to_string(i));
    }
    if (!std::isfinite(ts[i])) {
      throw std::invalid_argument("ts must be finite, got " + num(ts[i]) + " at row " +
                                  std::to_string(i));
    }
  }
  for (int64_t u = 0; u < n_users; ++u) {
    if (!std::isfinite(ref[u])) {
      throw std::invalid_argument("ref must be finite, got " + num(ref[u]) + " for user " +
                                  std::to_string(u));
    }
  }
}

template <typename T>
[[noreturn]] void throw_nonfinite_vector(const T* vectors, int64_t dim, const int64_t* offsets,
                                         int64_t u) {
  for (int64_t i = offsets[u]; i < offsets[u + 1]; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(load(vectors + i * dim, j));
      if (!std::isfinite(v)) {
        throw std::invalid_argument("vectors must be finite, got " + num(v) + " at row " +
                                    std::to_string(i) + ", column " + std::to_string(j) +
                                    " (user " + std::to_string(u) + ")");
      }
    }
  }
  throw std::invalid_argument("weighted sum of vectors overflowed float32 for user " +
                              std::to_string(u) + "; vector values near 3.4e38 must be rescaled");
}

template <typename T>
void run(const T* vectors, int64_t n_rows, int64_t dim, const int64_t* offsets, int64_t n_users,
         const double* ts, const double* weights, const double* ref, double half_life,
         float* out_mean, double* out_lws, int n_threads) {
  if (n_rows < 0 || dim < 0 || n_users < 0) {
    throw std::invalid_argument("negative array size");
  }
  validate(n_rows, offsets, n_users, ts, weights, ref);
  const bool decay = half_life > 0.0 && std::isfinite(half_life);
  const double inv_hl = decay ? 1.0 / half_life : 0.0;

  int threads = 1;
#ifdef INTERESTFLOW_OPENMP
  threads = n_threads > 0 ? n_threads : omp_get_max_threads();
  if (n_rows * std::max<int64_t>(dim, 1) < kParallelMinElems) threads = 1;
#else
  (void)n_threads;
#endif
  const int64_t split_min = std::max<int64_t>(kSplitMinRows, n_rows / (2 * int64_t{threads}));
  std::vector<int64_t> big;
  if (threads > 1) {
    for (int64_t u = 0; u < n_users; ++u) {
      if (offsets[u + 1] - offsets[u] >= split_min) big.push_back(u);
    }
  }
  std::vector<double> rel(static_cast<size_t>(n_rows));  // weight relative to the user's max
  std::vector<double> wsum(static_cast<size_t>(n_users));
  std::vector<double> partial(big.empty() ? 0 : static_cast<size_t>(threads * dim));
  int64_t first_bad_vec = n_users;   // smallest user whose vectors hold NaN / inf
  int64_t first_bad_time = n_users;  // smallest user whose decay exponent overflowed

#ifdef INTERESTFLOW_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    std::vector<double> acc(static_cast<size_t>(dim));
    int64_t bad_vec = n_users, bad_time = n_users;

    // Phase 1: relative weights 2^(log2 w_i - age_i / half_life - max over the user's rows).
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(dynamic, 256)
#endif
    for (int64_t u = 0; u < n_users; ++u) {
      const int64_t lo = offsets[u], hi = offsets[u + 1];
      double emax = kNegInf;
      for (int64_t i = lo; i < hi; ++i) {
        const double w = weights[i];
        double e = kNegInf;
        if (w > 0.0) e = (w == 1.0 ? 0.0 : std::log2(w)) - (ref[u] - ts[i]) * inv_hl;
        rel[i] = e;
        emax = std::max(emax, e);
      }
      if (emax == kNegInf) {  // no rows or all weights zero: no information
        std::fill(rel.begin() + lo, rel.begin() + hi, 0.0);
        wsum[u] = 0.0;
        out_lws[u] = kNegInf;
        continue;
      }
      if (!std::isfinite(emax)) {  // |ref - ts| / half_life overflowed a double
        bad_time = std::min(bad_time, u);
        emax = 0.0;
      }
      double s = 0.0;
      for (int64_t i = lo; i < hi; ++i) {
        const double r = std::exp2(rel[i] - emax);
        rel[i] = r;
        s += r;
      }
      wsum[u] = s;
      out_lws[u] = emax + std::log2(s);
    }
    // (implicit barrier: phase 2 reads weights computed by other threads)

    // Phase 2: each ordinary user's rows are summed by one thread.
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t u = 0; u < n_users; ++u) {
      const int64_t lo = offsets[u], hi = offsets[u + 1];
      if (threads > 1 && hi - lo >= split_min) continue;  // phase 3
      std::fill(acc.begin(), acc.end(), 0.0);
      accumulate(vectors + lo * dim, rel.data() + lo, hi - lo, dim, acc.data());
      if (!finalize(acc.data(), dim, wsum[u], out_mean + u * dim)) bad_vec = std::min(bad_vec, u);
    }

    // Phase 3: heavy users, rows split across threads; partial sums combined in thread order
    // so the result does not depend on scheduling.
    for (const int64_t u : big) {
#ifdef INTERESTFLOW_OPENMP
      const int t = omp_get_thread_num();
#else
      const int t = 0;
#endif
      double* part = partial.data() + static_cast<size_t>(t) * dim;
      std::fill(part, part + dim, 0.0);
      const int64_t lo = offsets[u], hi = offsets[u + 1];
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(static)
#endif
      for (int64_t b = lo; b < hi; b += kSplitBlock) {
        accumulate(vectors + b * dim, rel.data() + b, std::min(kSplitBlock, hi - b), dim, part);
      }
#ifdef INTERESTFLOW_OPENMP
#pragma omp single
#endif
      {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int k = 0; k < threads; ++k) {
          const double* p = partial.data() + static_cast<size_t>(k) * dim;
          for (int64_t j = 0; j < dim; ++j) acc[j] += p[j];
        }
        if (!finalize(acc.data(), dim, wsum[u], out_mean + u * dim)) {
          bad_vec = std::min(bad_vec, u);
        }
      }
    }

#ifdef INTERESTFLOW_OPENMP
#pragma omp critical(interestflow_first_bad)
#endif
    {
      first_bad_vec = std::min(first_bad_vec, bad_vec);
      first_bad_time = std::min(first_bad_time, bad_time);
    }
  }

  if (first_bad_time < n_users) {
    throw std::invalid_argument("(ref - ts) / half_life overflows for user " +
                                std::to_string(first_bad_time) + "; ts and ref must be "
                                "timestamps of a sane magnitude");
  }
  if (first_bad_vec < n_users) throw_nonfinite_vector(vectors, dim, offsets, first_bad_vec);
}

}  // namespace

void grouped_decayed_mean(const float* vectors, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads) {
  run(vectors, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, out_mean,
      out_log2_weight_sum, n_threads);
}

void grouped_decayed_mean(const uint16_t* vectors_f16, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads) {
  run(vectors_f16, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, out_mean,
      out_log2_weight_sum, n_threads);
}

}  // namespace interestflow

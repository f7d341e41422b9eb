#include "interests.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef INTERESTFLOW_OPENMP
#include <omp.h>
#endif

// Run-time dispatch to AVX-512 / AVX2 code paths without -march=native, so one wheel runs on
// any x86-64 CPU.  Needs GCC and glibc's ifunc; elsewhere the portable build is used.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define IF_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define IF_X86_DISPATCH 1
#include <immintrin.h>
#else
#define IF_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define IF_RESTRICT __restrict__
#define IF_INLINE inline __attribute__((always_inline))
#define IF_PREFETCH(p) __builtin_prefetch(p)
#elif defined(_MSC_VER)
#define IF_RESTRICT __restrict
#define IF_INLINE __forceinline
#define IF_PREFETCH(p) ((void)(p))
#else
#define IF_RESTRICT
#define IF_INLINE inline
#define IF_PREFETCH(p) ((void)(p))
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

// acc[0:dim] += sum_i w[i] * rows[i, 0:dim] for n contiguous rows.  Four rows at a time are
// combined in float (full-width SIMD) and the block sum is added to a double accumulator: as
// fast as pure float accumulation here, but the rounding error does not grow with the number
// of rows (relative error of the result stays at float32 rounding, ~1e-7).
// `rows_after` is how many rows of the whole array start at `rows`; rows ~12 KiB ahead (also
// those of the next users) are prefetched, which the hardware prefetcher alone does not keep
// up with across four interleaved row streams.
IF_INLINE void accumulate_impl(const float* IF_RESTRICT rows, const double* IF_RESTRICT w,
                               int64_t n, int64_t dim, double* IF_RESTRICT acc,
                               int64_t rows_after) {
  constexpr int64_t kAhead = 8;
  const int64_t block_bytes = 4 * dim * static_cast<int64_t>(sizeof(float));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* IF_RESTRICT r0 = rows + i * dim;
    const float* IF_RESTRICT r1 = r0 + dim;
    const float* IF_RESTRICT r2 = r1 + dim;
    const float* IF_RESTRICT r3 = r2 + dim;
    if (i + kAhead + 4 <= rows_after) {
      const char* ahead = reinterpret_cast<const char*>(r0 + kAhead * dim);
      for (int64_t b = 0; b < block_bytes; b += 64) IF_PREFETCH(ahead + b);
    }
    const float w0 = static_cast<float>(w[i]), w1 = static_cast<float>(w[i + 1]);
    const float w2 = static_cast<float>(w[i + 2]), w3 = static_cast<float>(w[i + 3]);
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) {
      const float block = (w0 * r0[j] + w1 * r1[j]) + (w2 * r2[j] + w3 * r3[j]);
      acc[j] += static_cast<double>(block);
    }
  }
  for (; i < n; ++i) {
    const float* IF_RESTRICT r = rows + i * dim;
    const double wi = w[i];
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) acc[j] += wi * static_cast<double>(r[j]);
  }
}

IF_CLONES void accumulate_f32(const float* IF_RESTRICT rows, const double* IF_RESTRICT w,
                              int64_t n, int64_t dim, double* IF_RESTRICT acc,
                              int64_t rows_after) {
  accumulate_impl(rows, w, n, dim, acc, rows_after);
}

// float16 -> float32 for a run of values.  Compilers do not vectorise the conversion well on
// their own (GCC 12 emits one vcvtph2ps per value), so x86 uses the F16C / AVX-512 instruction
// explicitly, chosen once at load time; elsewhere the portable bit manipulation above.
void halves_to_floats_portable(const uint16_t* IF_RESTRICT src, float* IF_RESTRICT dst,
                               int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
}

#ifdef IF_X86_DISPATCH
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 header, _mm512_undefined_ps
__attribute__((target("avx512f"))) void halves_to_floats_avx512(const uint16_t* IF_RESTRICT src,
                                                                float* IF_RESTRICT dst,
                                                                int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}
#pragma GCC diagnostic pop

__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* IF_RESTRICT src,
                                                               float* IF_RESTRICT dst,
                                                               int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}
#endif

using HalvesToFloats = void (*)(const uint16_t*, float*, int64_t);

struct HalfImpl {
  const char* name;
  HalvesToFloats fn;
};

// The float16 converters this build has and this CPU runs, best first.
std::vector<HalfImpl> available_half_impls() {
  std::vector<HalfImpl> out;
#ifdef IF_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) out.push_back({"avx512", halves_to_floats_avx512});
  if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c")) {
    out.push_back({"f16c", halves_to_floats_f16c});
  }
#endif
  out.push_back({"portable", halves_to_floats_portable});
  return out;
}

const HalfImpl kHalfImpl = available_half_impls().front();
const HalvesToFloats halves_to_floats = kHalfImpl.fn;

// Rows of float16 converted per step into a per-thread float scratch (multiple of 4, ~32 KiB).
int64_t half_chunk_rows(int64_t dim) {
  const int64_t rows = 8192 / std::max<int64_t>(dim, 1);
  return std::max<int64_t>(4, std::min<int64_t>(64, rows - rows % 4));
}

void accumulate(const float* rows, const double* w, int64_t n, int64_t dim, double* acc,
                int64_t rows_after, float* /*scratch*/) {
  accumulate_f32(rows, w, n, dim, acc, rows_after);
}

// float16 rows: convert a chunk into `scratch` (half_chunk_rows(dim) x dim floats, in L1/L2),
// prefetch the next chunk, then sum the chunk with the float kernel.
void accumulate(const uint16_t* rows, const double* w, int64_t n, int64_t dim, double* acc,
                int64_t rows_after, float* scratch) {
  const int64_t chunk = half_chunk_rows(dim);
  const int64_t chunk_bytes = chunk * dim * static_cast<int64_t>(sizeof(uint16_t));
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    if (i + 2 * chunk <= rows_after) {
      const char* next = reinterpret_cast<const char*>(rows + (i + chunk) * dim);
      for (int64_t b = 0; b < chunk_bytes; b += 64) IF_PREFETCH(next + b);
    }
    halves_to_floats(rows + i * dim, scratch, m * dim);
    accumulate_f32(scratch, w + i, m, dim, acc, /*rows_after=*/0);  // scratch is in cache
  }
}

// out = acc / wsum (zeros when wsum == 0).  Returns false when acc holds a NaN or inf, which
// comes from a non-finite input vector (a four-row float block of finite values times weights
// <= 1 overflows only for |values| > 8.5e37), so non-finite vectors are detected without a
// separate pass over them.
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

inline float to_float(float v) { return v; }
inline float to_float(uint16_t h) { return half_to_float(h); }

template <typename T>
[[noreturn]] void throw_nonfinite_vector(const T* vectors, int64_t dim, const int64_t* offsets,
                                         int64_t u) {
  for (int64_t i = offsets[u]; i < offsets[u + 1]; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(to_float(vectors[i * dim + j]));
      if (!std::isfinite(v)) {
        throw std::invalid_argument("vectors must be finite, got " + num(v) + " at row " +
                                    std::to_string(i) + ", column " + std::to_string(j) +
                                    " (user " + std::to_string(u) + ")");
      }
    }
  }
  throw std::invalid_argument("weighted sum of vectors overflowed float32 for user " +
                              std::to_string(u) +
                              "; vector values near 3.4e38 must be rescaled");
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
  // weight of each row relative to its user's largest; every entry is written in phase 1
  std::unique_ptr<double[]> rel_buf(new double[static_cast<size_t>(std::max<int64_t>(n_rows, 1))]);
  std::unique_ptr<double[]> wsum_buf(
      new double[static_cast<size_t>(std::max<int64_t>(n_users, 1))]);
  double* rel = rel_buf.get();
  double* wsum = wsum_buf.get();
  std::vector<double> partial(big.empty() ? 0 : static_cast<size_t>(threads * dim));
  int64_t first_bad_vec = n_users;   // smallest user whose vectors hold NaN / inf
  int64_t first_bad_time = n_users;  // smallest user whose decay exponent overflowed

#ifdef INTERESTFLOW_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    std::vector<double> acc(static_cast<size_t>(dim));
    std::vector<float> scratch(std::is_same<T, uint16_t>::value
                                   ? static_cast<size_t>(half_chunk_rows(dim) * dim)
                                   : 0);
    int64_t bad_vec = n_users, bad_time = n_users;

    // Phase 1, per user: relative weights 2^(log2 w_i - age_i / half_life - user max), then
    // (except for heavy users) the weighted sum, while the weights are still in cache.
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t u = 0; u < n_users; ++u) {
      const int64_t lo = offsets[u], hi = offsets[u + 1];
      double* r = rel + lo;
      double emax = kNegInf;
      for (int64_t i = lo; i < hi; ++i) {
        const double w = weights[i];
        double e = kNegInf;
        if (w > 0.0) e = (w == 1.0 ? 0.0 : std::log2(w)) - (ref[u] - ts[i]) * inv_hl;
        r[i - lo] = e;
        emax = std::max(emax, e);
      }
      if (emax == kNegInf) {  // no rows or all weights zero: no information
        std::fill(r, r + (hi - lo), 0.0);  // still summed below, so NaN rows are caught
        wsum[u] = 0.0;
        out_lws[u] = kNegInf;
      } else {
        if (!std::isfinite(emax)) {  // |ref - ts| / half_life overflowed a double
          bad_time = std::min(bad_time, u);
          emax = 0.0;
        }
        double s = 0.0;
        for (int64_t i = 0; i < hi - lo; ++i) {
          r[i] = std::exp2(r[i] - emax);
          s += r[i];
        }
        wsum[u] = s;
        out_lws[u] = emax + std::log2(s);
      }
      if (threads > 1 && hi - lo >= split_min) continue;  // heavy: phase 2
      std::fill(acc.begin(), acc.end(), 0.0);
      accumulate(vectors + lo * dim, r, hi - lo, dim, acc.data(), n_rows - lo,
                 scratch.data());
      if (!finalize(acc.data(), dim, wsum[u], out_mean + u * dim)) {
        bad_vec = std::min(bad_vec, u);
      }
    }
    // (implicit barrier: phase 2 reads weights computed by other threads)

    // Phase 2: heavy users, rows split across threads; partial sums combined in thread order
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
        accumulate(vectors + b * dim, rel + b, std::min(kSplitBlock, hi - b), dim, part,
                   n_rows - b, scratch.data());
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

bool halves_to_floats_with(const std::string& impl, const uint16_t* src, float* dst, int64_t n) {
  for (const HalfImpl& h : available_half_impls()) {
    if (impl == h.name) {
      h.fn(src, dst, n);
      return true;
    }
  }
  return false;
}

const char* halves_to_floats_impl() { return kHalfImpl.name; }

void grouped_decayed_mean(const float* vectors, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads) {
  run(vectors, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, out_mean,
      out_log2_weight_sum, n_threads);
}

void validate_grouped(int64_t n_rows, const int64_t* offsets, int64_t n_users,
                      const double* ts, const double* weights, const double* ref) {
  validate(n_rows, offsets, n_users, ts, weights, ref);
}

std::string format_number(double v) { return num(v); }

void grouped_decayed_mean(const uint16_t* vectors_f16, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads) {
  run(vectors_f16, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, out_mean,
      out_log2_weight_sum, n_threads);
}

}  // namespace interestflow

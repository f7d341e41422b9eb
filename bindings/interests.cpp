#include "interests.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef INTERESTFLOW_OPENMP
#include <omp.h>
#endif

namespace interestflow {

void grouped_decayed_mean(const float* vectors, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users,
                          const double* ts, const double* weights, const double* ref,
                          double half_life, float* out_mean, double* out_log2_weight_sum,
                          int n_threads) {
  if (offsets[0] != 0 || offsets[n_users] != n_rows) {
    throw std::invalid_argument("offsets must start at 0 and end at n_rows=" +
                                std::to_string(n_rows));
  }
  for (int64_t u = 0; u < n_users; ++u) {
    if (offsets[u + 1] <= offsets[u]) {
      throw std::invalid_argument("offsets must be strictly increasing (user " +
                                  std::to_string(u) + " has no rows)");
    }
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    if (!(weights[i] >= 0.0) || !std::isfinite(weights[i])) {
      throw std::invalid_argument("weights must be finite and >= 0 (row " + std::to_string(i) +
                                  ")");
    }
    if (!std::isfinite(ts[i])) {
      throw std::invalid_argument("ts must be finite (row " + std::to_string(i) + ")");
    }
  }
  const bool decay = half_life > 0.0 && std::isfinite(half_life);
  const double inv_hl = decay ? 1.0 / half_life : 0.0;

#ifdef INTERESTFLOW_OPENMP
  if (n_threads <= 0) n_threads = omp_get_max_threads();
#pragma omp parallel num_threads(n_threads)
#endif
  {
    std::vector<double> acc(static_cast<size_t>(dim));
    std::vector<double> expo;
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(dynamic, 64)
#endif
    for (int64_t u = 0; u < n_users; ++u) {
      const int64_t lo = offsets[u], hi = offsets[u + 1];
      expo.resize(static_cast<size_t>(hi - lo));
      // exponent (base 2) of each row's weight; the max is factored out for stability
      double emax = -std::numeric_limits<double>::infinity();
      for (int64_t i = lo; i < hi; ++i) {
        const double w = weights[i];
        const double e = (w > 0.0) ? std::log2(w) - (ref[u] - ts[i]) * inv_hl
                                   : -std::numeric_limits<double>::infinity();
        expo[i - lo] = e;
        emax = std::max(emax, e);
      }
      float* out = out_mean + u * dim;
      if (!std::isfinite(emax)) {  // every weight is zero: no information, zero vector
        std::fill(out, out + dim, 0.0f);
        out_log2_weight_sum[u] = -std::numeric_limits<double>::infinity();
        continue;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      double wsum = 0.0;
      for (int64_t i = lo; i < hi; ++i) {
        const double w = std::exp2(expo[i - lo] - emax);
        if (w == 0.0) continue;
        wsum += w;
        const float* row = vectors + i * dim;
        for (int64_t j = 0; j < dim; ++j) acc[j] += w * static_cast<double>(row[j]);
      }
      const double inv = 1.0 / wsum;
      for (int64_t j = 0; j < dim; ++j) out[j] = static_cast<float>(acc[j] * inv);
      out_log2_weight_sum[u] = emax + std::log2(wsum);
    }
  }
}

}  // namespace interestflow

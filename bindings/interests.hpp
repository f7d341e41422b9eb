// Per-user grouped, time-decayed weighted mean of event vectors.
#pragma once
#include <cstdint>

namespace interestflow {

// Rows of `vectors` (n_rows x dim, row-major) are grouped by user: user u owns rows
// [offsets[u], offsets[u+1]).  Row i gets weight weights[i] * 2^(-(ref[u] - ts[i]) / half_life).
// `ref` is one reference time per user.  half_life <= 0 or inf means no decay.
// Weights are computed relative to the user's largest exponent so that long-inactive users do
// not underflow: the mean is exact, and log2_weight_sum[u] holds log2 of the true weight sum.
// Throws std::invalid_argument on bad offsets, negative/non-finite weights or empty groups.
void grouped_decayed_mean(const float* vectors, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users,
                          const double* ts, const double* weights, const double* ref,
                          double half_life, float* out_mean, double* out_log2_weight_sum,
                          int n_threads);

}  // namespace interestflow

// Per-user grouped, time-decayed weighted mean of event vectors.
#pragma once
#include <cstdint>
#include <string>

namespace interestflow {

// Checks shared by every kernel over user-grouped rows: offsets start at 0, never decrease
// and end at n_rows; weights finite and >= 0; ts and ref finite.  Throws
// std::invalid_argument naming the row or user.
void validate_grouped(int64_t n_rows, const int64_t* offsets, int64_t n_users,
                      const double* ts, const double* weights, const double* ref);

// A double printed with 17 significant digits (for error messages).
std::string format_number(double v);

// Rows of `vectors` (n_rows x dim, row-major) are grouped by user: user u owns rows
// [offsets[u], offsets[u+1]).  Row i of user u gets weight
//     weights[i] * 2^(-(ref[u] - ts[i]) / half_life)
// and out_mean[u] (dim floats) is the weighted mean of the user's rows.  `ref` is one
// reference time per user; half_life <= 0 or inf means no decay.
//
// Weights are taken relative to the user's largest log2-weight, so a user inactive for decades
// does not underflow: the mean is exact and out_log2_weight_sum[u] holds log2 of the true
// (un-normalised) weight sum.  A user with no rows, or whose weights are all zero, gets a zero
// vector and log2 weight sum -inf.
//
// Blocks of four rows are summed in float and the blocks accumulated in double (vectorised;
// AVX2/AVX-512 clones chosen at run time on x86-64 glibc builds); float16 rows are converted
// with F16C/AVX-512 where the CPU has it.  Rows of one user are processed by one thread,
// except that users holding a large share of all rows are split across threads so one heavy
// group does not serialise the call.  Results are deterministic for a given n_threads.
//
// Throws std::invalid_argument (naming the row / user and the value) when offsets do not start
// at 0, end at n_rows or decrease; when a weight is negative, NaN or infinite; when a ts or ref
// is not finite; when a vector holds NaN or inf.
void grouped_decayed_mean(const float* vectors, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads);

// Same, for IEEE binary16 vectors given as their raw 16-bit patterns (numpy float16).
void grouped_decayed_mean(const uint16_t* vectors_f16, int64_t n_rows, int64_t dim,
                          const int64_t* offsets, int64_t n_users, const double* ts,
                          const double* weights, const double* ref, double half_life,
                          float* out_mean, double* out_log2_weight_sum, int n_threads);

// float16 -> float32 conversion used for float16 vectors: the implementation chosen for this
// CPU ("avx512", "f16c" or "portable"), and a testing aid that runs a named implementation
// (returns false when this build or CPU lacks it).
const char* halves_to_floats_impl();
bool halves_to_floats_with(const std::string& impl, const uint16_t* src, float* dst, int64_t n);

}  // namespace interestflow

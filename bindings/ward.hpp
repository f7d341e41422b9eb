// Per-user multi-interest: Ward agglomerative clustering of each user's own event vectors,
// cut at a distance threshold, with a medoid and a time-decayed importance per cluster.
#pragma once
#include <cstdint>
#include <vector>

namespace interestflow {

// Largest accepted `max_events`: clustering m events holds two m x m arrays of doubles per
// thread (16 * m^2 bytes: 4 MB at m = 500, 64 MiB at this limit).
constexpr int64_t kWardMaxEventsLimit = 2048;

// Flat result of ward_user_interests.  Interests of user u are entries
// [interest_offsets[u], interest_offsets[u+1]) of medoid_rows / importance / sizes, ordered by
// importance (largest first; equal importances: the interest whose first member row is lower
// comes first).
struct WardInterests {
  std::vector<int64_t> interest_offsets;  // (n_users + 1)
  std::vector<int64_t> medoid_rows;       // (n_interests) global row of the medoid event
  std::vector<double> importance;         // (n_interests) decayed weight sum of members
  std::vector<int64_t> sizes;             // (n_interests) member count
  // (n_rows) interest of each event, local to its user (0 = most important); -1: the event was
  // not clustered (older than the user's `max_events` most recent events); -2: its cluster was
  // beyond the user's `max_interests` most important ones.
  std::vector<int64_t> labels;
  std::vector<int64_t> n_clustered;  // (n_users) events clustered: min(count, max_events)
  std::vector<int64_t> n_found;      // (n_users) clusters before the max_interests cut
};

// Rows of `vectors` (n_rows x dim, row-major) are grouped by user: user u owns rows
// [offsets[u], offsets[u+1]).  For each user (in parallel, dynamic schedule):
//
// 1. Events clustered: all of the user's rows when there are at most `max_events`, otherwise
//    the `max_events` most recent by ts (equal ts: the later row), taken in row order.
// 2. Ward linkage on Euclidean distances, computed exactly as
//    scipy.cluster.hierarchy.linkage(X.astype(float64), method="ward") does (same float64
//    distance summation, same nearest-neighbour-chain merge order and tie-breaking, same
//    Lance-Williams update, same stable sort by merge height and relabelling), then the flat
//    clusters of fcluster(Z, t=threshold, criterion="distance") (a cluster is formed by a node
//    whose largest merge height in its subtree is <= threshold).  The partitions are equal to
//    scipy's, ties and duplicate vectors included.
// 3. Per cluster: the medoid is the member minimising the sum of squared Euclidean distances
//    to the cluster's members (for unit vectors: the largest summed cosine to them; in general
//    the member nearest the centroid); equal sums go to the lower row.  The importance is
//    sum of weights[i] * 2^(-(ref[u] - ts[i]) / half_life) over the members, summed in row
//    order; half_life <= 0 or inf means no decay.
// 4. Clusters ordered by importance, then only the first `max_interests` kept (0: all).
//
// Threshold semantics: merging two singletons costs their Euclidean distance; in general the
// Ward height of merging clusters A and B is sqrt(2 |A| |B| / (|A| + |B|)) * |c_A - c_B|.
//
// Throws std::invalid_argument (naming the row / user and the value) for: offsets not starting
// at 0, decreasing or not ending at n_rows; negative, NaN or infinite weights; non-finite ts or
// ref; a NaN or infinite vector among the events clustered; threshold NaN or < 0; max_events
// outside [1, kWardMaxEventsLimit]; max_interests < 0; an importance that overflows a double.
WardInterests ward_user_interests(const float* vectors, int64_t n_rows, int64_t dim,
                                  const int64_t* offsets, int64_t n_users, const double* ts,
                                  const double* weights, const double* ref, double half_life,
                                  double threshold, int64_t max_events, int64_t max_interests,
                                  int n_threads);

// Same, for IEEE binary16 vectors given as their raw 16-bit patterns (numpy float16).
WardInterests ward_user_interests(const uint16_t* vectors_f16, int64_t n_rows, int64_t dim,
                                  const int64_t* offsets, int64_t n_users, const double* ts,
                                  const double* weights, const double* ref, double half_life,
                                  double threshold, int64_t max_events, int64_t max_interests,
                                  int n_threads);

}  // namespace interestflow

#include "ward.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "interests.hpp"  // halves_to_floats_with / halves_to_floats_impl

#ifdef INTERESTFLOW_OPENMP
#include <omp.h>
#endif

// This file is compiled with -ffp-contract=off (CMakeLists.txt): the distances and the
// Lance-Williams updates must round exactly like scipy's (no fused multiply-add), so that merge
// heights, and therefore partitions, are bit-identical to scipy's also at ties.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define WARD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WARD_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define WARD_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define WARD_RESTRICT __restrict
#else
#define WARD_RESTRICT
#endif

namespace interestflow {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Columns of the pair-distance block: distances from one event to kLane others at a time, each
// summed over the dimensions in order (scipy's order), the kLane sums in one SIMD register set.
constexpr int64_t kLane = 8;
// Below this many vector elements, starting threads costs more than the work.
constexpr int64_t kParallelMinElems = int64_t{1} << 15;

std::string num(double v) { return format_number(v); }

// Squared Euclidean distances from event a to events b0 .. b0 + kLane - 1.  xt is the user's
// events transposed, dim x stride doubles (column b = event b).  Every sum runs over j in order
// with one rounding per step, as scipy.spatial.distance.pdist does on float64 input.
WARD_CLONES void sqdist_block(const double* WARD_RESTRICT xt, int64_t stride, int64_t dim,
                              int64_t a, int64_t b0, double* WARD_RESTRICT out) {
  double acc[kLane] = {};
  for (int64_t j = 0; j < dim; ++j) {
    const double xa = xt[j * stride + a];
    const double* WARD_RESTRICT r = xt + j * stride + b0;
#pragma omp simd
    for (int64_t l = 0; l < kLane; ++l) {
      const double d = xa - r[l];
      acc[l] += d * d;
    }
  }
  for (int64_t l = 0; l < kLane; ++l) out[l] = acc[l];
}

// scipy's _ward distance update, same expression and evaluation order.
inline double ward_update(double d_xi, double d_yi, double d_xy, int size_x, int size_y,
                          int size_i) {
  const double t = 1.0 / (size_x + size_y + size_i);
  return std::sqrt((size_i + size_x) * t * d_xi * d_xi + (size_i + size_y) * t * d_yi * d_yi -
                   size_i * t * d_xy * d_xy);
}

// numpy's sort order for the merge heights: NaN last.
inline bool height_less(double a, double b) { return a < b || (!std::isnan(a) && std::isnan(b)); }

struct Merge {
  int x, y;
  double height;
};

// Per-thread scratch, grown on demand.
struct Workspace {
  std::vector<int64_t> rows;      // global rows of the events clustered, ascending
  std::vector<int64_t> order;     // recency selection scratch
  std::vector<float> rowbuf;      // float16 -> float32 conversion
  std::vector<double> xt;         // dim x stride, transposed events
  std::vector<double> dist;       // m x m current Ward distances
  std::vector<double> sq;         // m x m squared pair distances (medoids)
  std::vector<double> block;      // kLane
  std::vector<int> size, chain;
  std::vector<Merge> merges;
  std::vector<int> merge_order;
  std::vector<int> uf, tree_parent;
  std::vector<double> max_dist;
  std::vector<int> node_cluster;
  std::vector<int> leaf_cluster;
  std::vector<int> cl_first, cl_count, cl_medoid, cl_rank, cl_pos, members;
  std::vector<double> cl_importance, rel;
};

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

inline int uf_find(std::vector<int>& parent, int x) {
  int root = x;
  while (parent[root] != root) root = parent[root];
  while (parent[x] != root) {
    const int next = parent[x];
    parent[x] = root;
    x = next;
  }
  return root;
}

// Loads the user's clustered events as doubles into ws.xt (transposed).  Returns false when one
// holds NaN / inf.
template <typename T>
bool load_events(const T* vectors, int64_t dim, int64_t m, Workspace& ws, int64_t stride,
                 const char* half_impl) {
  double* xt = ws.xt.data();
  double probe = 0.0;
  for (int64_t a = 0; a < m; ++a) {
    const float* row;
    if constexpr (std::is_same<T, uint16_t>::value) {
      halves_to_floats_with(half_impl, vectors + ws.rows[a] * dim, ws.rowbuf.data(), dim);
      row = ws.rowbuf.data();
    } else {
      row = vectors + ws.rows[a] * dim;
    }
    for (int64_t j = 0; j < dim; ++j) {
      const double v = static_cast<double>(row[j]);
      probe += v * 0.0;  // NaN iff some value is NaN or inf
      xt[j * stride + a] = v;
    }
  }
  for (int64_t j = 0; j < dim; ++j) {
    std::fill(xt + j * stride + m, xt + j * stride + stride, 0.0);  // padding columns
  }
  return probe == 0.0;
}

// scipy.cluster.hierarchy nn_chain for method="ward" on the full m x m matrix ws.dist, merges
// recorded in execution order.
void nn_chain(int m, Workspace& ws) {
  double* D = ws.dist.data();
  int* size = ws.size.data();
  int* chain = ws.chain.data();
  std::fill(size, size + m, 1);
  int chain_length = 0;
  int x = 0, y = 0;  // y keeps its value across steps, as in scipy
  for (int k = 0; k < m - 1; ++k) {
    if (chain_length == 0) {
      chain_length = 1;
      for (int i = 0; i < m; ++i) {
        if (size[i] > 0) {
          chain[0] = i;
          break;
        }
      }
    }
    double current_min;
    while (true) {
      x = chain[chain_length - 1];
      if (chain_length > 1) {
        y = chain[chain_length - 2];
        current_min = D[static_cast<int64_t>(x) * m + y];
      } else {
        current_min = kInf;
      }
      const double* row = D + static_cast<int64_t>(x) * m;
      for (int i = 0; i < m; ++i) {
        if (size[i] == 0 || x == i) continue;
        if (row[i] < current_min) {
          current_min = row[i];
          y = i;
        }
      }
      if (chain_length > 1 && y == chain[chain_length - 2]) break;
      chain[chain_length++] = y;
    }
    chain_length -= 2;
    if (x > y) std::swap(x, y);
    const int nx = size[x], ny = size[y];
    ws.merges[k] = Merge{x, y, current_min};
    size[x] = 0;
    size[y] = nx + ny;
    double* row_y = D + static_cast<int64_t>(y) * m;
    const double* row_x = D + static_cast<int64_t>(x) * m;
    for (int i = 0; i < m; ++i) {
      const int ni = size[i];
      if (ni == 0 || i == y) continue;
      const double v = ward_update(row_x[i], row_y[i], current_min, nx, ny, ni);
      row_y[i] = v;
      D[static_cast<int64_t>(i) * m + y] = v;
    }
  }
}

struct UserOut {
  int64_t* labels;      // n_rows, global
  int64_t* medoid;      // capacity slots of this user
  double* importance;
  int64_t* sizes;
  int64_t n_kept = 0, n_found = 0, n_clustered = 0;
};

enum class Fail { kNone, kVector, kImportance };

template <typename T>
Fail cluster_user(const T* vectors, int64_t dim, int64_t lo, int64_t hi, const double* ts,
                  const double* weights, double ref, double inv_hl, double threshold,
                  int64_t max_events, int64_t max_interests, const char* half_impl,
                  Workspace& ws, UserOut& out) {
  const int64_t n = hi - lo;
  if (n == 0) return Fail::kNone;
  const int m = static_cast<int>(std::min(n, max_events));
  out.n_clustered = m;
  grow(ws.rows, static_cast<size_t>(m));
  if (n <= max_events) {
    for (int a = 0; a < m; ++a) ws.rows[a] = lo + a;
  } else {
    // the max_events most recent events (equal ts: the later row), then back in row order
    grow(ws.order, static_cast<size_t>(n));
    int64_t* ord = ws.order.data();
    for (int64_t i = 0; i < n; ++i) ord[i] = lo + i;
    auto newer = [ts](int64_t p, int64_t q) { return ts[p] > ts[q] || (ts[p] == ts[q] && p > q); };
    std::nth_element(ord, ord + m, ord + n, newer);
    std::sort(ord, ord + m);
    for (int a = 0; a < m; ++a) ws.rows[a] = ord[a];
    for (int64_t i = lo; i < hi; ++i) out.labels[i] = -1;
  }

  // decayed weights; w == 0 stays 0 even when the decay factor overflows
  grow(ws.rel, static_cast<size_t>(m));
  for (int a = 0; a < m; ++a) {
    const int64_t i = ws.rows[a];
    const double w = weights[i];
    ws.rel[a] = w > 0.0 ? (inv_hl == 0.0 ? w : w * std::exp2(-(ref - ts[i]) * inv_hl)) : 0.0;
  }

  const int64_t stride = m + kLane;  // room for a full block past the last event
  grow(ws.xt, static_cast<size_t>(dim * stride));
  if (std::is_same<T, uint16_t>::value) grow(ws.rowbuf, static_cast<size_t>(dim));
  if (!load_events(vectors, dim, m, ws, stride, half_impl)) return Fail::kVector;

  const size_t mm = static_cast<size_t>(m) * static_cast<size_t>(m);
  grow(ws.dist, mm);
  grow(ws.sq, mm);
  grow(ws.block, kLane);
  double* D = ws.dist.data();
  double* S = ws.sq.data();
  for (int a = 0; a < m; ++a) {
    D[static_cast<int64_t>(a) * m + a] = 0.0;
    S[static_cast<int64_t>(a) * m + a] = 0.0;
    for (int64_t b0 = a + 1; b0 < m; b0 += kLane) {
      sqdist_block(ws.xt.data(), stride, dim, a, b0, ws.block.data());
      const int64_t nb = std::min<int64_t>(kLane, m - b0);
      for (int64_t l = 0; l < nb; ++l) {
        const int64_t b = b0 + l;
        const double s = ws.block[l];
        const double d = std::sqrt(s);
        S[a * m + b] = S[b * m + a] = s;
        D[a * m + b] = D[b * m + a] = d;
      }
    }
  }

  // flat clusters: leaf_cluster[a] in 0 .. n_clusters-1
  grow(ws.leaf_cluster, static_cast<size_t>(m));
  int n_clusters = 0;
  if (m == 1) {
    ws.leaf_cluster[0] = 0;
    n_clusters = 1;
  } else {
    grow(ws.size, static_cast<size_t>(m));
    grow(ws.chain, static_cast<size_t>(m) + 1);
    grow(ws.merges, static_cast<size_t>(m - 1));
    nn_chain(m, ws);

    // scipy: stable sort of the merges by height, then relabel with a union-find so that each
    // row refers to the clusters as they are at that point of the sorted order.
    grow(ws.merge_order, static_cast<size_t>(m - 1));
    int* mo = ws.merge_order.data();
    std::iota(mo, mo + (m - 1), 0);
    std::stable_sort(mo, mo + (m - 1), [&ws](int p, int q) {
      return height_less(ws.merges[p].height, ws.merges[q].height);
    });
    const int n_nodes = 2 * m - 1;
    grow(ws.uf, static_cast<size_t>(n_nodes));
    grow(ws.tree_parent, static_cast<size_t>(n_nodes));
    grow(ws.max_dist, static_cast<size_t>(m - 1));
    grow(ws.node_cluster, static_cast<size_t>(n_nodes));
    std::iota(ws.uf.begin(), ws.uf.begin() + n_nodes, 0);
    ws.tree_parent[n_nodes - 1] = -1;
    for (int r = 0; r < m - 1; ++r) {
      const Merge& mg = ws.merges[mo[r]];
      const int xr = uf_find(ws.uf, mg.x), yr = uf_find(ws.uf, mg.y);
      const int node = m + r;
      ws.uf[xr] = node;
      ws.uf[yr] = node;
      ws.tree_parent[xr] = node;
      ws.tree_parent[yr] = node;
      // largest merge height in the subtree (scipy's get_max_dist_for_each_cluster)
      double md = mg.height;
      if (xr >= m && ws.max_dist[xr - m] > md) md = ws.max_dist[xr - m];
      if (yr >= m && ws.max_dist[yr - m] > md) md = ws.max_dist[yr - m];
      ws.max_dist[r] = md;
    }
    // scipy's cluster_monocrit: the highest node with max_dist <= threshold on each root path
    // forms a cluster; leaves under no such node are singletons.  Parents have higher ids.
    for (int r = m - 2; r >= 0; --r) {
      const int node = m + r;
      const int p = ws.tree_parent[node];
      const int pc = p < 0 ? -1 : ws.node_cluster[p];
      ws.node_cluster[node] = pc >= 0 ? pc : (ws.max_dist[r] <= threshold ? n_clusters++ : -1);
    }
    for (int a = 0; a < m; ++a) {
      const int pc = ws.node_cluster[ws.tree_parent[a]];
      ws.leaf_cluster[a] = pc >= 0 ? pc : n_clusters++;
    }
  }

  // members of each cluster in row order (counting sort)
  grow(ws.cl_first, static_cast<size_t>(n_clusters) + 1);
  grow(ws.cl_count, static_cast<size_t>(n_clusters));
  grow(ws.cl_pos, static_cast<size_t>(n_clusters));
  grow(ws.members, static_cast<size_t>(m));
  std::fill(ws.cl_count.begin(), ws.cl_count.begin() + n_clusters, 0);
  for (int a = 0; a < m; ++a) ++ws.cl_count[ws.leaf_cluster[a]];
  ws.cl_first[0] = 0;
  for (int c = 0; c < n_clusters; ++c) ws.cl_first[c + 1] = ws.cl_first[c] + ws.cl_count[c];
  std::copy(ws.cl_first.begin(), ws.cl_first.begin() + n_clusters, ws.cl_pos.begin());
  for (int a = 0; a < m; ++a) ws.members[ws.cl_pos[ws.leaf_cluster[a]]++] = a;

  grow(ws.cl_importance, static_cast<size_t>(n_clusters));
  grow(ws.cl_medoid, static_cast<size_t>(n_clusters));
  grow(ws.cl_rank, static_cast<size_t>(n_clusters));
  for (int c = 0; c < n_clusters; ++c) {
    const int* mem = ws.members.data() + ws.cl_first[c];
    const int cnt = ws.cl_count[c];
    double imp = 0.0;
    for (int p = 0; p < cnt; ++p) imp += ws.rel[mem[p]];
    if (!std::isfinite(imp)) return Fail::kImportance;
    ws.cl_importance[c] = imp;
    int best = mem[0];
    double best_sum = kInf;
    for (int p = 0; p < cnt; ++p) {
      const double* srow = S + static_cast<int64_t>(mem[p]) * m;
      double s = 0.0;
      for (int q = 0; q < cnt; ++q) s += srow[mem[q]];
      if (s < best_sum) {
        best_sum = s;
        best = mem[p];
      }
    }
    ws.cl_medoid[c] = best;
  }

  // order: importance descending, then the lower first member row
  int* rank = ws.cl_rank.data();
  std::iota(rank, rank + n_clusters, 0);
  std::sort(rank, rank + n_clusters, [&ws](int p, int q) {
    const double ip = ws.cl_importance[p], iq = ws.cl_importance[q];
    if (ip != iq) return ip > iq;
    return ws.members[ws.cl_first[p]] < ws.members[ws.cl_first[q]];
  });
  const int kept = max_interests > 0
                       ? static_cast<int>(std::min<int64_t>(n_clusters, max_interests))
                       : n_clusters;
  out.n_found = n_clusters;
  out.n_kept = kept;
  for (int r = 0; r < n_clusters; ++r) {
    const int c = rank[r];
    const int* mem = ws.members.data() + ws.cl_first[c];
    const int cnt = ws.cl_count[c];
    const int64_t label = r < kept ? r : -2;
    for (int p = 0; p < cnt; ++p) out.labels[ws.rows[mem[p]]] = label;
    if (r < kept) {
      out.medoid[r] = ws.rows[ws.cl_medoid[c]];
      out.importance[r] = ws.cl_importance[c];
      out.sizes[r] = cnt;
    }
  }
  return Fail::kNone;
}

void validate(int64_t n_rows, const int64_t* offsets, int64_t n_users, const double* ts,
              const double* weights, const double* ref, double threshold, int64_t max_events,
              int64_t max_interests) {
  if (std::isnan(threshold) || threshold < 0.0) {
    throw std::invalid_argument("threshold must be >= 0 (inf: one interest per user), got " +
                                num(threshold));
  }
  if (max_events < 1 || max_events > kWardMaxEventsLimit) {
    throw std::invalid_argument("max_events must be in [1, " +
                                std::to_string(kWardMaxEventsLimit) + "], got " +
                                std::to_string(max_events));
  }
  if (max_interests < 0) {
    throw std::invalid_argument("max_interests must be >= 0 (0: no limit), got " +
                                std::to_string(max_interests));
  }
  validate_grouped(n_rows, offsets, n_users, ts, weights, ref);
}

inline double to_double(float v) { return v; }
inline double to_double(uint16_t h) {
  float f;
  halves_to_floats_with(halves_to_floats_impl(), &h, &f, 1);
  return f;
}

template <typename T>
[[noreturn]] void throw_nonfinite_vector(const T* vectors, int64_t dim, int64_t lo, int64_t hi,
                                         int64_t u) {
  for (int64_t i = lo; i < hi; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      const double v = to_double(vectors[i * dim + j]);
      if (!std::isfinite(v)) {
        throw std::invalid_argument("vectors must be finite, got " + num(v) + " at row " +
                                    std::to_string(i) + ", column " + std::to_string(j) +
                                    " (user " + std::to_string(u) + ")");
      }
    }
  }
  throw std::invalid_argument("vectors of user " + std::to_string(u) + " are not finite");
}

template <typename T>
WardInterests run(const T* vectors, int64_t n_rows, int64_t dim, const int64_t* offsets,
                  int64_t n_users, const double* ts, const double* weights, const double* ref,
                  double half_life, double threshold, int64_t max_events, int64_t max_interests,
                  int n_threads) {
  if (n_rows < 0 || dim < 0 || n_users < 0) throw std::invalid_argument("negative array size");
  validate(n_rows, offsets, n_users, ts, weights, ref, threshold, max_events, max_interests);
  const bool decay = half_life > 0.0 && std::isfinite(half_life);
  const double inv_hl = decay ? 1.0 / half_life : 0.0;
  const char* half_impl = halves_to_floats_impl();

  WardInterests res;
  res.labels.assign(static_cast<size_t>(n_rows), 0);
  res.n_clustered.assign(static_cast<size_t>(n_users), 0);
  res.n_found.assign(static_cast<size_t>(n_users), 0);
  // a user has at most as many interests as events: results are written at the user's row
  // offset, then compacted
  std::vector<int64_t> medoid(static_cast<size_t>(n_rows)), sizes(static_cast<size_t>(n_rows));
  std::vector<double> importance(static_cast<size_t>(n_rows));
  std::vector<int64_t> n_kept(static_cast<size_t>(n_users), 0);

  int threads = 1;
#ifdef INTERESTFLOW_OPENMP
  threads = n_threads > 0 ? n_threads : omp_get_max_threads();
  if (n_rows * std::max<int64_t>(dim, 1) < kParallelMinElems) threads = 1;
#else
  (void)n_threads;
#endif
  int64_t first_bad_vec = n_users, first_bad_imp = n_users;

#ifdef INTERESTFLOW_OPENMP
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    Workspace ws;
    int64_t bad_vec = n_users, bad_imp = n_users;
#ifdef INTERESTFLOW_OPENMP
#pragma omp for schedule(dynamic, 16)
#endif
    for (int64_t u = 0; u < n_users; ++u) {
      const int64_t lo = offsets[u], hi = offsets[u + 1];
      UserOut out;
      out.labels = res.labels.data();
      out.medoid = medoid.data() + lo;
      out.importance = importance.data() + lo;
      out.sizes = sizes.data() + lo;
      const Fail f = cluster_user(vectors, dim, lo, hi, ts, weights, ref[u], inv_hl, threshold,
                                  max_events, max_interests, half_impl, ws, out);
      if (f == Fail::kVector) bad_vec = std::min(bad_vec, u);
      if (f == Fail::kImportance) bad_imp = std::min(bad_imp, u);
      n_kept[u] = out.n_kept;
      res.n_found[u] = out.n_found;
      res.n_clustered[u] = out.n_clustered;
    }
#ifdef INTERESTFLOW_OPENMP
#pragma omp critical(interestflow_ward_first_bad)
#endif
    {
      first_bad_vec = std::min(first_bad_vec, bad_vec);
      first_bad_imp = std::min(first_bad_imp, bad_imp);
    }
  }
  if (first_bad_vec < n_users) {
    throw_nonfinite_vector(vectors, dim, offsets[first_bad_vec], offsets[first_bad_vec + 1],
                           first_bad_vec);
  }
  if (first_bad_imp < n_users) {
    throw std::invalid_argument(
        "the decayed weight sum of an interest of user " + std::to_string(first_bad_imp) +
        " overflows a double; (ref - ts) / half_life must be of a sane magnitude");
  }

  res.interest_offsets.assign(static_cast<size_t>(n_users) + 1, 0);
  for (int64_t u = 0; u < n_users; ++u) {
    res.interest_offsets[u + 1] = res.interest_offsets[u] + n_kept[u];
  }
  const size_t total = static_cast<size_t>(res.interest_offsets[n_users]);
  res.medoid_rows.resize(total);
  res.importance.resize(total);
  res.sizes.resize(total);
  for (int64_t u = 0; u < n_users; ++u) {
    const int64_t src = offsets[u], dst = res.interest_offsets[u];
    for (int64_t r = 0; r < n_kept[u]; ++r) {
      res.medoid_rows[dst + r] = medoid[src + r];
      res.importance[dst + r] = importance[src + r];
      res.sizes[dst + r] = sizes[src + r];
    }
  }
  return res;
}

}  // namespace

WardInterests ward_user_interests(const float* vectors, int64_t n_rows, int64_t dim,
                                  const int64_t* offsets, int64_t n_users, const double* ts,
                                  const double* weights, const double* ref, double half_life,
                                  double threshold, int64_t max_events, int64_t max_interests,
                                  int n_threads) {
  return run(vectors, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, threshold,
             max_events, max_interests, n_threads);
}

WardInterests ward_user_interests(const uint16_t* vectors_f16, int64_t n_rows, int64_t dim,
                                  const int64_t* offsets, int64_t n_users, const double* ts,
                                  const double* weights, const double* ref, double half_life,
                                  double threshold, int64_t max_events, int64_t max_interests,
                                  int n_threads) {
  return run(vectors_f16, n_rows, dim, offsets, n_users, ts, weights, ref, half_life, threshold,
             max_events, max_interests, n_threads);
}

}  // namespace interestflow

// Fused candidate suffix kernels (polystep.evaluate.fused): plain C++ on raw arrays, called
// through ctypes (which releases the GIL, so chunks run on several threads at once).
//
// Each kernel takes n candidates that move units `units (n, k)` of a layer: it runs the moved
// units through the unit-wise layers above, skips the samples where nothing changed there, and
// finishes the net for the others, whose new logits go to a Sink (below). The Sink either
// (logits mode) writes each changed (candidate, sample) pair's logits to `logits (m, O)` and
// its flat index c*B + b to `pair (m,)`, in that order, for the caller to turn into losses with
// the eager path's own torch code, or (loss mode) computes the pairs' cross-entropies itself
// and writes each candidate's sum of loss changes to `totals (n,)`. Every kernel returns m, the
// number of changed pairs.
//
// The logits mirror the eager torch path operation by operation in the array's type T (beta*v,
// then + I; a reset leaves m - m, NaN for an infinite membrane as torch's v - v*s does; built
// with -ffp-contract=off so no multiply-add is fused unless asked): spikes and spike-count
// logits are bit-identical to the eager ones. A rank update x + d*w rounds once (fma != 0)
// where torch's addcmul does (the caller probes it), else twice. The loss mode's exp and log
// are polynomial ones that vectorize (within a few units in the last place of std::exp and
// std::log); rows with a non-finite logit take std::exp / std::log.
//
// Shapes (all C-contiguous): S is 1 for a static current (repeated over the T steps) or T;
// B samples, F units of the moved layer, O outputs. Unit-major incumbents `pre (F, S, B)`,
// `old (F, T, B)` keep one unit's samples together; `out_t (O, B)` is the incumbent logits
// transposed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

namespace {

using i64 = int64_t;

// -- exp and log that vectorize ---------------------------------------------------------------
template <typename To, typename From>
inline To bits_as(From x) {
  To y;
  std::memcpy(&y, &x, sizeof y);
  return y;
}

// The constants of exp_nonpositive and log_from_one per type: its integer of the same size, the
// mantissa's bits, the exponent's bias, where e^x stops mattering, 1.5 * 2^mantissa (adding it
// rounds to an integer), log2(e), ln 2 split in a short high part and the rest, sqrt(2), and
// the degrees of the two polynomials (truncation below half a unit in the last place).
template <typename T>
struct Fp;

template <>
struct Fp<float> {
  using Int = int32_t;
  using UInt = uint32_t;
  static constexpr int mantissa_bits = 23, bias = 127, exp_degree = 7, log_degree = 9;
  static constexpr Int mantissa_mask = 0x007fffff, one_bits = 0x3f800000;
  static constexpr float lowest = -87.0f;
  static constexpr float magic = 12582912.0f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723212e-6f;
  static constexpr float sqrt2 = 1.41421356237f;
};

template <>
struct Fp<double> {
  using Int = int64_t;
  using UInt = uint64_t;
  static constexpr int mantissa_bits = 52, bias = 1023, exp_degree = 13, log_degree = 19;
  static constexpr Int mantissa_mask = 0x000fffffffffffffLL, one_bits = 0x3ff0000000000000LL;
  static constexpr double lowest = -708.0;
  static constexpr double magic = 6755399441055744.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 0.693147180369123816490, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double sqrt2 = 1.4142135623730950488;
};

constexpr double factorial(int k) { return k <= 1 ? 1.0 : k * factorial(k - 1); }

// sum of x^(k - K) / k! for k = K..TOP by Horner (highest degree first; constant coefficients).
template <int K, int TOP, typename T>
inline T taylor(T x) {
  constexpr T c = T(1) / T(factorial(K));
  if constexpr (K == TOP) return c;
  else return taylor<K + 1, TOP>(x) * x + c;
}

// sum of x^((d - D) / 2) / d for odd d = D..TOP by Horner (highest degree first).
template <int D, int TOP, typename T>
inline T odd_series(T x) {
  constexpr T c = T(1) / T(D);
  if constexpr (D == TOP) return c;
  else return odd_series<D + 2, TOP>(x) * x + c;
}

// e^x for x <= 0 (clamped below where e^x no longer matters next to a sum >= 1): 2^n e^r with
// n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its Taylor polynomial.
template <typename T>
inline T exp_nonpositive(T x) {
  using F = Fp<T>;
  using Int = typename F::Int;
  x = x < F::lowest ? F::lowest : x;  // NaN stays NaN
  const T t = x * F::log2e + F::magic;
  const T n = t - F::magic;
  const T r = (x - n * F::ln2_hi) - n * F::ln2_lo;
  const T p = taylor<0, F::exp_degree>(r);
  const Int e = bits_as<Int>(t) - bits_as<Int>(F::magic) + F::bias;
  return p * bits_as<T>(Int(typename F::UInt(e) << F::mantissa_bits));
}

// log s for a finite s >= 1 (a sum of exponentials whose largest is 1): s = 2^e m with
// m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f), f = (m - 1) / (m + 1), |f| < 0.172, by its odd
// series.
template <typename T>
inline T log_from_one(T s) {
  using F = Fp<T>;
  const typename F::Int bits = bits_as<typename F::Int>(s);
  T m = bits_as<T>((bits & F::mantissa_mask) | F::one_bits);
  T e = T((bits >> F::mantissa_bits) - F::bias);
  const bool big = m > F::sqrt2;
  m = big ? m * T(0.5) : m;
  e = big ? e + T(1) : e;
  const T f = (m - T(1)) / (m + T(1));
  const T f2 = f * f;
  const T q = odd_series<1, F::log_degree>(f2);
  return e * F::ln2_hi + (e * F::ln2_lo + T(2) * f * q);
}

// logsumexp of each of `rows` rows of L (O, stride), sample-minor, into lse (all loops run
// over rows and vectorize). As torch's logsumexp: an infinite maximum is not subtracted; such
// rows (and NaN ones) are redone with std::exp / std::log.
template <typename T>
void logsumexp_rows(const T* L, i64 stride, i64 outs, i64 rows, T* mx, T* sum, T* lse) {
  std::copy_n(L, rows, mx);
  for (i64 o = 1; o < outs; ++o) {
    const T* x = L + o * stride;
    for (i64 r = 0; r < rows; ++r) mx[r] = (x[r] > mx[r] || x[r] != x[r]) ? x[r] : mx[r];
  }
  std::fill(sum, sum + rows, T(0));
  for (i64 o = 0; o < outs; ++o) {
    const T* x = L + o * stride;
    for (i64 r = 0; r < rows; ++r) {
      const T m = std::fabs(mx[r]) <= std::numeric_limits<T>::max() ? mx[r] : T(0);
      sum[r] = sum[r] + exp_nonpositive(x[r] - m);
    }
  }
  for (i64 r = 0; r < rows; ++r) {
    const T m = std::fabs(mx[r]) <= std::numeric_limits<T>::max() ? mx[r] : T(0);
    lse[r] = log_from_one(sum[r] < T(1) ? T(1) : sum[r]) + m;
  }
  for (i64 r = 0; r < rows; ++r) {
    if (std::isfinite(mx[r])) continue;
    const T m = std::isinf(mx[r]) ? T(0) : mx[r];
    T s = 0;
    for (i64 o = 0; o < outs; ++o) s = s + std::exp(L[o * stride + r] - m);
    lse[r] = std::log(s) + m;
  }
}

// Where the changed pairs' logits go (see the top of the file). Logits mode: totals == nullptr.
template <typename T>
struct Sink {
  i64 outs, batch;
  T* logits;
  i64* pair;
  const i64* targets;
  const T* base;
  double* totals;
  i64 m = 0;
  std::vector<T> mx, sum, lse;

  Sink(i64 outs, i64 batch, T* logits, i64* pair, const i64* targets, const T* base,
       double* totals)
      : outs(outs), batch(batch), logits(logits), pair(pair), targets(targets), base(base),
        totals(totals), mx(batch), sum(batch), lse(batch) {}

  void nothing(i64 c) {
    if (totals) totals[c] = 0;
  }

  // Candidate c's rows r < rows: logits L[o * stride + r] of sample sample[r], counted where
  // keep[r] (keep == nullptr: all). Samples ascend.
  void take(i64 c, const T* L, i64 stride, i64 rows, const i64* sample,
            const unsigned char* keep) {
    if (totals == nullptr) {
      for (i64 r = 0; r < rows; ++r) {
        if (keep && !keep[r]) continue;
        for (i64 o = 0; o < outs; ++o) logits[m * outs + o] = L[o * stride + r];
        pair[m++] = c * batch + sample[r];
      }
      return;
    }
    logsumexp_rows(L, stride, outs, rows, mx.data(), sum.data(), lse.data());
    double total = 0;  // in pair order, as the eager path's index_add
    for (i64 r = 0; r < rows; ++r) {
      if (keep && !keep[r]) continue;
      const i64 b = sample[r];
      const T loss = lse[r] - L[targets[b] * stride + r];
      total += double(loss - base[b]);
      ++m;
    }
    totals[c] = total;
  }
};

// x + d*w, rounded once (FMA) or twice.
template <bool FMA, typename T>
inline T add_product(T x, T d, T w) {
  return FMA ? std::fma(d, w, x) : x + d * w;
}

// Spike changes of candidate c's units on every sample, all samples at once (the inner loops
// run over samples and vectorize): d (k, T, B) new minus incumbent spike, first (B) the first
// step with a change (T: none), v (B) scratch membranes. Unit-major incumbents: pre (F, S, B),
// old (F, T, B).
template <typename T>
void lif_unit_moves(const T* pre, const T* change, const T* old, const i64* units, i64 c, i64 k,
                    i64 steps, i64 batch, i64 S, T beta, T threshold, T* d, T* first, T* v) {
  std::fill(first, first + batch, T(steps));
  for (i64 s = 0; s < k; ++s) {
    const i64 u = units[c * k + s];
    std::fill(v, v + batch, T(0));
    for (i64 t = 0; t < steps; ++t) {
      const i64 r = S == 1 ? 0 : t;
      const T* cur = pre + (u * S + r) * batch;
      const T* moved = change + (c * S + r) * batch * k + s;
      const T* was = old + (u * steps + t) * batch;
      T* dt = d + (s * steps + t) * batch;
      for (i64 b = 0; b < batch; ++b) {
        const T m = v[b] * beta + (cur[b] + moved[b * k]);
        const T reset = m - m;  // 0, or NaN from an infinite membrane, as torch's v - v*s
        const bool spike = m >= threshold;
        v[b] = spike ? reset : m;
        dt[b] = (spike ? T(1) : T(0)) - was[b];
      }
      const T now = T(t);
      for (i64 b = 0; b < batch; ++b)
        first[b] = (dt[b] != T(0) && now < first[b]) ? now : first[b];
    }
  }
}

// dst (cols, rows) = src (rows, cols) transposed, in 32 x 32 tiles (both sides stay in cache).
template <typename T>
void transpose(i64 rows, i64 cols, const T* src, T* dst) {
  constexpr i64 tile = 32;
  for (i64 r0 = 0; r0 < rows; r0 += tile)
    for (i64 c0 = 0; c0 < cols; c0 += tile) {
      const i64 r1 = std::min(rows, r0 + tile), c1 = std::min(cols, c0 + tile);
      for (i64 c = c0; c < c1; ++c)
        for (i64 r = r0; r < r1; ++r) dst[c * rows + r] = src[r * cols + c];
    }
}

// A hard LIF layer's forward (the incumbent's, shared by every candidate), as torch's
// polystep.nn.spiking.hard_lif computes it: v = v * beta + I (two roundings), s = v >= threshold,
// v = v + (-v) * s. current: (steps, cells), or one static (cells) when `stride` is 0; out:
// spikes (steps, cells).
template <typename T>
void lif_spikes(i64 steps, i64 cells, i64 stride, const T* current, T beta, T threshold,
                T* out) {
  std::vector<T> v(cells, T(0));
  for (i64 t = 0; t < steps; ++t) {
    const T* in = current + t * stride;
    T* s = out + t * cells;
    for (i64 c = 0; c < cells; ++c) {
      const T m = v[c] * beta + in[c];
      const T spike = m >= threshold ? T(1) : T(0);
      s[c] = spike;
      v[c] = m + (-m) * spike;
    }
  }
}

// The same spikes unit-major: current (units, S, batch), S = 1 (static) or steps; out (units,
// steps, batch). Every cell runs the operations of lif_spikes in the same order, so the spikes
// are lif_spikes' own, laid out as the candidate kernels read them (one unit's samples
// together), at the cost of a second LIF run rather than a transpose of (steps, batch, units).
template <typename T>
void lif_units(i64 units, i64 steps, i64 batch, i64 S, const T* current, T beta, T threshold,
               T* out) {
  for (i64 u = 0; u < units; ++u)
    lif_spikes<T>(steps, batch, S == 1 ? 0 : batch, current + u * S * batch, beta, threshold,
                  out + u * steps * batch);
}

// The incumbent LIF layer on current (T, B, O): membrane before each step (T, B, O) and spike
// counts before each step (T + 1, B, O).
template <typename T>
void lif_trace(i64 steps, i64 batch, i64 outs, const T* current, T beta, T threshold,
               T* before, T* counts) {
  std::fill(counts, counts + batch * outs, T(0));
  for (i64 b = 0; b < batch; ++b)
    for (i64 o = 0; o < outs; ++o) {
      T v = 0;
      for (i64 t = 0; t < steps; ++t) {
        const i64 at = (t * batch + b) * outs + o;
        before[at] = v;
        v = v * beta + current[at];
        const T spike = T(v >= threshold);
        counts[at + batch * outs] = counts[at] + spike;
        v = v - v * spike;
      }
    }
}

// One LIF step of a row of neurons in place: membranes v, input in, spike counts.
template <typename T, i64 FIXED_OUTS>
inline void lif_row(i64 runtime_outs, T* __restrict v, const T* __restrict in,
                    T* __restrict counts, T beta, T threshold) {
  const i64 outs = FIXED_OUTS > 0 ? FIXED_OUTS : runtime_outs;
  for (i64 o = 0; o < outs; ++o) {
    const T m = v[o] * beta + in[o];
    const T reset = m - m;
    const bool spike = m >= threshold;
    counts[o] += spike ? T(1) : T(0);
    v[o] = spike ? reset : m;
  }
}

// Rows r < rows of the sample-major rows (rows, O) into L (O, batch), sample-minor.
template <typename T>
void transpose_rows(const T* rows_in, i64 rows, i64 outs, i64 batch, T* L) {
  for (i64 r = 0; r < rows; ++r)
    for (i64 o = 0; o < outs; ++o) L[o * batch + r] = rows_in[r * outs + o];
}

// Hidden units of Linear -> LIF -> Linear -> LIF -> SpikeCount. weight_t (F, O) is the next
// layer's weight transposed, current (T, B, O) its incumbent output, before / counts the
// incumbent output layer's lif_trace: a sample's output layer re-runs from the first step its
// input changed (spike changes are -1, 0 or 1, so the rank update is exact either way).
// FIXED_OUTS > 0 fixes the number of outputs at compile time (the loops over them unroll);
// 0 reads it from `runtime_outs`.
template <typename T, i64 FIXED_OUTS>
i64 snn_hidden(i64 n, i64 k, i64 steps, i64 batch, i64 runtime_outs, i64 S, const T* pre,
               const T* change, const i64* units, const T* old, const T* weight_t,
               const T* current, const T* before, const T* counts, T beta, T threshold,
               T beta_out, T threshold_out, Sink<T>& sink) {
  const i64 outs = FIXED_OUTS > 0 ? FIXED_OUTS : runtime_outs;
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch), w(k * outs), v(outs),
      in(outs), rows(batch * outs), L(outs * batch);
  std::vector<i64> sample(batch);
  for (i64 c = 0; c < n; ++c) {
    for (i64 s = 0; s < k; ++s)
      std::copy_n(weight_t + units[c * k + s] * outs, outs, w.begin() + s * outs);
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, S, beta, threshold, d.data(),
                   first.data(), scratch.data());
    i64 m = 0;
    for (i64 b = 0; b < batch; ++b) {
      const i64 start = i64(first[b]);
      if (start == steps) continue;
      T* row = rows.data() + m * outs;
      sample[m++] = b;
      std::copy_n(before + (start * batch + b) * outs, outs, v.begin());
      std::copy_n(counts + (start * batch + b) * outs, outs, row);
      for (i64 t = start; t < steps; ++t) {
        std::copy_n(current + (t * batch + b) * outs, outs, in.begin());
        for (i64 s = 0; s < k; ++s) {
          const T step = d[(s * steps + t) * batch + b];
          if (step != 0)
            for (i64 o = 0; o < outs; ++o) in[o] = in[o] + step * w[s * outs + o];
        }
        lif_row<T, FIXED_OUTS>(outs, v.data(), in.data(), row, beta_out, threshold_out);
      }
    }
    if (m == 0) {
      sink.nothing(c);
      continue;
    }
    transpose_rows(rows.data(), m, outs, batch, L.data());
    sink.take(c, L.data(), batch, m, sample.data(), nullptr);
  }
  return sink.m;
}

// Output units of Linear -> LIF -> SpikeCount (the last layers); out_t (O, B) the incumbent
// logits (spike counts).
template <typename T>
i64 snn_output(i64 n, i64 k, i64 steps, i64 batch, i64 outs, const T* pre, const T* change,
               const i64* units, const T* old, const T* out_t, T beta, T threshold,
               Sink<T>& sink) {
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch), L(outs * batch);
  std::vector<i64> sample(batch);
  for (i64 c = 0; c < n; ++c) {
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, steps, beta, threshold, d.data(),
                   first.data(), scratch.data());
    i64 m = 0;
    for (i64 b = 0; b < batch; ++b) {
      if (i64(first[b]) == steps) continue;
      for (i64 o = 0; o < outs; ++o) L[o * batch + m] = out_t[o * batch + b];
      bool moved = false;  // a count, not just a spike time (the eager path's test)
      for (i64 s = 0; s < k; ++s) {
        T step = d[s * steps * batch + b];
        for (i64 t = 1; t < steps; ++t) step += d[(s * steps + t) * batch + b];
        L[units[c * k + s] * batch + m] += step;
        moved = moved || step != 0;
      }
      if (moved) sample[m++] = b;
    }
    if (m == 0) {
      sink.nothing(c);
      continue;
    }
    sink.take(c, L.data(), batch, m, sample.data(), nullptr);
  }
  return sink.m;
}

// Candidate c's change to the ReLU output of its k moved units, sample by sample: d (k, B)
// gets relu(pre + change) - relu(pre), keep (B,) marks the samples where any unit changed;
// false when none did. pre (U, B) the units' inputs, change (n, B, k) as the kernels take it.
template <typename T>
bool relu_changes(i64 c, i64 k, i64 batch, const T* pre, const T* change, const i64* units,
                  T* d, unsigned char* keep) {
  std::fill(keep, keep + batch, 0);
  for (i64 s = 0; s < k; ++s) {
    const T* was = pre + units[c * k + s] * batch;
    const T* moved = change + c * batch * k + s;
    T* ds = d + s * batch;
    for (i64 b = 0; b < batch; ++b) {
      ds[b] = std::max(was[b] + moved[b * k], T(0)) - std::max(was[b], T(0));
      keep[b] = keep[b] | (ds[b] != T(0));
    }
  }
  return std::find(keep, keep + batch, 1) != keep + batch;
}

// Hidden units of Linear -> ReLU -> Linear (the last layer): pre (F, 1, B) the incumbent
// pre-activation, weight_t (F, O) the last layer's weight transposed, out_t (O, B) the
// incumbent logits. Every sample's logits are formed at once (loops over samples vectorize)
// and the changed ones counted: the rank update as the eager path's, slot by slot.
template <bool FMA, typename T>
i64 relu_output(i64 n, i64 k, i64 batch, i64 outs, const T* pre, const T* change,
                const i64* units, const T* weight_t, const T* out_t, Sink<T>& sink) {
  std::vector<T> d(k * batch), L(outs * batch);
  std::vector<unsigned char> keep(batch);
  std::vector<i64> sample(batch);
  std::iota(sample.begin(), sample.end(), i64(0));
  for (i64 c = 0; c < n; ++c) {
    if (!relu_changes(c, k, batch, pre, change, units, d.data(), keep.data())) {
      sink.nothing(c);
      continue;
    }
    std::copy_n(out_t, outs * batch, L.begin());
    for (i64 s = 0; s < k; ++s) {
      const T* w = weight_t + units[c * k + s] * outs;
      const T* ds = d.data() + s * batch;
      for (i64 o = 0; o < outs; ++o) {
        T* lo = L.data() + o * batch;
        const T wo = w[o];
        for (i64 b = 0; b < batch; ++b) lo[b] = add_product<FMA>(lo[b], ds[b], wo);
      }
    }
    sink.take(c, L.data(), batch, batch, sample.data(), keep.data());
  }
  return sink.m;
}

// Units of the last linear layer, nothing unit-wise above: out_t (O, B) the incumbent logits,
// change (n, B, k) the moved units' output change. As the eager path: a unit's logit moves by
// (y + change) - y.
template <typename T>
i64 linear_output(i64 n, i64 k, i64 batch, i64 outs, const T* change, const i64* units,
                  const T* out_t, Sink<T>& sink) {
  std::vector<T> L(outs * batch);
  std::vector<unsigned char> keep(batch);
  std::vector<i64> sample(batch);
  std::iota(sample.begin(), sample.end(), i64(0));
  for (i64 c = 0; c < n; ++c) {
    std::copy_n(out_t, outs * batch, L.begin());
    std::fill(keep.begin(), keep.end(), 0);
    for (i64 s = 0; s < k; ++s) {
      const i64 u = units[c * k + s];
      const T* y = out_t + u * batch;
      const T* moved = change + c * batch * k + s;
      T* lu = L.data() + u * batch;
      for (i64 b = 0; b < batch; ++b) {
        const T step = (y[b] + moved[b * k]) - y[b];
        lu[b] = lu[b] + step;
        keep[b] = keep[b] | (step != T(0));
      }
    }
    if (std::find(keep.begin(), keep.end(), 1) == keep.end()) {
      sink.nothing(c);
      continue;
    }
    sink.take(c, L.data(), batch, batch, sample.data(), keep.data());
  }
  return sink.m;
}

// Hidden units of Linear -> ReLU -> Linear -> ReLU -> Linear (the last layers): pre (F, 1, B)
// the incumbent pre-activation, weight_t (F, H) the middle layer's weight transposed,
// middle_t (H, B) its incumbent output transposed, weight2 (O, H) the last layer's weight,
// out_t (O, B) the incumbent logits. As relu_output, every sample at once (the loops over
// samples vectorize), the changed ones counted: the middle pre-activation takes the rank update
// as the eager path's, and the logits move by weight2 times the change of the hidden
// activations (the eager path multiplies the whole hidden row instead: equal up to rounding).
template <bool FMA, typename T>
i64 relu_relu_hidden(i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre,
                     const T* change, const i64* units, const T* weight_t, const T* middle_t,
                     const T* weight2, const T* out_t, Sink<T>& sink) {
  std::vector<T> d(k * batch), z(batch), step(hidden * batch), L(outs * batch);
  std::vector<unsigned char> keep(batch);
  std::vector<i64> sample(batch);
  std::iota(sample.begin(), sample.end(), i64(0));
  for (i64 c = 0; c < n; ++c) {
    if (!relu_changes(c, k, batch, pre, change, units, d.data(), keep.data())) {
      sink.nothing(c);
      continue;
    }
    for (i64 h = 0; h < hidden; ++h) {
      const T* mid = middle_t + h * batch;
      std::copy_n(mid, batch, z.begin());
      for (i64 s = 0; s < k; ++s) {
        const T w = weight_t[units[c * k + s] * hidden + h];
        const T* ds = d.data() + s * batch;
        for (i64 b = 0; b < batch; ++b) z[b] = add_product<FMA>(z[b], ds[b], w);
      }
      T* st = step.data() + h * batch;
      for (i64 b = 0; b < batch; ++b) st[b] = std::max(z[b], T(0)) - std::max(mid[b], T(0));
    }
    std::copy_n(out_t, outs * batch, L.begin());
    for (i64 o = 0; o < outs; ++o) {
      T* lo = L.data() + o * batch;
      for (i64 h = 0; h < hidden; ++h) {
        const T w = weight2[o * hidden + h];
        const T* st = step.data() + h * batch;
        for (i64 b = 0; b < batch; ++b) lo[b] = lo[b] + w * st[b];
      }
    }
    sink.take(c, L.data(), batch, batch, sample.data(), keep.data());
  }
  return sink.m;
}

}  // namespace

// C entry points, one per kernel and type (suffix _f32 / _f64), each ending with the Sink's
// arrays: logits (m, O), pair (m,) in logits mode; targets (B,), base (B,) per-sample losses
// and totals (n,) in loss mode (totals null: logits mode). On x86-64 each is also built for
// x86-64-v3 (AVX2, FMA) and the loader picks the clone the CPU runs: the same values (only the
// vector width differs; no multiply-add is fused unless `fma` asks). An AVX-512 clone was 12 %
// faster on the MLP suffix but doubled the build (about 15 s of CPU to 30 s): left out.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POLYSTEP_KERNEL \
  extern "C" __attribute__((flatten, target_clones("arch=x86-64-v3", "default")))
#else
#define POLYSTEP_KERNEL extern "C" __attribute__((flatten))
#endif

#define POLYSTEP_SINK_ARGS(T) T *logits, i64 *pair, const i64 *targets, const T *base, double *totals
#define POLYSTEP_SINK(T, outs, batch) Sink<T> sink(outs, batch, logits, pair, targets, base, totals)

#define POLYSTEP_EXPORT(T, SUFFIX)                                                              \
  POLYSTEP_KERNEL void transpose##SUFFIX(i64 rows, i64 cols, const T* src, T* dst) {           \
    transpose<T>(rows, cols, src, dst);                                                         \
  }                                                                                             \
  POLYSTEP_KERNEL void lif_spikes##SUFFIX(i64 steps, i64 cells, i64 stride, const T* current,  \
                                          T beta, T threshold, T* out) {                       \
    lif_spikes<T>(steps, cells, stride, current, beta, threshold, out);                        \
  }                                                                                             \
  POLYSTEP_KERNEL void lif_units##SUFFIX(i64 units, i64 steps, i64 batch, i64 S,              \
                                         const T* current, T beta, T threshold, T* out) {      \
    lif_units<T>(units, steps, batch, S, current, beta, threshold, out);                       \
  }                                                                                             \
  extern "C" void lif_trace##SUFFIX(i64 steps, i64 batch, i64 outs, const T* current, T beta,  \
                                    T threshold, T* before, T* counts) {                       \
    lif_trace<T>(steps, batch, outs, current, beta, threshold, before, counts);                \
  }                                                                                             \
  POLYSTEP_KERNEL i64 snn_hidden##SUFFIX(                                                       \
      i64 n, i64 k, i64 steps, i64 batch, i64 outs, i64 S, const T* pre, const T* change,      \
      const i64* units, const T* old, const T* weight_t, const T* current, const T* before,    \
      const T* counts, T beta, T threshold, T beta_out, T threshold_out,                       \
      POLYSTEP_SINK_ARGS(T)) {                                                                  \
    POLYSTEP_SINK(T, outs, batch);                                                              \
    if (outs == 10) /* 10 classes: the loops over them unroll */                               \
      return snn_hidden<T, 10>(n, k, steps, batch, outs, S, pre, change, units, old, weight_t, \
                               current, before, counts, beta, threshold, beta_out,             \
                               threshold_out, sink);                                           \
    return snn_hidden<T, 0>(n, k, steps, batch, outs, S, pre, change, units, old, weight_t,    \
                            current, before, counts, beta, threshold, beta_out, threshold_out, \
                            sink);                                                              \
  }                                                                                             \
  POLYSTEP_KERNEL i64 snn_output##SUFFIX(i64 n, i64 k, i64 steps, i64 batch, i64 outs,         \
                                         const T* pre, const T* change, const i64* units,      \
                                         const T* old, const T* out_t, T beta, T threshold,    \
                                         POLYSTEP_SINK_ARGS(T)) {                               \
    POLYSTEP_SINK(T, outs, batch);                                                              \
    return snn_output<T>(n, k, steps, batch, outs, pre, change, units, old, out_t, beta,       \
                         threshold, sink);                                                      \
  }                                                                                             \
  POLYSTEP_KERNEL i64 relu_output##SUFFIX(i64 n, i64 k, i64 batch, i64 outs, const T* pre,     \
                                          const T* change, const i64* units,                   \
                                          const T* weight_t, const T* out_t, i64 fma,          \
                                          POLYSTEP_SINK_ARGS(T)) {                              \
    POLYSTEP_SINK(T, outs, batch);                                                              \
    if (fma)                                                                                    \
      return relu_output<true, T>(n, k, batch, outs, pre, change, units, weight_t, out_t,      \
                                  sink);                                                        \
    return relu_output<false, T>(n, k, batch, outs, pre, change, units, weight_t, out_t, sink); \
  }                                                                                             \
  POLYSTEP_KERNEL i64 linear_output##SUFFIX(i64 n, i64 k, i64 batch, i64 outs, const T* change, \
                                            const i64* units, const T* out_t,                  \
                                            POLYSTEP_SINK_ARGS(T)) {                            \
    POLYSTEP_SINK(T, outs, batch);                                                              \
    return linear_output<T>(n, k, batch, outs, change, units, out_t, sink);                    \
  }                                                                                             \
  POLYSTEP_KERNEL i64 relu_relu_hidden##SUFFIX(                                                 \
      i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre, const T* change,            \
      const i64* units, const T* weight_t, const T* middle_t, const T* weight2,                \
      const T* out_t, i64 fma, POLYSTEP_SINK_ARGS(T)) {                                         \
    POLYSTEP_SINK(T, outs, batch);                                                              \
    if (fma)                                                                                    \
      return relu_relu_hidden<true, T>(n, k, batch, hidden, outs, pre, change, units,          \
                                       weight_t, middle_t, weight2, out_t, sink);               \
    return relu_relu_hidden<false, T>(n, k, batch, hidden, outs, pre, change, units, weight_t, \
                                      middle_t, weight2, out_t, sink);                          \
  }

POLYSTEP_EXPORT(float, _f32)
POLYSTEP_EXPORT(double, _f64)

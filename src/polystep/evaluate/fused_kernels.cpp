// Fused candidate suffix kernels (polystep.evaluate.fused): plain C++ on raw arrays, called
// through ctypes (which releases the GIL, so chunks run on several threads at once).
//
// Each kernel takes n candidates that move units `units (n, k)` of a layer, one sample at a
// time: it runs the moved units through the unit-wise layers above, skips the sample when
// nothing changed there, and otherwise finishes the net: the new logits of each changed
// (candidate, sample) pair go to `logits (m, O)` and its flat index c*B + b to `pair (m,)`, in
// that order; it returns m. The caller turns them into losses with the eager path's own torch
// code, so the losses are the eager ones wherever the logits are. The arithmetic mirrors the
// eager torch path operation by operation in the array's type T (beta*v, then + I; a reset
// leaves m - m, NaN for an infinite membrane as torch's v - v*s does; built with
// -ffp-contract=off so no multiply-add is fused unless asked): spikes and spike-count logits
// are bit-identical to the eager ones. A rank update x + d*w rounds once (fma != 0) where
// torch's addcmul does (the caller probes it), else twice.
//
// Shapes (all C-contiguous): S is 1 for a static current (repeated over the T steps) or T;
// B samples, F units of the moved layer, O outputs. Unit-major incumbents `pre (F, S, B)`,
// `old (F, T, B)` keep one unit's samples together.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using i64 = int64_t;

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

// FMA: whether x + d*w rounds once (std::fma) or twice. The kernels that use it are inlined
// into entry points built for the fused instruction where the CPU has it (x86: POLYSTEP_FMA).
template <bool FMA, typename T>
inline __attribute__((always_inline)) void add_product(T* __restrict x, T d,
                                                       const T* __restrict w, i64 n) {
  for (i64 o = 0; o < n; ++o) x[o] = FMA ? std::fma(d, w[o], x[o]) : x[o] + d * w[o];
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
               T beta_out, T threshold_out, T* logits, i64* pair) {
  const i64 outs = FIXED_OUTS > 0 ? FIXED_OUTS : runtime_outs;
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch), w(k * outs), v(outs),
      in(outs);
  i64 m = 0;
  for (i64 c = 0; c < n; ++c) {
    for (i64 s = 0; s < k; ++s)
      std::copy_n(weight_t + units[c * k + s] * outs, outs, w.begin() + s * outs);
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, S, beta, threshold, d.data(),
                   first.data(), scratch.data());
    for (i64 b = 0; b < batch; ++b) {
      const i64 start = i64(first[b]);
      if (start == steps) continue;
      T* row = logits + m * outs;
      pair[m++] = c * batch + b;
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
  }
  return m;
}

// Output units of Linear -> LIF -> SpikeCount (the last layers); counts (B, O) the incumbent
// logits.
template <typename T>
i64 snn_output(i64 n, i64 k, i64 steps, i64 batch, i64 outs, const T* pre, const T* change,
               const i64* units, const T* old, const T* counts, T beta, T threshold, T* logits,
               i64* pair) {
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch);
  i64 m = 0;
  for (i64 c = 0; c < n; ++c) {
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, steps, beta, threshold, d.data(),
                   first.data(), scratch.data());
    for (i64 b = 0; b < batch; ++b) {
      if (i64(first[b]) == steps) continue;
      T* row = logits + m * outs;
      std::copy_n(counts + b * outs, outs, row);
      bool moved = false;  // a count, not just a spike time (the eager path's test)
      for (i64 s = 0; s < k; ++s) {
        T step = d[s * steps * batch + b];
        for (i64 t = 1; t < steps; ++t) step += d[(s * steps + t) * batch + b];
        row[units[c * k + s]] += step;
        moved = moved || step != 0;
      }
      if (moved) pair[m++] = c * batch + b;
    }
  }
  return m;
}

// x . y over n entries with 8 partial sums (a fixed order that vectorizes).
template <typename T>
T dot8(const T* __restrict x, const T* __restrict y, i64 n) {
  T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  i64 h = 0;
  for (; h + 8 <= n; h += 8)
    for (int q = 0; q < 8; ++q) part[q] = part[q] + x[h + q] * y[h + q];
  for (; h < n; ++h) part[0] = part[0] + x[h] * y[h];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// Hidden units of Linear -> ReLU -> Linear -> ReLU -> Linear (the last layers): pre (F, 1, B)
// the incumbent pre-activation, weight_t (F, H) the middle layer's weight transposed,
// middle (B, H) its incumbent output, weight2 (O, H) the last layer's weight, out (B, O) the
// incumbent logits. The logits move by weight2 times the change of the hidden activations
// (the eager path multiplies the whole hidden row instead: equal up to rounding).
template <bool FMA, typename T>
inline __attribute__((always_inline)) i64 relu_relu_hidden(
    i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre, const T* change,
    const i64* units, const T* weight_t, const T* middle, const T* weight2, const T* out,
    T* logits, i64* pair) {
  std::vector<T> d(k), z(hidden), step(hidden);
  i64 m = 0;
  for (i64 c = 0; c < n; ++c) {
    for (i64 b = 0; b < batch; ++b) {
      bool moved = false;
      for (i64 s = 0; s < k; ++s) {
        const T was = pre[units[c * k + s] * batch + b];
        d[s] = std::max(was + change[(c * batch + b) * k + s], T(0)) - std::max(was, T(0));
        moved = moved || d[s] != 0;
      }
      if (!moved) continue;
      const T* hid = middle + b * hidden;
      std::copy_n(hid, hidden, z.begin());
      for (i64 s = 0; s < k; ++s)
        if (d[s] != 0)
          add_product<FMA>(z.data(), d[s], weight_t + units[c * k + s] * hidden, hidden);
      for (i64 h = 0; h < hidden; ++h) step[h] = std::max(z[h], T(0)) - std::max(hid[h], T(0));
      T* row = logits + m * outs;
      pair[m++] = c * batch + b;
      for (i64 o = 0; o < outs; ++o)
        row[o] = out[b * outs + o] + dot8(step.data(), weight2 + o * hidden, hidden);
    }
  }
  return m;
}

}  // namespace

#if defined(__x86_64__) || defined(__i386__)
#define POLYSTEP_FMA __attribute__((target("fma")))
#else
#define POLYSTEP_FMA
#endif

// The ReLU kernel with each rounding of the rank update, the fused one built for FMA.
template <typename T>
POLYSTEP_FMA i64 relu_relu_hidden_fma(i64 n, i64 k, i64 batch, i64 hidden, i64 outs,
                                      const T* pre, const T* change, const i64* units,
                                      const T* weight_t, const T* middle, const T* weight2,
                                      const T* out, T* logits, i64* pair) {
  return relu_relu_hidden<true>(n, k, batch, hidden, outs, pre, change, units, weight_t, middle,
                                weight2, out, logits, pair);
}

// C entry points, one per kernel and type (suffix _f32 / _f64).
#define POLYSTEP_EXPORT(T, SUFFIX)                                                              \
  extern "C" void lif_trace##SUFFIX(i64 steps, i64 batch, i64 outs, const T* current, T beta,  \
                                    T threshold, T* before, T* counts) {                       \
    lif_trace<T>(steps, batch, outs, current, beta, threshold, before, counts);                \
  }                                                                                             \
  extern "C" i64 snn_hidden##SUFFIX(                                                            \
      i64 n, i64 k, i64 steps, i64 batch, i64 outs, i64 S, const T* pre, const T* change,      \
      const i64* units, const T* old, const T* weight_t, const T* current, const T* before,    \
      const T* counts, T beta, T threshold, T beta_out, T threshold_out, T* logits,            \
      i64* pair) {                                                                              \
    auto run = outs == 10 ? snn_hidden<T, 10> : snn_hidden<T, 0>; /* 10 classes: unrolled */  \
    return run(n, k, steps, batch, outs, S, pre, change, units, old, weight_t, current,        \
               before, counts, beta, threshold, beta_out, threshold_out, logits, pair);        \
  }                                                                                             \
  extern "C" i64 snn_output##SUFFIX(i64 n, i64 k, i64 steps, i64 batch, i64 outs,              \
                                    const T* pre, const T* change, const i64* units,           \
                                    const T* old, const T* counts, T beta, T threshold,        \
                                    T* logits, i64* pair) {                                     \
    return snn_output<T>(n, k, steps, batch, outs, pre, change, units, old, counts, beta,      \
                         threshold, logits, pair);                                              \
  }                                                                                             \
  extern "C" i64 relu_relu_hidden##SUFFIX(                                                      \
      i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre, const T* change,            \
      const i64* units, const T* weight_t, const T* middle, const T* weight2, const T* out,    \
      T* logits, i64* pair, i64 fma) {                                                          \
    if (fma)                                                                                    \
      return relu_relu_hidden_fma<T>(n, k, batch, hidden, outs, pre, change, units, weight_t,  \
                                     middle, weight2, out, logits, pair);                       \
    return relu_relu_hidden<false, T>(n, k, batch, hidden, outs, pre, change, units, weight_t, \
                                      middle, weight2, out, logits, pair);                      \
  }

POLYSTEP_EXPORT(float, _f32)
POLYSTEP_EXPORT(double, _f64)

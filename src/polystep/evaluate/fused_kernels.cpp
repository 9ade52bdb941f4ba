// Fused candidate suffix kernels (polystep.evaluate.fused): plain C++ on raw arrays, called
// through ctypes (which releases the GIL, so chunks run on several threads at once).
//
// Each kernel scores n candidates that move units `units (n, k)` of a layer, one sample at a
// time: it runs the moved units through the unit-wise layers above, skips the sample when
// nothing changed there, and otherwise finishes the net and adds l'_b - l_b (new minus
// incumbent cross-entropy of sample b) to the candidate's total. The arithmetic mirrors the
// eager torch path operation by operation in the array's type T (beta*v, then + I; a reset
// leaves m - m, NaN for an infinite membrane as torch's v - v*s does; built with
// -ffp-contract=off so no multiply-add is fused): spikes are bit-identical to the eager ones.
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

template <typename T>
T cross_entropy(const std::vector<T>& logits, i64 target) {
  T top = logits[0];
  for (T x : logits) top = std::max(top, x);
  T sum = 0;
  for (T x : logits) sum += std::exp(x - top);
  return std::log(sum) + top - logits[target];
}

// The same for spike-count logits (integers 0..T): exp(x - top) of an integer difference is
// looked up in exp_neg (T + 1): exp_neg[m] = exp(-m), the very value std::exp returns.
template <typename T>
T count_cross_entropy(const std::vector<T>& logits, i64 target, const std::vector<T>& exp_neg) {
  T top = logits[0];
  for (T x : logits) top = std::max(top, x);
  T sum = 0;
  for (T x : logits) sum += exp_neg[i64(top - x)];
  return std::log(sum) + top - logits[target];
}

template <typename T>
std::vector<T> exp_table(i64 steps) {
  std::vector<T> out(steps + 1);
  for (i64 m = 0; m <= steps; ++m) out[m] = std::exp(T(-m));
  return out;
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

// Hidden units of Linear -> LIF -> Linear -> LIF -> SpikeCount. weight_t (F, O) is the next
// layer's weight transposed, current (T, B, O) its incumbent output, before / counts the
// incumbent output layer's lif_trace: a sample's output layer re-runs from the first step its
// input changed.
// One LIF step of a row of neurons in place: membranes v, input in, spike counts.
template <typename T, i64 FIXED_OUTS>
inline void lif_row(i64 runtime_outs, T* __restrict v, const T* __restrict in,
                    T* __restrict counts, T beta, T threshold) {
  const i64 outs = FIXED_OUTS > 0 ? FIXED_OUTS : runtime_outs;
  for (i64 o = 0; o < outs; ++o) {
    const T m = v[o] * beta + in[o];
    const T spike = T(m >= threshold);
    counts[o] += spike;
    v[o] = m - m * spike;
  }
}

// FIXED_OUTS > 0 fixes the number of outputs at compile time (the loops over them unroll and
// vectorize); 0 reads it from `outs`.
template <typename T, i64 FIXED_OUTS>
void snn_hidden(i64 n, i64 k, i64 steps, i64 batch, i64 runtime_outs, i64 S, const T* pre,
                const T* change, const i64* units, const T* old, const T* weight_t,
                const T* current, const T* before, const T* counts, T beta, T threshold,
                T beta_out, T threshold_out, const i64* targets, const T* base, double* total,
                i64* pairs) {
  const i64 outs = FIXED_OUTS > 0 ? FIXED_OUTS : runtime_outs;
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch), w(k * outs), v(outs),
      in(outs), logits(outs);
  const std::vector<T> exp_neg = exp_table<T>(steps);
  for (i64 c = 0; c < n; ++c) {
    for (i64 s = 0; s < k; ++s)
      std::copy_n(weight_t + units[c * k + s] * outs, outs, w.begin() + s * outs);
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, S, beta, threshold, d.data(),
                   first.data(), scratch.data());
    double acc = 0;
    i64 ran = 0;
    for (i64 b = 0; b < batch; ++b) {
      const i64 start = i64(first[b]);
      if (start == steps) continue;
      ++ran;
      std::copy_n(before + (start * batch + b) * outs, outs, v.begin());
      std::copy_n(counts + (start * batch + b) * outs, outs, logits.begin());
      for (i64 t = start; t < steps; ++t) {
        std::copy_n(current + (t * batch + b) * outs, outs, in.begin());
        for (i64 s = 0; s < k; ++s) {
          const T step = d[(s * steps + t) * batch + b];
          if (step != 0)
            for (i64 o = 0; o < outs; ++o) in[o] = in[o] + step * w[s * outs + o];
        }
        lif_row<T, FIXED_OUTS>(outs, v.data(), in.data(), logits.data(), beta_out,
                               threshold_out);
      }
      acc += double(count_cross_entropy(logits, targets[b], exp_neg) - base[b]);
    }
    total[c] = acc;
    pairs[c] = ran;
  }
}

// Output units of Linear -> LIF -> SpikeCount (the last layers); counts (B, O) the incumbent
// logits.
template <typename T>
void snn_output(i64 n, i64 k, i64 steps, i64 batch, i64 outs, const T* pre, const T* change,
                const i64* units, const T* old, const T* counts, T beta, T threshold,
                const i64* targets, const T* base, double* total, i64* pairs) {
  std::vector<T> d(k * steps * batch), first(batch), scratch(batch), logits(outs);
  const std::vector<T> exp_neg = exp_table<T>(steps);
  for (i64 c = 0; c < n; ++c) {
    lif_unit_moves(pre, change, old, units, c, k, steps, batch, steps, beta, threshold, d.data(),
                   first.data(), scratch.data());
    double acc = 0;
    i64 ran = 0;
    for (i64 b = 0; b < batch; ++b) {
      if (i64(first[b]) == steps) continue;
      ++ran;
      std::copy_n(counts + b * outs, outs, logits.begin());
      for (i64 s = 0; s < k; ++s) {
        T moved = d[s * steps * batch + b];
        for (i64 t = 1; t < steps; ++t) moved += d[(s * steps + t) * batch + b];
        logits[units[c * k + s]] += moved;
      }
      acc += double(count_cross_entropy(logits, targets[b], exp_neg) - base[b]);
    }
    total[c] = acc;
    pairs[c] = ran;
  }
}

// Hidden units of Linear -> ReLU -> Linear (the last layers): pre (F, 1, B) the incumbent
// pre-activation, weight_t (F, O), out (B, O) the incumbent logits.
template <typename T>
void relu_hidden(i64 n, i64 k, i64 batch, i64 outs, const T* pre, const T* change,
                 const i64* units, const T* weight_t, const T* out, const i64* targets,
                 const T* base, double* total, i64* pairs) {
  std::vector<T> d(k), logits(outs);
  for (i64 c = 0; c < n; ++c) {
    double acc = 0;
    i64 ran = 0;
    for (i64 b = 0; b < batch; ++b) {
      bool moved = false;
      for (i64 s = 0; s < k; ++s) {
        const T was = pre[units[c * k + s] * batch + b];
        d[s] = std::max(was + change[(c * batch + b) * k + s], T(0)) - std::max(was, T(0));
        moved = moved || d[s] != 0;
      }
      if (!moved) continue;
      ++ran;
      std::copy_n(out + b * outs, outs, logits.begin());
      for (i64 s = 0; s < k; ++s) {
        const T* w = weight_t + units[c * k + s] * outs;
        for (i64 o = 0; o < outs; ++o) logits[o] = logits[o] + d[s] * w[o];
      }
      acc += double(cross_entropy(logits, targets[b]) - base[b]);
    }
    total[c] = acc;
    pairs[c] = ran;
  }
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
// middle (B, H) its incumbent output, weight2_t (H, O) the last layer's, out (B, O) the
// incumbent logits; weight2 (O, H) the last layer's weight. The logits move by weight2 times the
// change of the hidden activations.
template <typename T>
void relu_relu_hidden(i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre,
                      const T* change, const i64* units, const T* weight_t, const T* middle,
                      const T* weight2, const T* out, const i64* targets, const T* base,
                      double* total, i64* pairs) {
  std::vector<T> d(k), z(hidden), step(hidden), logits(outs);
  for (i64 c = 0; c < n; ++c) {
    double acc = 0;
    i64 ran = 0;
    for (i64 b = 0; b < batch; ++b) {
      bool moved = false;
      for (i64 s = 0; s < k; ++s) {
        const T was = pre[units[c * k + s] * batch + b];
        d[s] = std::max(was + change[(c * batch + b) * k + s], T(0)) - std::max(was, T(0));
        moved = moved || d[s] != 0;
      }
      if (!moved) continue;
      const T* row = middle + b * hidden;
      std::copy_n(row, hidden, z.begin());
      for (i64 s = 0; s < k; ++s) {
        const T* w = weight_t + units[c * k + s] * hidden;
        if (d[s] != 0)
          for (i64 h = 0; h < hidden; ++h) z[h] = z[h] + d[s] * w[h];
      }
      bool reached = false;
      for (i64 h = 0; h < hidden; ++h) {
        step[h] = std::max(z[h], T(0)) - std::max(row[h], T(0));
        reached = reached || step[h] != 0;
      }
      for (i64 o = 0; o < outs; ++o) logits[o] = out[b * outs + o] + dot8(step.data(), weight2 + o * hidden, hidden);
      if (!reached) continue;
      ++ran;
      acc += double(cross_entropy(logits, targets[b]) - base[b]);
    }
    total[c] = acc;
    pairs[c] = ran;
  }
}

// Units of the output layer itself: pre (B, O) the logits.
template <typename T>
void logits_moved(i64 n, i64 k, i64 batch, i64 outs, const T* pre, const T* change,
                  const i64* units, const i64* targets, const T* base, double* total,
                  i64* pairs) {
  std::vector<T> logits(outs);
  for (i64 c = 0; c < n; ++c) {
    double acc = 0;
    i64 ran = 0;
    for (i64 b = 0; b < batch; ++b) {
      std::copy_n(pre + b * outs, outs, logits.begin());
      bool moved = false;
      for (i64 s = 0; s < k; ++s) {
        const i64 u = units[c * k + s];
        const T step = (pre[b * outs + u] + change[(c * batch + b) * k + s]) - pre[b * outs + u];
        logits[u] += step;
        moved = moved || step != 0;
      }
      if (!moved) continue;
      ++ran;
      acc += double(cross_entropy(logits, targets[b]) - base[b]);
    }
    total[c] = acc;
    pairs[c] = ran;
  }
}

}  // namespace

// C entry points, one per kernel and type (suffix _f32 / _f64).
#define POLYSTEP_EXPORT(T, SUFFIX)                                                              \
  extern "C" void lif_trace##SUFFIX(i64 steps, i64 batch, i64 outs, const T* current, T beta,  \
                                    T threshold, T* before, T* counts) {                       \
    lif_trace<T>(steps, batch, outs, current, beta, threshold, before, counts);                \
  }                                                                                             \
  extern "C" void snn_hidden##SUFFIX(                                                           \
      i64 n, i64 k, i64 steps, i64 batch, i64 outs, i64 S, const T* pre, const T* change,      \
      const i64* units, const T* old, const T* weight_t, const T* current, const T* before,    \
      const T* counts, T beta, T threshold, T beta_out, T threshold_out, const i64* targets,   \
      const T* base, double* total, i64* pairs) {                                               \
    auto run = outs == 10 ? snn_hidden<T, 10> : snn_hidden<T, 0>; /* 10 classes: unrolled */  \
    run(n, k, steps, batch, outs, S, pre, change, units, old, weight_t, current, before, counts, \
        beta, threshold, beta_out, threshold_out, targets, base, total, pairs);                  \
  }                                                                                             \
  extern "C" void snn_output##SUFFIX(i64 n, i64 k, i64 steps, i64 batch, i64 outs,             \
                                     const T* pre, const T* change, const i64* units,          \
                                     const T* old, const T* counts, T beta, T threshold,       \
                                     const i64* targets, const T* base, double* total,         \
                                     i64* pairs) {                                              \
    snn_output<T>(n, k, steps, batch, outs, pre, change, units, old, counts, beta, threshold,  \
                  targets, base, total, pairs);                                                 \
  }                                                                                             \
  extern "C" void relu_hidden##SUFFIX(i64 n, i64 k, i64 batch, i64 outs, const T* pre,         \
                                      const T* change, const i64* units, const T* weight_t,    \
                                      const T* out, const i64* targets, const T* base,         \
                                      double* total, i64* pairs) {                              \
    relu_hidden<T>(n, k, batch, outs, pre, change, units, weight_t, out, targets, base, total, \
                   pairs);                                                                      \
  }                                                                                             \
  extern "C" void relu_relu_hidden##SUFFIX(                                                     \
      i64 n, i64 k, i64 batch, i64 hidden, i64 outs, const T* pre, const T* change,            \
      const i64* units, const T* weight_t, const T* middle, const T* weight2, const T* out,    \
      const i64* targets, const T* base, double* total, i64* pairs) {                          \
    relu_relu_hidden<T>(n, k, batch, hidden, outs, pre, change, units, weight_t, middle,       \
                        weight2, out, targets, base, total, pairs);                            \
  }                                                                                             \
  extern "C" void logits_moved##SUFFIX(i64 n, i64 k, i64 batch, i64 outs, const T* pre,        \
                                       const T* change, const i64* units, const i64* targets,  \
                                       const T* base, double* total, i64* pairs) {              \
    logits_moved<T>(n, k, batch, outs, pre, change, units, targets, base, total, pairs);       \
  }

POLYSTEP_EXPORT(float, _f32)
POLYSTEP_EXPORT(double, _f64)

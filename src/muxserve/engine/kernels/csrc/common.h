// Shared helpers of the fused CPU kernels: bf16 <-> fp32, row loads/stores, exp, norms, RoPE.
//
// Every kernel computes in fp32 and reads/writes the compute dtype (float or bfloat16),
// rounding where the PyTorch reference path (models/common.py, attention.py) rounds, so both
// paths agree to within one bf16 rounding. Loops are written for the compiler to vectorize
// (`#pragma omp simd`, -O3 -march=native); work is split across torch's intra-op threads with
// at::parallel_for, so the kernels honour torch.set_num_threads like every other op.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace muxserve {

using BF16 = c10::BFloat16;

inline float to_f(float x) { return x; }
inline float to_f(BF16 x) {
  uint32_t u = uint32_t(x.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void put(float f, float* dst) { *dst = f; }
inline void put(float f, BF16* dst) {
  // round to nearest even, as c10::BFloat16's constructor does; NaN stays a quiet NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  dst->x = uint16_t(f != f ? 0x7FC0u : r);
}

template <typename T>
inline void load_into(const T* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = to_f(src[i]);
}

// dst[i] = float(src[i]); returns src itself when it is already float (no copy)
template <typename T>
inline const float* load_row(const T* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    load_into(src, dst, n);
    return dst;
  }
}

template <typename T>
inline void store_row(const float* src, T* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) put(src[i], dst + i);
}

// x -> float(T(x)): what the reference path's intermediate tensors in dtype T hold
template <typename T>
inline void round_row(float* x, int64_t n) {
  if constexpr (!std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T t;
      put(x[i], &t);
      x[i] = to_f(t);
    }
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// exp(x) to ~2 ulp, branch-free so that loops over it vectorize (libm's expf does not)
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

// x *= rsqrt(mean(x^2) + eps) * w (w may be null: no scale)
template <typename T>
inline void rms_norm_row(float* x, const T* w, int64_t n, float eps) {
  float rstd = 1.0f / std::sqrt(dot(x, x, n) / float(n) + eps);
  if (w == nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) x[i] *= rstd;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] * rstd * to_f(w[i]);
  }
}

template <typename T>
inline void scale_row(float* x, const T* w, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= to_f(w[i]);
}

// HF rotate_half RoPE in place: x' = x * cos + [-x2, x1] * sin
inline void rope_row(float* x, const float* cos, const float* sin, int64_t d) {
  const int64_t half = d / 2;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i + half] + a * sin[i + half];
  }
}
inline void check_dtype(const at::Tensor& t, at::ScalarType dt, const char* name) {
  TORCH_CHECK(t.scalar_type() == dt, name, ": expected dtype ", dt, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor pool, const at::Tensor& table,
                            const at::Tensor& positions, const at::Tensor& cos,
                            const at::Tensor& sin, const c10::optional<at::Tensor>& qk_norm,
                            int64_t layer, int64_t num_q_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t tokens_per_block, int64_t window,
                            double scale, double eps);
at::Tensor add_rms_norm(at::Tensor x, const c10::optional<at::Tensor>& y,
                        const c10::optional<at::Tensor>& y_weight, const at::Tensor& weight,
                        double eps);
at::Tensor gated_act(const at::Tensor& gate_up, int64_t act);
bool amx_linear_available();
at::Tensor amx_linear(const at::Tensor& x, const at::Tensor& packed,
                      const c10::optional<at::Tensor>& bias, bool out_fp32);

}  // namespace muxserve

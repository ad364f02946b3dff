// Residual add + RMSNorm, and the gated MLP activation (see kernels/__init__.py).
#include "common.h"

namespace muxserve {
namespace {

template <typename T>
void add_rms_norm_impl(at::Tensor& x, const c10::optional<at::Tensor>& y,
                       const c10::optional<at::Tensor>& y_weight, const at::Tensor& weight,
                       double eps, at::Tensor& h) {
  const int64_t rows = x.size(0), n = x.size(1);
  T* xp = x.data_ptr<T>();
  const T* yp = y ? y->data_ptr<T>() : nullptr;
  const T* ywp = y_weight ? y_weight->data_ptr<T>() : nullptr;
  const T* wp = weight.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  const float e = float(eps);
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / n), [&](int64_t begin, int64_t end) {
    std::vector<float> xr(n), yr(n);
    for (int64_t r = begin; r < end; ++r) {
      load_into(xp + r * n, xr.data(), n);
      if (yp != nullptr) {
        load_into(yp + r * n, yr.data(), n);
        if (ywp != nullptr) {
          rms_norm_row(yr.data(), ywp, n, e);
          round_row<T>(yr.data(), n);
        }
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) xr[i] += yr[i];
        round_row<T>(xr.data(), n);
        store_row(xr.data(), xp + r * n, n);
      }
      rms_norm_row(xr.data(), wp, n, e);
      store_row(xr.data(), hp + r * n, n);
    }
  });
}

}  // namespace

// x [T, n] (in place): x += y, or x += rms_norm(y) * y_weight; returns rms_norm(x) * weight.
at::Tensor add_rms_norm(at::Tensor x, const c10::optional<at::Tensor>& y,
                        const c10::optional<at::Tensor>& y_weight, const at::Tensor& weight,
                        double eps) {
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "add_rms_norm: float32 or bfloat16");
  TORCH_CHECK(x.dim() == 2, "x must be [T, n]");
  check_dtype(x, dt, "x");
  check_dtype(weight, dt, "weight");
  TORCH_CHECK(weight.numel() == x.size(1), "weight must have n elements");
  if (y) {
    check_dtype(*y, dt, "y");
    TORCH_CHECK(y->sizes() == x.sizes(), "y must have x's shape");
  }
  if (y_weight) {
    TORCH_CHECK(y, "y_weight needs y");
    check_dtype(*y_weight, dt, "y_weight");
    TORCH_CHECK(y_weight->numel() == x.size(1), "y_weight must have n elements");
  }
  auto h = at::empty_like(x);
  if (dt == at::kFloat)
    add_rms_norm_impl<float>(x, y, y_weight, weight, eps, h);
  else
    add_rms_norm_impl<BF16>(x, y, y_weight, weight, eps, h);
  return h;
}

namespace {

template <typename T>
void gated_act_impl(const at::Tensor& gate_up, int64_t act, at::Tensor& out) {
  const int64_t rows = gate_up.size(0), I = gate_up.size(1) / 2;
  const T* gp = gate_up.data_ptr<T>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / I), [&](int64_t begin, int64_t end) {
    std::vector<float> g(I), u(I);
    for (int64_t r = begin; r < end; ++r) {
      load_into(gp + r * 2 * I, g.data(), I);
      const float* up = load_row(gp + r * 2 * I + I, u.data(), I);
      float* gd = g.data();
      if (act == 0) {  // silu
#pragma omp simd
        for (int64_t i = 0; i < I; ++i) gd[i] = gd[i] / (1.0f + fast_exp(-gd[i]));
      } else {  // gelu, tanh approximation: tanh(y) = 1 - 2 / (exp(2y) + 1)
#pragma omp simd
        for (int64_t i = 0; i < I; ++i) {
          const float x = gd[i];
          const float y = 0.7978845608028654f * (x + 0.044715f * x * x * x);
          gd[i] = 0.5f * x * (2.0f - 2.0f / (fast_exp(2.0f * y) + 1.0f));
        }
      }
      round_row<T>(gd, I);
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) gd[i] *= up[i];
      store_row(gd, op + r * I, I);
    }
  });
}

}  // namespace

// gate_up [T, 2 I] (gate then up) -> act(gate) * up [T, I]; act 0 = silu, 1 = gelu (tanh)
at::Tensor gated_act(const at::Tensor& gate_up, int64_t act) {
  const auto dt = gate_up.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "gated_act: float32 or bfloat16");
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(1) % 2 == 0, "gate_up must be [T, 2 I]");
  TORCH_CHECK(act == 0 || act == 1, "act must be 0 (silu) or 1 (gelu_tanh), got ", act);
  check_dtype(gate_up, dt, "gate_up");
  auto out = at::empty({gate_up.size(0), gate_up.size(1) / 2}, gate_up.options());
  if (dt == at::kFloat)
    gated_act_impl<float>(gate_up, act, out);
  else
    gated_act_impl<BF16>(gate_up, act, out);
  return out;
}

}  // namespace muxserve

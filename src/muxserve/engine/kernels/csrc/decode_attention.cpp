// Paged decode attention straight from the head-wise KV pool (see kernels/__init__.py).
//
// Work item = one (sequence, KV head): its G query heads share every K/V row they read, so
// each row is loaded once for all G. Keys are visited through a list of row pointers built
// from the block table (a block's K half is tpb rows of D, its V half follows), so the loops
// never see block boundaries. With AVX-512 the scores and the weighted sum of V use explicit
// vectors (G and the V chunk width are template parameters, so the accumulators stay in
// registers); bf16 scores use the bf16 dot-product instruction where the CPU has it (q is
// already rounded to bf16 there, as in the reference path, so the products are exact).
#include <atomic>

#include "attention_simd.h"
#include "common.h"

namespace muxserve {
namespace {

struct DecodeArgs {
  int64_t B, Hq, Hkv, D, tpb, NB, LH, layer, window, num_blocks;
  float eps, scale;
  bool qk_norm;
};

// Portable loops: any G and D.
template <typename T>
void scores_generic(const float* q, const T* const* rows, int64_t G, int64_t n, int64_t D,
                    float scale, float* s, float* tmp) {
  for (int64_t i = 0; i < n; ++i) {
    const float* kr = load_row(rows[i], tmp, D);
    for (int64_t g = 0; g < G; ++g) s[g * n + i] = dot(q + g * D, kr, D) * scale;
  }
}

template <typename T>
void pv_generic(const float* p, const T* const* rows, int64_t vofs, int64_t G, int64_t n,
                int64_t D, float* o, float* tmp) {
  std::fill(o, o + G * D, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const float* vr = load_row(rows[i] + vofs, tmp, D);
    for (int64_t g = 0; g < G; ++g) {
      const float w = p[g * n + i];
      float* og = o + g * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) og[d] += w * vr[d];
    }
  }
}

// Scores then V-sum of one work item; SIMD for G <= 8 and D in {64, 128, 256}.
template <typename T>
void attend(const float* q, const T* const* rows, int64_t vofs, int64_t G, int64_t n,
            int64_t D, float scale, float* s, float* o, float* tmp, BF16* qb, uint32_t* pairs,
            bool scores) {
#if defined(__AVX512F__)
  using attention_simd::attend_d;
  if (D == 64 && attend_d<T, 64>(q, rows, vofs, G, n, scale, s, o, qb, pairs, scores)) return;
  if (D == 128 && attend_d<T, 128>(q, rows, vofs, G, n, scale, s, o, qb, pairs, scores)) return;
  if (D == 256 && attend_d<T, 256>(q, rows, vofs, G, n, scale, s, o, qb, pairs, scores)) return;
#endif
  if (scores)
    scores_generic(q, rows, G, n, D, scale, s, tmp);
  else
    pv_generic(s, rows, vofs, G, n, D, o, tmp);
}

float max_of(const float* x, int64_t n) {
#if defined(__AVX512F__)
  __m512 m = _mm512_set1_ps(x[0]);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) {  // lanes past n keep m
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
#else
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
#endif
}

void softmax_rows(float* s, int64_t G, int64_t n) {
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * n;
    const float m = max_of(sg, n);
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      sg[i] = fast_exp(sg[i] - m);
      total += sg[i];
    }
    const float inv = 1.0f / total;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) sg[i] *= inv;
  }
}

// x [D] of one head -> QK-norm (optional, Gemma3), RoPE, rounded as the reference path does
template <typename T>
void prepare_head(float* x, const T* norm, const float* cos, const float* sin, int64_t D,
                  float eps) {
  if (norm != nullptr) {  // reference: rms_norm(x) in dtype, times the scale in dtype
    rms_norm_row<T>(x, nullptr, D, eps);
    round_row<T>(x, D);
    scale_row(x, norm, D);
    round_row<T>(x, D);
  }
  rope_row(x, cos, sin, D);
  round_row<T>(x, D);
}

struct Workspace {
  std::vector<float> f;
  std::vector<BF16> qb;
  std::vector<const void*> rows;
  std::vector<uint32_t> pairs;
};

// One (sequence b, KV head h): prepare its G query heads and its new K/V, write K/V at the
// sequence's position, then attend over its keys in the window.
template <typename T>
void decode_one(const DecodeArgs& a, int64_t b, int64_t h, const T* qkv, T* pool,
                const int64_t* table, const int64_t* pos, const float* cos, const float* sin,
                const T* norm, T* out, Workspace& ws, std::atomic<bool>& bad_block) {
  const int64_t G = a.Hq / a.Hkv, D = a.D, tpb = a.tpb, p = pos[b];
  const int64_t t0 = a.window > 0 ? std::max<int64_t>(0, p - a.window + 1) : 0;
  const int64_t n = p - t0 + 1;
  ws.f.resize(size_t(G * D * 2 + 2 * D + G * n));
  ws.qb.resize(size_t(G * D));
  ws.rows.resize(size_t(n));
  ws.pairs.resize(size_t(G * (n + 1) / 2 + G));
  float* q = ws.f.data();  // [G, D] queries
  float* o = q + G * D;    // [G, D] outputs
  float* k = o + G * D;    // [D]
  float* tmp = k + D;      // [D]
  float* s = tmp + D;      // [G, n] scores, then probabilities
  const T* src = qkv + b * (a.Hq + 2 * a.Hkv) * D;
  const float* c = cos + b * D;
  const float* sn = sin + b * D;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t head = h * G + g;
    load_into(src + head * D, q + g * D, D);
    prepare_head<T>(q + g * D, norm ? norm + head * D : nullptr, c, sn, D, a.eps);
  }
  load_into(src + (a.Hq + h) * D, k, D);
  prepare_head<T>(k, norm ? norm + (a.Hq + h) * D : nullptr, c, sn, D, a.eps);
  const int64_t* tab = table + b * a.NB * a.LH + a.layer * a.Hkv + h;  // [NB], stride LH
  for (int64_t j = t0 / tpb; j <= p / tpb; ++j) {
    if (tab[j * a.LH] < 0 || tab[j * a.LH] >= a.num_blocks) {
      bad_block = true;  // reported after the parallel loop; nothing touched the pool yet
      return;
    }
  }
  const int64_t blk = tab[(p / tpb) * a.LH];
  store_row(k, pool + (blk * 2 * tpb + p % tpb) * D, D);
  std::memcpy(pool + ((blk * 2 + 1) * tpb + p % tpb) * D, src + (a.Hq + a.Hkv + h) * D,
              D * sizeof(T));
  const T** rows = reinterpret_cast<const T**>(ws.rows.data());
  for (int64_t j = t0 / tpb, i = 0; j <= p / tpb; ++j) {  // K rows; V rows are tpb * D further
    const T* half = pool + tab[j * a.LH] * 2 * tpb * D;
    for (int64_t t = std::max(t0, j * tpb); t <= std::min(p, j * tpb + tpb - 1); ++t, ++i)
      rows[i] = half + (t - j * tpb) * D;
  }
  attend<T>(q, rows, tpb * D, G, n, D, a.scale, s, o, tmp, ws.qb.data(), ws.pairs.data(), true);
  softmax_rows(s, G, n);
  attend<T>(q, rows, tpb * D, G, n, D, a.scale, s, o, tmp, ws.qb.data(), ws.pairs.data(), false);
  store_row(o, out + (b * a.Hq + h * G) * D, G * D);
}

template <typename T>
void decode_attention_impl(const at::Tensor& qkv, at::Tensor& pool, const at::Tensor& table,
                           const at::Tensor& positions, const at::Tensor& cos,
                           const at::Tensor& sin, const c10::optional<at::Tensor>& qk_norm,
                           const DecodeArgs& a, at::Tensor& out) {
  const T* qkv_p = qkv.data_ptr<T>();
  T* pool_p = pool.data_ptr<T>();
  const int64_t* tab = table.data_ptr<int64_t>();
  const int64_t* pos = positions.data_ptr<int64_t>();
  const float* cos_p = cos.data_ptr<float>();
  const float* sin_p = sin.data_ptr<float>();
  const T* norm = a.qk_norm ? qk_norm->data_ptr<T>() : nullptr;
  T* out_p = out.data_ptr<T>();
  std::atomic<bool> bad_block{false};
  at::parallel_for(0, a.B * a.Hkv, 1, [&](int64_t begin, int64_t end) {
    Workspace ws;
    for (int64_t i = begin; i < end; ++i)
      decode_one<T>(a, i / a.Hkv, i % a.Hkv, qkv_p, pool_p, tab, pos, cos_p, sin_p, norm,
                    out_p, ws, bad_block);
  });
  TORCH_CHECK(!bad_block, "decode_attention: block table names a block outside the pool (",
              a.num_blocks, " blocks)");
}

}  // namespace

// qkv [B, (Hq + 2 Hkv) * D] of one decode token per sequence; pool: the unit's storage;
// table [B, NB, L * Hkv] block ids; positions [B]; cos/sin [B, D] fp32; qk_norm [Hq + Hkv, D]
// (Gemma3) or None. Writes K/V of the new tokens into the pool; returns [B, Hq * D].
at::Tensor decode_attention(const at::Tensor& qkv, at::Tensor pool, const at::Tensor& table,
                            const at::Tensor& positions, const at::Tensor& cos,
                            const at::Tensor& sin, const c10::optional<at::Tensor>& qk_norm,
                            int64_t layer, int64_t num_q_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t tokens_per_block, int64_t window,
                            double scale, double eps) {
  const auto dt = qkv.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "decode_attention: float32 or bfloat16");
  check_dtype(qkv, dt, "qkv");
  check_dtype(pool, dt, "pool");
  check_dtype(table, at::kLong, "table");
  check_dtype(positions, at::kLong, "positions");
  check_dtype(cos, at::kFloat, "cos");
  check_dtype(sin, at::kFloat, "sin");
  const int64_t B = qkv.size(0);
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) == (num_q_heads + 2 * num_kv_heads) * head_dim,
              "qkv must be [B, (Hq + 2 Hkv) * D]");
  TORCH_CHECK(num_kv_heads > 0 && num_q_heads % num_kv_heads == 0,
              "Hq must be a multiple of Hkv");
  TORCH_CHECK(head_dim % 2 == 0 && tokens_per_block > 0, "bad head_dim or tokens_per_block");
  TORCH_CHECK(table.dim() == 3 && table.size(0) == B, "table must be [B, NB, L * Hkv]");
  TORCH_CHECK(layer >= 0 && table.size(2) >= (layer + 1) * num_kv_heads,
              "layer out of the table's range");
  TORCH_CHECK(positions.numel() == B && cos.numel() == B * head_dim &&
                  sin.numel() == B * head_dim,
              "positions [B], cos/sin [B, D]");
  if (qk_norm) {
    check_dtype(*qk_norm, dt, "qk_norm");
    TORCH_CHECK(qk_norm->numel() == (num_q_heads + num_kv_heads) * head_dim, "qk_norm shape");
  }
  const int64_t pool_rows = pool.numel() / head_dim;
  const auto pos = positions.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(pos[b] >= 0 && pos[b] / tokens_per_block < table.size(1),
                "position ", pos[b], " of sequence ", b, " is not covered by its block table");
  DecodeArgs a{B, num_q_heads, num_kv_heads, head_dim, tokens_per_block, table.size(1),
               table.size(2), layer, window, pool_rows / (2 * tokens_per_block), float(eps),
               float(scale), qk_norm.has_value()};
  auto out = at::empty({B, num_q_heads * head_dim}, qkv.options());
  if (dt == at::kFloat)
    decode_attention_impl<float>(qkv, pool, table, positions, cos, sin, qk_norm, a, out);
  else
    decode_attention_impl<BF16>(qkv, pool, table, positions, cos, sin, qk_norm, a, out);
  return out;
}

}  // namespace muxserve

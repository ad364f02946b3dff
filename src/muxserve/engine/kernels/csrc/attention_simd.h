// AVX-512 inner loops of decode attention (included by decode_attention.cpp only): scores
// q . K and the probability-weighted sum of V for one work item, with the group size G and
// head_dim D as template parameters so the accumulators stay in registers.
#pragma once
#include "common.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace muxserve {
namespace attention_simd {

#if defined(__AVX512F__)
// rows ahead to prefetch: a sequence's blocks are scattered over the pool, and the hardware
// prefetcher stops at each block's (page's) end
#ifndef MUXSERVE_PREFETCH
#define MUXSERVE_PREFETCH 8
#endif
constexpr int64_t PREFETCH = MUXSERVE_PREFETCH;
inline void prefetch_row(const void* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64)
    _mm_prefetch(static_cast<const char*>(p) + o, _MM_HINT_T0);
}

// row r of the item's stream: K rows 0..n-1, then V rows (the V pass starts warm)
template <typename T>
inline void prefetch_stream(const T* const* rows, int64_t r, int64_t n, int64_t vofs,
                            int64_t D) {
  if (r < n)
    prefetch_row(rows[r], D * sizeof(T));
  else if (r < 2 * n)
    prefetch_row(rows[r - n] + vofs, D * sizeof(T));
}

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const BF16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// acc[g] += q[g] * K-row, as 16-lane partial sums; DP: bf16 dot products on the bf16 copy qb
// of q (D % 32 == 0), else fp32 FMAs (D % 16 == 0)
template <typename T, int G, int D, bool DP>
inline void dot_row(const float* q, const BF16* qb, const T* k, __m512* acc) {
#if defined(__AVX512BF16__)
  if constexpr (DP && std::is_same_v<T, BF16>) {
    for (int64_t d = 0; d < D; d += 32) {
      const __m512bh kv = (__m512bh)_mm512_loadu_si512(k + d);
      for (int g = 0; g < G; ++g)
        acc[g] = _mm512_dpbf16_ps(acc[g], (__m512bh)_mm512_loadu_si512(qb + g * D + d), kv);
    }
    return;
  }
#endif
  for (int64_t d = 0; d < D; d += 16) {
    const __m512 kv = load16(k + d);
    for (int g = 0; g < G; ++g)
      acc[g] = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + d), kv, acc[g]);
  }
}

// the lane sums of a, b, c, d: 4 horizontal reductions for the price of ~1.5
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// s[g, i] = scale * q[g] . K[i], four keys at a time
template <typename T, int G, int D, bool DP>
void scores_simd(const float* q, const BF16* qb, const T* const* rows, int64_t vofs,
                 int64_t n, float scale, float* s) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int64_t r = i + PREFETCH; r < i + PREFETCH + 4; ++r)
      prefetch_stream(rows, r, n, vofs, D);
    __m512 acc[4][G];
    for (int r = 0; r < 4; ++r) {
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
      dot_row<T, G, D, DP>(q, qb, rows[i + r], acc[r]);
    }
    for (int g = 0; g < G; ++g)
      _mm_storeu_ps(s + g * n + i, _mm_mul_ps(reduce4(acc[0][g], acc[1][g], acc[2][g],
                                                      acc[3][g]), _mm_set1_ps(scale)));
  }
  for (; i < n; ++i) {
    prefetch_stream(rows, i + PREFETCH, n, vofs, D);
    __m512 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_ps();
    dot_row<T, G, D, DP>(q, qb, rows[i], acc);
    for (int g = 0; g < G; ++g) s[g * n + i] = _mm512_reduce_add_ps(acc[g]) * scale;
  }
}

#if defined(__AVX512BF16__)
// o[g] = sum_i p[g, i] V[i] with bf16 dot products over key pairs: rows i and i+1 are
// interleaved word by word, the two probabilities (rounded to bf16, as torch's flash attention
// does) broadcast as one pair. Unpacking works within 128-bit lanes, so accumulator lane 4k+m
// holds d = 8k+m (lo) or 8k+4+m (hi) of its 32-wide chunk; the end undoes that. D % 64 == 0.
template <int G, int D>
void pv_bf16dp(const float* p, const BF16* const* rows, int64_t vofs, int64_t n,
               float* o, uint32_t* pairs) {
  const int64_t npairs = (n + 1) / 2;
  for (int g = 0; g < G; ++g) {  // p in bf16, consecutive: a word pair is (p[2j], p[2j+1])
    BF16* dst = reinterpret_cast<BF16*>(pairs + g * npairs);
    const float* src = p + g * n;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    for (; i < n; ++i) put(src[i], dst + i);
    if (n % 2) dst[n].x = 0;
  }
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    __m512 acc[G][4];
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) acc[g][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < npairs; ++j) {
      const BF16* a = rows[2 * j] + vofs + d0;
      const BF16* b = (2 * j + 1 < n ? rows[2 * j + 1] : rows[2 * j]) + vofs + d0;
      if (d0 == 0 && 2 * j + PREFETCH + 1 < n) {
        prefetch_row(rows[2 * j + PREFETCH] + vofs, D * 2);
        prefetch_row(rows[2 * j + PREFETCH + 1] + vofs, D * 2);
      }
      const __m512i a0 = _mm512_loadu_si512(a), a1 = _mm512_loadu_si512(a + 32);
      const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 32);
      const __m512bh x[4] = {(__m512bh)_mm512_unpacklo_epi16(a0, b0),
                             (__m512bh)_mm512_unpackhi_epi16(a0, b0),
                             (__m512bh)_mm512_unpacklo_epi16(a1, b1),
                             (__m512bh)_mm512_unpackhi_epi16(a1, b1)};
      for (int g = 0; g < G; ++g) {
        const __m512bh w = (__m512bh)_mm512_set1_epi32(int32_t(pairs[g * npairs + j]));
        for (int c = 0; c < 4; ++c) acc[g][c] = _mm512_dpbf16_ps(acc[g][c], w, x[c]);
      }
    }
    alignas(64) float lo[16], hi[16];
    for (int g = 0; g < G; ++g) {
      for (int c = 0; c < 2; ++c) {
        _mm512_store_ps(lo, acc[g][2 * c]);
        _mm512_store_ps(hi, acc[g][2 * c + 1]);
        float* dst = o + g * D + d0 + 32 * c;
        for (int k = 0; k < 4; ++k)
          for (int m = 0; m < 4; ++m) {
            dst[8 * k + m] = lo[4 * k + m];
            dst[8 * k + 4 + m] = hi[4 * k + m];
          }
      }
    }
  }
}
#endif

// o[g] = sum_i p[g, i] V[i], NV vectors of 16 at a time; needs D % (16 NV) == 0
template <typename T, int G, int D, int NV>
void pv_simd(const float* p, const T* const* rows, int64_t vofs, int64_t n,
             float* o) {
  for (int64_t d0 = 0; d0 < D; d0 += 16 * NV) {
    __m512 acc[G][NV];
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < NV; ++j) acc[g][j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; ++i) {
      const T* v = rows[i] + vofs + d0;
      if (d0 == 0 && i + PREFETCH < n) prefetch_row(rows[i + PREFETCH] + vofs, D * sizeof(T));
      __m512 vv[NV];
      for (int j = 0; j < NV; ++j) vv[j] = load16(v + 16 * j);
      for (int g = 0; g < G; ++g) {
        const __m512 w = _mm512_set1_ps(p[g * n + i]);
        for (int j = 0; j < NV; ++j) acc[g][j] = _mm512_fmadd_ps(w, vv[j], acc[g][j]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(o + g * D + d0 + 16 * j, acc[g][j]);
  }
}

template <typename T, int G, int D>
void scores_g(const float* q, const T* const* rows, int64_t vofs, int64_t n, float scale,
              float* s, BF16* qb) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, BF16>) {
    if constexpr (D % 32 == 0) {
      for (int64_t i = 0; i < G * D; ++i) put(q[i], qb + i);  // exact: q holds bf16 values
      return scores_simd<T, G, D, true>(q, qb, rows, vofs, n, scale, s);
    }
  }
#endif
  scores_simd<T, G, D, false>(q, qb, rows, vofs, n, scale, s);
}

template <typename T, int G, int D>
void pv_g(const float* p, const T* const* rows, int64_t vofs, int64_t n, float* o,
          uint32_t* pairs) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, BF16>) {
    if constexpr (D % 64 == 0) return pv_bf16dp<G, D>(p, rows, vofs, n, o, pairs);
  }
#endif
  if constexpr (G <= 4 && D % 64 == 0)
    pv_simd<T, G, D, 4>(p, rows, vofs, n, o);
  else
    pv_simd<T, G, D, 2>(p, rows, vofs, n, o);
}

// The SIMD paths by head_dim and group size (compile-time, so accumulators stay in registers).
template <typename T, int D>
bool attend_d(const float* q, const T* const* rows, int64_t vofs, int64_t G, int64_t n,
              float scale, float* s, float* o, BF16* qb, uint32_t* pairs, bool scores) {
  switch (G) {
#define MUXSERVE_CASE(NG)                               \
  case NG:                                              \
    if (scores)                                         \
      scores_g<T, NG, D>(q, rows, vofs, n, scale, s, qb);\
    else                                                \
      pv_g<T, NG, D>(s, rows, vofs, n, o, pairs);       \
    return true;
    MUXSERVE_CASE(1) MUXSERVE_CASE(2) MUXSERVE_CASE(3) MUXSERVE_CASE(4)
    MUXSERVE_CASE(5) MUXSERVE_CASE(6) MUXSERVE_CASE(7) MUXSERVE_CASE(8)
#undef MUXSERVE_CASE
    default:
      return false;
  }
}
#endif

}  // namespace attention_simd
}  // namespace muxserve

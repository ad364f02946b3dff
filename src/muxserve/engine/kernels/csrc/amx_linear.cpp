// bf16 linear layers on AMX tiles, with weights packed once into tile order.
//
// Why not oneDNN's packed matmul: at decode sizes (M <= 64 rows) a projection streams its
// weights from DRAM once per step, and oneDNN's kernel drew only ~6.5 GB/s per core here
// (11-14 GB/s on two) against 15 per core for a plain read. This kernel lays each pair of
// 16-column blocks out as one contiguous run of 1 KB tiles (packed by models/linear.py as
// [N/16 column blocks][K/32][16 K-pairs][16 columns][2]), so every thread reads one
// sequential stream the hardware prefetcher follows, and prefetches the pair after next
// while the current pair multiplies. Any M works (row chunks of 32 reuse the pair's tiles from
// cache), accumulation is fp32 (tdpbf16ps), output bf16 or fp32 (logits skip a conversion).
#include "common.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define MUXSERVE_AMX 1
#else
#define MUXSERVE_AMX 0
#endif

namespace muxserve {
namespace {

constexpr int64_t TILE = 512;  // bf16 elements of one B tile: 16 K-pairs x 16 columns x 2

#if MUXSERVE_AMX
bool amx_permitted() {  // Linux hands out AMX state per process, on request
  static const bool ok = [] {
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// tiles 0, 1: A (row blocks 0 and 1 of the chunk); 2, 3: B (column blocks 0 and 1);
// 4, 5: C of A0 x (B0, B1); 6, 7: C of A1 x (B0, B1). rows1 == 0: one row block only.
void configure(int rows0, int rows1) {
  TileConfig c{};
  c.palette_id = 1;
  const int rows[8] = {rows0, rows1, 16, 16, rows0, rows0, rows1, rows1};
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = uint8_t(rows[t]);
    c.colsb[t] = rows[t] ? 64 : 0;
  }
  _tile_loadconfig(&c);
}

inline void prefetch_lines(const void* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes; o += 64)
    _mm_prefetch(static_cast<const char*>(p) + o, _MM_HINT_T0);
}

// C[rows, 32] (fp32, row stride 32) = x[rows, K] . W-pair^T; x row stride K
template <bool TWO>
void pair_tiles(const BF16* x, int64_t K, const BF16* b0, const BF16* b1, const BF16* next,
                float* c) {
  const int64_t KB = K / 32, stride = K * 2;
  _tile_zero(4);
  _tile_zero(5);
  if constexpr (TWO) {
    _tile_zero(6);
    _tile_zero(7);
  }
  for (int64_t kb = 0; kb < KB; ++kb) {
    if (next != nullptr) {  // the next pair's tiles at the same depth
      prefetch_lines(next + kb * TILE, 1024);
      prefetch_lines(next + (KB + kb) * TILE, 1024);
    }
    _tile_loadd(0, x + kb * 32, stride);
    _tile_loadd(2, b0 + kb * TILE, 64);
    _tile_loadd(3, b1 + kb * TILE, 64);
    _tile_dpbf16ps(4, 0, 2);
    _tile_dpbf16ps(5, 0, 3);
    if constexpr (TWO) {
      _tile_loadd(1, x + 16 * K + kb * 32, stride);
      _tile_dpbf16ps(6, 1, 2);
      _tile_dpbf16ps(7, 1, 3);
    }
  }
  _tile_stored(4, c, 128);
  _tile_stored(5, c + 16, 128);
  if constexpr (TWO) {
    _tile_stored(6, c + 16 * 32, 128);
    _tile_stored(7, c + 16 * 32 + 16, 128);
  }
}

template <typename Out>
void amx_linear_impl(const BF16* x, int64_t M, int64_t K, const BF16* w, int64_t N,
                     const BF16* bias, Out* y) {
  const int64_t pairs = N / 32, KB = K / 32;
  at::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float c[32 * 32];
    int configured = -1;
    for (int64_t j = begin; j < end; ++j) {
      const BF16* b0 = w + 2 * j * KB * TILE;
#ifndef MUXSERVE_AMX_PF
#define MUXSERVE_AMX_PF 2
#endif
      const BF16* next = (MUXSERVE_AMX_PF > 0 && j + MUXSERVE_AMX_PF < end)
                             ? b0 + MUXSERVE_AMX_PF * 2 * KB * TILE : nullptr;
      for (int64_t m0 = 0; m0 < M; m0 += 32) {
        const int64_t rows = std::min<int64_t>(32, M - m0);
        const int shape = int(rows);
        if (configured != shape) {
          configure(int(std::min<int64_t>(16, rows)), int(std::max<int64_t>(0, rows - 16)));
          configured = shape;
        }
        const BF16* xs = x + m0 * K;
        if (rows > 16)
          pair_tiles<true>(xs, K, b0, b0 + KB * TILE, m0 == 0 ? next : nullptr, c);
        else
          pair_tiles<false>(xs, K, b0, b0 + KB * TILE, m0 == 0 ? next : nullptr, c);
        for (int64_t r = 0; r < rows; ++r) {
          Out* dst = y + (m0 + r) * N + j * 32;
          const float* src = c + r * 32;
#pragma omp simd
          for (int64_t n = 0; n < 32; ++n) {
            const float v = src[n] + (bias ? to_f(bias[j * 32 + n]) : 0.f);
            put(v, dst + n);
          }
        }
      }
    }
    _tile_release();
  });
}
#endif

}  // namespace

bool amx_linear_available() {
#if MUXSERVE_AMX
  return amx_permitted();
#else
  return false;
#endif
}

// y = x . W^T (+ bias) for x [M, K] bf16 and W in tile order; out_fp32 returns fp32
at::Tensor amx_linear(const at::Tensor& x, const at::Tensor& packed,
                      const c10::optional<at::Tensor>& bias, bool out_fp32) {
  TORCH_CHECK(amx_linear_available(), "amx_linear: this CPU/OS/build has no AMX bf16");
  check_dtype(x, at::kBFloat16, "x");
  check_dtype(packed, at::kBFloat16, "packed");
  TORCH_CHECK(x.dim() == 2 && packed.dim() == 2 && x.size(1) == packed.size(1),
              "amx_linear: x [M, K] and packed [N, K] must share K");
  const int64_t M = x.size(0), K = x.size(1), N = packed.size(0);
  TORCH_CHECK(N % 32 == 0 && K % 32 == 0, "amx_linear: N and K must be multiples of 32");
  if (bias) {
    check_dtype(*bias, at::kBFloat16, "bias");
    TORCH_CHECK(bias->numel() == N, "bias must have N elements");
  }
  auto y = at::empty({M, N}, x.options().dtype(out_fp32 ? at::kFloat : at::kBFloat16));
#if MUXSERVE_AMX
  const BF16* b = bias ? bias->data_ptr<BF16>() : nullptr;
  if (out_fp32)
    amx_linear_impl<float>(x.data_ptr<BF16>(), M, K, packed.data_ptr<BF16>(), N, b,
                           y.data_ptr<float>());
  else
    amx_linear_impl<BF16>(x.data_ptr<BF16>(), M, K, packed.data_ptr<BF16>(), N, b,
                          y.data_ptr<BF16>());
#endif
  return y;
}

}  // namespace muxserve

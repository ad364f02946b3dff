// torch.ops.muxserve_cpu.* (schemas and CPU implementations).
#include <torch/library.h>

#include "common.h"

using namespace muxserve;

TORCH_LIBRARY(muxserve_cpu, m) {
  m.def("decode_attention(Tensor qkv, Tensor(a!) pool, Tensor table, Tensor positions, "
        "Tensor cos, Tensor sin, Tensor? qk_norm, int layer, int num_q_heads, "
        "int num_kv_heads, int head_dim, int tokens_per_block, int window, float scale, "
        "float eps) -> Tensor");
  m.def("add_rms_norm(Tensor(a!) x, Tensor? y, Tensor? y_weight, Tensor weight, float eps) "
        "-> Tensor");
  m.def("gated_act(Tensor gate_up, int act) -> Tensor");
  m.def("amx_available() -> bool");
  m.def("amx_linear(Tensor x, Tensor packed, Tensor? bias, bool out_fp32) -> Tensor");
}

TORCH_LIBRARY_IMPL(muxserve_cpu, CPU, m) {
  m.impl("decode_attention", decode_attention);
  m.impl("add_rms_norm", add_rms_norm);
  m.impl("gated_act", gated_act);
  m.impl("amx_linear", amx_linear);
}

// no tensor arguments: registered for every backend
TORCH_LIBRARY_IMPL(muxserve_cpu, CompositeExplicitAutograd, m) {
  m.impl("amx_available", amx_linear_available);
}

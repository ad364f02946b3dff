"""Quick decode throughput of ModelRunner: batch B sequences at context ~C, tokens/s.

Weights are random (timing does not depend on their values), shapes are the real presets.
With --hf, transformers' own model of the same shapes runs the same decode in the same process
(forward with its KV cache, what generate() does per step) as the baseline.
Usage: .venv/bin/python benchmarks/engine_models_decode.py [--models smollm2-135m gemma3-270m]
       [--dtypes float32 bfloat16] [--batch 32] [--context 128] [--steps 32] [--threads 2] [--hf]
       [--no-pack] [--onednn] [--no-kernels] [--ablation]
--ablation times, back to back per model and dtype: plain PyTorch ops with oneDNN-packed
weights (the engine before the fused kernels), fused kernels + oneDNN packing, fused kernels +
AMX tiles (the default).
"""

from __future__ import annotations

import argparse
import time

import torch

from muxserve.config.models import ModelArch, get_model_arch
from muxserve.engine import kernels
from muxserve.engine.kv_pool import KVPool
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.engine.sampling import first_argmax
from muxserve.kvcache.block_manager import BlockManager

CLOCK = time.perf_counter  # --cpu-time: time.process_time (robust on a shared machine, 1 thread)
PACK = True  # --no-pack: plain bf16 weights
AMX = True  # --onednn: pack into oneDNN's layout even where AMX tiles are available


def random_hf_weights(arch: ModelArch, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, d, i_sz = arch.hidden_size, arch.head_dim, arch.intermediate_size

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    w = {"model.embed_tokens.weight": r(arch.vocab_size, h), "model.norm.weight": torch.ones(h)}
    for li in range(arch.num_layers):
        p = f"model.layers.{li}."
        w |= {p + "self_attn.q_proj.weight": r(arch.num_heads * d, h),
              p + "self_attn.k_proj.weight": r(arch.num_kv_heads * d, h),
              p + "self_attn.v_proj.weight": r(arch.num_kv_heads * d, h),
              p + "self_attn.o_proj.weight": r(h, arch.num_heads * d),
              p + "mlp.gate_proj.weight": r(i_sz, h), p + "mlp.up_proj.weight": r(i_sz, h),
              p + "mlp.down_proj.weight": r(h, i_sz)}
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            w[p + n + ".weight"] = torch.zeros(h)
        w[p + "self_attn.q_norm.weight"] = torch.zeros(d)
        w[p + "self_attn.k_norm.weight"] = torch.zeros(d)
    return w


def bench(name: str, dtype: torch.dtype, batch: int, context: int, steps: int) -> float:
    arch = get_model_arch(name)
    need = batch * -(-(context + steps + 1) // (8192 // (2 * arch.head_dim))) \
        * arch.num_layers * arch.num_kv_heads
    bm = BlockManager(need + 16)
    layout = bm.register_model(0, arch.num_layers, arch.num_kv_heads, arch.head_dim)
    pool = KVPool(need + 16, dtype=dtype)
    runner = ModelRunner(arch, random_hf_weights(arch), pool, layout, dtype)
    if PACK:
        runner.pack_weights(amx=AMX)  # what MultiModelLLM does (bf16 only)
    g = torch.Generator().manual_seed(1)
    for s in range(batch):
        bm.allocate(s, 0, context)
        ids = torch.randint(0, arch.vocab_size, (context,), generator=g).tolist()
        runner.execute([SeqInput(ids, 0, bm.block_table(s))])
    last = [1] * batch
    t0 = 0.0
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            t0 = CLOCK()
        items = []
        for s in range(batch):
            bm.append(s, 1)
            items.append(SeqInput([last[s]], bm.num_tokens(s) - 1, bm.block_table(s)))
        last = first_argmax(runner.execute(items)).tolist()  # the engine's greedy sampler
    return batch * steps / (CLOCK() - t0)


def hf_model(arch: ModelArch, dtype: torch.dtype) -> torch.nn.Module:
    import transformers as tf
    common = dict(hidden_size=arch.hidden_size, num_attention_heads=arch.num_heads,
                  num_key_value_heads=arch.num_kv_heads, head_dim=arch.head_dim,
                  intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
                  vocab_size=arch.vocab_size, tie_word_embeddings=True,
                  max_position_embeddings=arch.max_context)
    if arch.family == "gemma3":
        cfg = tf.Gemma3TextConfig(sliding_window=arch.sliding_window,
                                  query_pre_attn_scalar=int(arch.query_pre_attn_scalar), **common)
        model = tf.Gemma3ForCausalLM(cfg)
    else:
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common))
    return model.to(dtype).eval()


def bench_hf(name: str, dtype: torch.dtype, batch: int, context: int, steps: int) -> float:
    model = hf_model(get_model_arch(name), dtype)
    ids = torch.randint(0, 1000, (batch, context))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = 0.0
        for step in range(steps + 2):
            if step == 2:
                t0 = CLOCK()
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return batch * steps / (CLOCK() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf", action="store_true", help="also time transformers (baseline)")
    ap.add_argument("--no-pack", action="store_true", help="do not pack bf16 weights")
    ap.add_argument("--onednn", action="store_true", help="pack into oneDNN's layout, not AMX")
    ap.add_argument("--no-kernels", action="store_true",
                    help="plain PyTorch ops instead of the fused C++ kernels")
    ap.add_argument("--ablation", action="store_true",
                    help="time PyTorch ops + oneDNN, kernels + oneDNN, kernels + AMX")
    ap.add_argument("--cpu-time", action="store_true",
                    help="count this process's CPU seconds instead of wall time (use with "
                         "--threads 1 when other jobs share the machine)")
    args = ap.parse_args()
    global CLOCK, PACK, AMX
    PACK, AMX = not args.no_pack, not args.onednn
    kernels.set_enabled(not args.no_kernels)
    if args.cpu_time:
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    if args.ablation:
        return ablation(args)
    for name in args.models:
        for dt in args.dtypes:
            tps = bench(name, getattr(torch, dt), args.batch, args.context, args.steps)
            line = (f"{name:14s} {dt:9s} batch {args.batch} ctx {args.context}: "
                    f"muxserve {tps:7.1f} decode tok/s")
            if args.hf:
                hf = bench_hf(name, getattr(torch, dt), args.batch, args.context, args.steps)
                line += f"  transformers {hf:7.1f} tok/s  ratio {tps / hf:.2f}x"
            print(line, flush=True)


def ablation(args: argparse.Namespace) -> None:
    global AMX
    steps = [("pytorch ops + onednn", False, False), ("kernels + onednn", True, False),
             ("kernels + amx tiles", True, True)]
    for name in args.models:
        for dt in args.dtypes:
            res = []
            for label, on, amx in steps:
                kernels.set_enabled(on)
                AMX = amx
                res.append((label, bench(name, getattr(torch, dt), args.batch, args.context,
                                         args.steps)))
            base = res[0][1]
            print(f"{name:14s} {dt:9s} batch {args.batch} ctx {args.context}: " + "  ".join(
                f"{label} {tps:6.1f} tok/s ({tps / base:.2f}x)" for label, tps in res),
                flush=True)
    kernels.set_enabled(True)


if __name__ == "__main__":
    main()

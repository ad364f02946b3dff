"""Engine throughput vs transformers' generate on the same GGUF weights, and vs this machine's
roofline measured in the same run.

For each model x dtype:
- prefill tokens/s of one prompt of 128 and 512 tokens (a generate of 1 token, both engines);
- decode tokens/s at batch 1, 8, 32: B prompts of --prompt-len random tokens, greedy,
  --new-tokens tokens each with EOS ignored (transformers: min_new_tokens = max_new_tokens).
  Ours: time of the steps after every request got its first token. Transformers:
  time(generate N) - time(generate 1), over B * (N - 1) tokens.
- roofline fraction = (the time the roofline allows) / (the measured time), where the roofline
  time of a decode step is max(bytes read / copy bandwidth, FLOPs / matmul FLOP/s): bytes read =
  all weights + the batch's KV cache; FLOPs = 2 x params per token + attention + the logits of
  each sequence's last token. Prefill uses the same bound for one forward of the whole prompt.
- a sanity check: greedy tokens after a fixed text prompt, ours vs transformers'.

Usage:
  .venv/bin/python benchmarks/bench_engine.py --out benchmarks/results/engine.json
  .venv/bin/python benchmarks/bench_engine.py --quick        # smoke run (smollm2, small sizes)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.llm import MultiModelLLM, parse_dtype
from muxserve.engine.loader import load_model
from muxserve.engine.loader.cache import cache_root
from muxserve.engine.loader.sources import resolve_source
from muxserve.engine.request import GenerationRequest
from muxserve.types import SamplingParams

GREEDY = dict(temperature=0.0, ignore_eos=True)
# Greedy continuations of this prompt are compared with transformers' (a sanity check that the
# two engines compute the same thing; random-token prompts give near-flat logits, so no).
AGREEMENT_PROMPT = "The capital of France is"


def _agreement(ours: list[int], theirs: list[int], eos_ids: frozenset[int]) -> float:
    """Fraction of equal greedy tokens before our first EOS: from there on the runs cannot
    agree, since transformers' min_new_tokens masks EOS while ignore_eos picks it."""
    end = next((i for i, t in enumerate(ours) if t in eos_ids), len(ours))
    same = sum(a == b for a, b in zip(ours[:end], theirs[:end], strict=False))
    return same / max(end, 1)


# ---- roofline -------------------------------------------------------------------------------
def _best_time(fn: Any, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_roofline(quick: bool) -> dict[str, float]:
    """Copy bandwidth (bytes read + written per second) and matmul FLOP/s, fp32 and bf16."""
    n_bytes = (64 if quick else 512) * 2**20
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    copy_s = _best_time(lambda: dst.copy_(src), 3 if quick else 5)
    out: dict[str, float] = {"copy_bytes_per_s": 2 * n_bytes / copy_s}
    n = 1024 if quick else 2048
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        mm_s = _best_time(lambda a=a, b=b: a @ b, 3)
        out[f"matmul_flops_per_s_{name}"] = 2 * n**3 / mm_s
    return out


def roofline_s(arch: ModelArch, dtype_bytes: int, batch: int, context: int, new_tokens: int,
               roof: dict[str, float], dtype: str) -> float:
    """Least time one forward of `batch` sequences x `new_tokens` tokens each can take."""
    flops = batch * new_tokens * (arch.flops_per_token() + 2 * arch.vocab_size * arch.hidden_size
                                  / new_tokens)  # logits of the last token only
    attn_flops = 4 * batch * new_tokens * context * arch.num_heads * arch.head_dim \
        * arch.num_layers
    t_flops = (flops + attn_flops) / roof[f"matmul_flops_per_s_{dtype}"]
    read = arch.weight_bytes(dtype_bytes) + batch * context * arch.kv_bytes_per_token(dtype_bytes)
    return max(t_flops, read / roof["copy_bytes_per_s"])


# ---- our engine -----------------------------------------------------------------------------
def _prompts(vocab: int, n: int, length: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # skip the low ids, where the special tokens live
    return torch.randint(300, vocab, (n, length), generator=g).tolist()


def bench_ours(model: str, arch: ModelArch, vocab: int, dtype: str, text_ids: list[int],
               args: argparse.Namespace) -> dict[str, Any]:
    tokens = max(args.prompt_len + args.new_tokens, max(args.prefill_lens) + 1)
    tpb = 8192 // (2 * arch.head_dim)
    per_seq = -(-tokens // tpb) * arch.num_layers * arch.num_kv_heads
    llm = MultiModelLLM([model], dtype=dtype, num_blocks=(max(args.batches) + 1) * per_seq)
    res: dict[str, Any] = {"prefill": {}, "decode": {}}
    warm = _prompts(vocab, 1, 16, 0)[0]
    llm.generate([GenerationRequest(model, warm, SamplingParams(max_tokens=4, **GREEDY))])
    for n in args.prefill_lens:
        prompt = _prompts(vocab, 1, n, n)[0]
        req = GenerationRequest(model, prompt, SamplingParams(max_tokens=1, **GREEDY))
        t = _best_time(lambda req=req: llm.generate([req]), args.reps)
        res["prefill"][n] = n / t
    for b in args.batches:
        prompts = _prompts(vocab, b, args.prompt_len, 1000 + b)
        res["decode"][b] = _decode_run(llm, model, prompts, args.new_tokens)
    [out] = llm.generate([GenerationRequest(model, text_ids,
                                            SamplingParams(max_tokens=args.new_tokens, **GREEDY))])
    res["greedy_tokens"] = out.token_ids
    return res


def _decode_run(llm: MultiModelLLM, model: str, prompts: list[list[int]], new_tokens: int
                ) -> float:
    params = SamplingParams(max_tokens=new_tokens, **GREEDY)
    ids = [llm.add_request(GenerationRequest(model, p, params)) for p in prompts]
    toks: dict[int, list[int]] = {i: [] for i in ids}
    while any(not t for t in toks.values()):  # prefills
        for o in llm.step():
            toks[o.request_id] += o.new_token_ids
    t0 = time.perf_counter()
    n = 0
    while llm.has_unfinished():
        for o in llm.step():
            toks[o.request_id] += o.new_token_ids
            n += 1
    dt = time.perf_counter() - t0
    llm.check_integrity()
    assert all(len(t) == new_tokens for t in toks.values())
    return n / dt


# ---- transformers ---------------------------------------------------------------------------
def load_hf(model: str) -> Any:
    from transformers import AutoModelForCausalLM

    path = resolve_source(model, cache_root()).path
    assert path is not None
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                torch_dtype=torch.float32).eval()


def bench_hf(hf: Any, vocab: int, text_ids: list[int], args: argparse.Namespace
             ) -> dict[str, Any]:
    res: dict[str, Any] = {"prefill": {}, "decode": {}}

    def gen(ids: list[list[int]], n: int) -> torch.Tensor:
        x = torch.tensor(ids)
        with torch.inference_mode():
            return hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, pad_token_id=0)

    gen(_prompts(vocab, 1, 16, 0), 4)  # warm-up
    for n in args.prefill_lens:
        prompt = _prompts(vocab, 1, n, n)
        res["prefill"][n] = n / _best_time(lambda p=prompt: gen(p, 1), args.reps)
    for b in args.batches:
        prompts = _prompts(vocab, b, args.prompt_len, 1000 + b)
        t1 = _best_time(lambda p=prompts: gen(p, 1), 1)
        t0 = time.perf_counter()
        gen(prompts, args.new_tokens)
        t_n = time.perf_counter() - t0
        res["decode"][b] = b * (args.new_tokens - 1) / max(t_n - t1, 1e-9)
    res["greedy_tokens"] = gen([text_ids], args.new_tokens)[0, len(text_ids):].tolist()
    return res


# ---- report ---------------------------------------------------------------------------------
def rows_for(model: str, arch: ModelArch, dtype: str, ours: dict[str, Any],
             hf: dict[str, Any] | None, roof: dict[str, float], args: argparse.Namespace
             ) -> list[dict[str, Any]]:
    nbytes = parse_dtype(dtype).itemsize
    rows = []
    for n, tok_s in ours["prefill"].items():
        ideal = roofline_s(arch, nbytes, 1, n, n, roof, dtype)
        rows.append(_row(model, dtype, f"prefill {n}", tok_s, hf and hf["prefill"][n],
                         ideal * tok_s / n))
    ctx = args.prompt_len + args.new_tokens // 2  # mean context over the decode steps
    for b, tok_s in ours["decode"].items():
        ideal = roofline_s(arch, nbytes, b, ctx, 1, roof, dtype)
        rows.append(_row(model, dtype, f"decode b={b}", tok_s, hf and hf["decode"][b],
                         ideal * tok_s / b))
    return rows


def _row(model: str, dtype: str, what: str, ours: float, hf: float | None,
         frac: float) -> dict[str, Any]:
    return {"model": model, "dtype": dtype, "what": what, "ours_tok_s": round(ours, 1),
            "hf_tok_s": None if hf is None else round(hf, 1),
            "ours_over_hf": None if not hf else round(ours / hf, 2),
            "ours_roofline_fraction": round(frac, 3)}


def print_table(rows: list[dict[str, Any]], roof: dict[str, float]) -> None:
    print(f"roofline: copy {roof['copy_bytes_per_s'] / 1e9:.1f} GB/s, matmul fp32 "
          f"{roof['matmul_flops_per_s_float32'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{roof['matmul_flops_per_s_bfloat16'] / 1e9:.1f} GFLOP/s")
    head = f"{'model':<14} {'dtype':<9} {'what':<13} {'ours tok/s':>11} {'hf tok/s':>9} " \
           f"{'ours/hf':>8} {'of roofline':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        hf = "-" if r["hf_tok_s"] is None else f"{r['hf_tok_s']:.1f}"
        ratio = "-" if r["ours_over_hf"] is None else f"{r['ours_over_hf']:.2f}x"
        print(f"{r['model']:<14} {r['dtype']:<9} {r['what']:<13} {r['ours_tok_s']:>11.1f} "
              f"{hf:>9} {ratio:>8} {r['ours_roofline_fraction']:>12.1%}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--prefill-lens", nargs="+", type=int, default=[128, 512])
    ap.add_argument("--prompt-len", type=int, default=128, help="decode prompts' length")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens each decode request makes")
    ap.add_argument("--reps", type=int, default=3, help="prefill repetitions (best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: smollm2 only, batches 1 and 4, 8 new tokens, 1 rep")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.prefill_lens = ["smollm2-135m"], [1, 4], [128]
        args.prompt_len, args.new_tokens, args.reps = 32, 8, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    torch.set_num_threads(args.threads)
    roof = measure_roofline(args.quick)
    rows: list[dict[str, Any]] = []
    agree: dict[str, float] = {}
    agree_fp32: dict[str, float] = {}  # against transformers fp32, the most exact reference
    for model in args.models:
        loaded = load_model(model)
        arch, vocab = loaded.arch, loaded.tokenizer.vocab_size
        text_ids = loaded.tokenizer.encode(AGREEMENT_PROMPT)
        eos_ids = loaded.tokenizer.eos_token_ids
        del loaded
        hf = None if args.no_hf else load_hf(model)
        hf_fp32_tokens = None
        for dtype in sorted(args.dtypes, key=lambda d: d != "float32"):  # fp32 first
            print(f"... {model} {dtype}", file=sys.stderr, flush=True)
            ours = bench_ours(model, arch, vocab, dtype, text_ids, args)
            theirs = None
            if hf is not None:  # a copy, so fp32 weights are never rounded through bf16
                hf_d = copy.deepcopy(hf).to(parse_dtype(dtype))
                theirs = bench_hf(hf_d, vocab, text_ids, args)
                del hf_d
                agree[f"{model} {dtype}"] = _agreement(ours["greedy_tokens"],
                                                       theirs["greedy_tokens"], eos_ids)
                if dtype == "float32":
                    hf_fp32_tokens = theirs["greedy_tokens"]
                if hf_fp32_tokens is not None:
                    agree_fp32[f"{model} {dtype}"] = _agreement(ours["greedy_tokens"],
                                                                hf_fp32_tokens, eos_ids)
            rows += rows_for(model, arch, dtype, ours, theirs, roof, args)
        del hf
    print_table(rows, roof)
    if agree:
        print(f"greedy tokens after {AGREEMENT_PROMPT!r} equal to transformers' (fraction): "
              + ", ".join(f"{k}: {v:.2f}" for k, v in agree.items()))
        print("... equal to transformers' fp32 tokens (fraction): "
              + ", ".join(f"{k}: {v:.2f}" for k, v in agree_fp32.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "threads": args.threads, "torch": torch.__version__,
                "args": {k: str(v) for k, v in vars(args).items()}}
        args.out.write_text(json.dumps({"meta": meta, "roofline": roof, "rows": rows,
                                        "greedy_agreement": agree,
                                        "greedy_agreement_vs_hf_fp32": agree_fp32}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`muxserve generate`: one completion from one model, printed to stdout (logs go to stderr)."""

from __future__ import annotations

import argparse
import logging
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "generate", help="generate a completion for one prompt",
        description="Load one model and print the completion of --prompt to stdout.")
    p.add_argument("--model", required=True,
                   help="smollm2-135m, gemma3-270m, a .gguf file, a Hugging Face folder, "
                        "or random:<preset>")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user message in the model's chat template")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating after EOS")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    p.add_argument("--cache-dir", default=None, help="where converted weights are cached")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from muxserve.types import SamplingParams

    # Validate the cheap things before paying for torch and the model load.
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                            stop=tuple(args.stop), ignore_eos=args.ignore_eos)
    from muxserve.engine.llm import DTYPES, MultiModelLLM
    from muxserve.engine.request import GenerationRequest

    if args.dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {args.dtype!r}; valid: {', '.join(DTYPES)}")
    llm = MultiModelLLM([args.model], dtype=args.dtype, cache_dir=args.cache_dir)
    [out] = llm.generate([GenerationRequest(args.model, args.prompt, params, chat=args.chat)])
    sys.stdout.write(out.text + "\n")
    logging.getLogger(__name__).info("%d tokens, finish_reason=%s, %.2f s", len(out.token_ids),
                                     out.finish_reason, out.latency_s)
    return 0


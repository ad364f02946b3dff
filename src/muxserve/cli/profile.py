"""`muxserve profile`: measure this machine's prefill/decode latencies into a profile table.

    muxserve profile -o cpu_profile.json                       # both built-in models, full grid
    muxserve profile --models smollm2-135m --quick -o p.json   # a small grid, 2 reps

The table has the A100 profile's shape (model -> 1 -> share% -> batch -> seq_len ->
{prefill, decoding} ms), so `ProfileCostModel` / `muxserve simulate --cost-model profile` read
it. A share is a percentage of this process's usable cores (on 2 cores: 50 = one core, 100 =
both); each (model, share) is measured in its own subprocess pinned to those cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("profile", help="measure prefill/decode latencies into a profile table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2-135m,gemma3-270m",
                   help="comma list of model sources (built-in names, .gguf, random:...)")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    p.add_argument("--batches", help="comma list (default 1,2,4,8,16,32; --quick 1,4,16)")
    p.add_argument("--seq-lens", help="comma list (default 32,64,128,256,512; --quick 32,128,512)")
    p.add_argument("--shares", default="50,100", help="comma list of core shares in percent")
    p.add_argument("--reps", type=int, help="timed repetitions per point (default 3; --quick 2)")
    p.add_argument("--max-prefill-tokens", type=int, default=1024,
                   help="skip prefill points above this many tokens (-1 in the table)")
    p.add_argument("--quick", action="store_true", help="a small grid and 2 repetitions")
    p.add_argument("--pack-weights", action="store_true",
                   help="time packed bf16 weights (as runtime workers with pack_weights run)")
    p.add_argument("-o", "--output", required=True, help="profile JSON path")
    p.set_defaults(func=run)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"bad {flag} {text!r}: expected a comma list of integers") from None
    if not values or min(values) < 1:
        raise ValueError(f"bad {flag} {text!r}: values must be positive integers")
    return values


def build_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from muxserve.engine import profiler as pr

    batches = pr.QUICK_BATCHES if args.quick else pr.DEFAULT_BATCHES
    seq_lens = pr.QUICK_SEQ_LENS if args.quick else pr.DEFAULT_SEQ_LENS
    return pr.ProfileSpec(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        dtype=args.dtype,
        batches=_ints(args.batches, "--batches") if args.batches else batches,
        seq_lens=_ints(args.seq_lens, "--seq-lens") if args.seq_lens else seq_lens,
        shares_pct=_ints(args.shares, "--shares"),
        reps=args.reps or (2 if args.quick else 3),
        max_prefill_tokens=args.max_prefill_tokens, pack_weights=args.pack_weights)


def run(args: argparse.Namespace) -> int:
    from muxserve.costmodel import save_profile
    from muxserve.engine import profiler as pr

    spec = build_spec(args)
    cores = pr.usable_cores()
    meta = pr.machine_meta(spec, cores)
    meta["command"] = "muxserve profile " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else [])
    meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()

    def done(model: str, share: int, seconds: float) -> None:
        print(f"profiled {model} at {share}% ({len(pr.share_cores(share, cores))} cores) in "
              f"{seconds:.1f} s", file=sys.stderr)

    entries = pr.run_profile(spec, cores, on_done=done)
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    save_profile(args.output, entries, meta=meta)
    print(f"wrote {len(entries)} points to {args.output} ({meta['wall_s']} s)", file=sys.stderr)
    _print_summary(entries)
    return 0


def _print_summary(entries) -> None:  # type: ignore[no-untyped-def]
    """Batch-1 and largest-batch latencies at each share, per model (a quick sanity view)."""
    for e in entries:
        if e.seq_len == 128 or (e.batch == 1 and e.seq_len == 32):
            pre = "-" if e.prefill_ms < 0 else f"{e.prefill_ms:.1f}"
            print(f"{e.model:>14} share {e.sm_pct:>3}% batch {e.batch:>3} seq {e.seq_len:>4}: "
                  f"prefill {pre:>8} ms  decode {e.decode_ms:.1f} ms")

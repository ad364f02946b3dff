"""job_summary: where a compare run's compute went, from the unit's job records."""

from __future__ import annotations

from muxserve.engine.compare import job_summary
from muxserve.engine.runtime.messages import JobRecord


def job(phase: str, batch: int, cores: tuple[int, ...], start_s: float, end_s: float,
        compute_s: float) -> JobRecord:
    return JobRecord("m", phase, batch, batch * (8 if phase == "prefill" else 1), 0, 0.5,
                     cores, start_s, end_s, compute_s)


def test_busy_fractions_batches_and_overlap() -> None:
    jobs = [job("prefill", 2, (0,), 10.0, 11.0, 0.9),
            job("decode", 4, (1,), 10.0, 14.0, 3.5),
            job("decode", 2, (0, 1), 14.0, 15.0, 0.8)]   # a two-core job counts on both
    s = job_summary(jobs)
    assert s["span_s"] == 5.0
    assert s["core_busy_frac"] == {"0": 0.4, "1": 1.0}
    assert s["mean_running_jobs"] == 1.2                     # (1 + 4 + 1) s of jobs over 5 s
    assert s["phases"]["decode"] == {"jobs": 2, "seqs": 6, "tokens": 6, "compute_s": 4.3,
                                     "mean_batch": 3.0}
    assert s["phases"]["prefill"]["tokens"] == 16


def test_no_jobs_gives_an_empty_summary() -> None:
    assert job_summary([]) == {}

"""Preemption and time limits on SLURM: checkpoint at a step boundary, then requeue.

SLURM warns a job with USR2 (``sbatch --signal=USR2@<signal_delay_s>`` before the time limit, which
submitit adds; or ``scancel --signal=USR2 <job>``). submitit's own USR2 handler runs *inside*
whatever Python line the job is executing, checkpoints the submitted callable (for Hydra's
launcher: the same job with the same overrides), calls ``scontrol requeue <job>`` and exits; it
never runs our code. So the training loop replaces it with a handler that only sets a flag, saves
its checkpoint at the next step boundary, and then hands over to submitit's handler::

    preemption = Preemption()                  # inside the job, after submitit set its handlers
    for step in ...:
        ...one update...
        if preemption.requested():            # all ranks agree when torch.distributed runs
            save_checkpoint()                 # rank 0
            preemption.stop()                 # requeue (USR2) or exit (SIGTERM); never returns

The requeued job re-runs the same Hydra job into the same run folder and resumes from it.
SIGTERM (SLURM's preemption/cancel notice, ignored by submitit) saves and exits without requeue:
a preempting SLURM requeues the job itself, a cancelled one stays cancelled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

REQUEUE_SIGNAL = signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]


class Preemption:
    """Turns ``REQUEUE_SIGNAL`` (USR2) and SIGTERM into a flag that the loop polls between steps."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._at_once = False
        self._previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {sig: signal.signal(sig, self._note) for sig in (REQUEUE_SIGNAL, signal.SIGTERM)}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received != REQUEUE_SIGNAL:  # a requeue request outranks a plain stop
            self.received = sig
        if self._at_once:
            print(f"[radam_repro] received {sig.name}: stopping the final evaluation", flush=True)
            self.stop()
        print(f"[radam_repro] received {sig.name}: checkpointing at the next step boundary", flush=True)

    @contextmanager
    def immediate(self) -> Iterator[None]:
        """Inside, a signal calls :meth:`stop` at once: for work without step boundaries that a rerun repeats
        (the final evaluation, after the last checkpoint is saved)."""
        if self.received is not None:
            self.stop()
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    def requested(self) -> bool:
        """True when a signal arrived here or, under torch.distributed, on any rank (an all-reduce)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        import torch

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        codes = [None, signal.SIGTERM, REQUEUE_SIGNAL]  # the most urgent request wins
        flag = torch.tensor([codes.index(self.received)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.received = codes[int(flag.item())]
        return self.received is not None

    def stop(self) -> None:
        """After the checkpoint is saved: requeue this SLURM job (USR2) or exit (SIGTERM). Never returns.

        In a submitit task, submitit's USR2 handler does the requeue, so that its bookkeeping stays
        right (the resubmitted pickle, the ``max_num_timeout`` countdown); it acts on SLURM rank 0
        and returns on the others. In a plain ``sbatch`` job, rank 0 runs ``scontrol requeue``.
        A process that submitit started without giving it the handler (e.g. a spawned DDP worker)
        only exits. The exit is a ``SystemExit``: let it propagate.
        """
        if self.received == REQUEUE_SIGNAL:
            handler = self._previous.get(REQUEUE_SIGNAL)
            if callable(handler):
                handler(REQUEUE_SIGNAL, None)
            elif "SLURM_JOB_ID" in os.environ and "SUBMITIT_EXECUTOR" not in os.environ and _is_rank_zero():
                subprocess.run(["scontrol", "requeue", slurm_job_id()], check=True, timeout=60)
        name = self.received.name if self.received else "a stop request"
        sys.exit(f"[radam_repro] stopped after {name}; the checkpoint is saved, rerun (or requeue) to resume")

    def restore(self) -> None:
        """Put the previous handlers back (e.g. when the loop ends without a signal)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("SLURM_PROCID", "0")) == 0


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` needs: ``<array job>_<task>`` for an array element, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ["SLURM_JOB_ID"]

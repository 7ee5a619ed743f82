"""Training jobs that run off the script thread, in a registry shared by all sessions.

A job is keyed by its configuration (data, training, store folder): a second request for
the same checkpoint attaches to the running job instead of training twice. The thread only
writes into its Job (under a lock); pages read snapshots and never block on it.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from rotviz.config import DataConfig, TrainConfig, stable_hash
from rotviz.errors import RotvizError
from rotviz.nets.store import CheckpointStore
from rotviz.training.loop import StepProgress
from rotviz.training.pipeline import TrainOutcome, train_or_load

MAX_POINTS = 2000  # step records kept for the live chart (older ones are thinned)


@dataclass
class Job:
    """One training run in a background thread; read it through snapshot()."""

    key: str
    data: DataConfig
    train: TrainConfig
    store_root: Path
    started: float = field(default_factory=time.time)
    status: str = "starting"  # starting, running, done, failed
    steps: list[dict[str, float]] = field(default_factory=list)
    last: StepProgress | None = None
    log: list[str] = field(default_factory=list)
    outcome: TrainOutcome | None = None
    error: str | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_step(self, p: StepProgress) -> None:
        with self.lock:
            self.status = "running"
            self.last = p
            self.steps.append(
                {
                    "step": p.epoch * p.steps + p.step,
                    "epoch": p.epoch + p.step / p.steps,
                    "loss": p.loss,
                    "accuracy": p.accuracy,
                }
            )
            if len(self.steps) > MAX_POINTS:
                self.steps = self.steps[::2]

    def add_log(self, line: str) -> None:
        with self.lock:
            self.log.append(line)

    def run(self) -> None:
        try:
            outcome = train_or_load(
                self.data,
                self.train,
                CheckpointStore(self.store_root),
                "auto",
                on_step=self.on_step,
                log=self.add_log,
            )
        except RotvizError as err:
            with self.lock:
                self.status, self.error = "failed", str(err)
        except Exception as err:  # reported on the page as one line; details in the log
            traceback.print_exc()
            with self.lock:
                self.status, self.error = "failed", f"{type(err).__name__}: {err}"
        else:
            with self.lock:
                self.status, self.outcome = "done", outcome

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the job's state for drawing."""
        with self.lock:
            return {
                "status": self.status,
                "steps": list(self.steps),
                "last": self.last,
                "log": list(self.log),
                "outcome": self.outcome,
                "error": self.error,
                "elapsed": time.time() - self.started,
            }

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class JobRegistry:
    """All training jobs of this server process, by key."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, data: DataConfig, train: TrainConfig, store_root: Path) -> Job:
        """Start (or attach to the running) job for this configuration."""
        key = job_key(data, train, store_root)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.finished:
                return job
            job = Job(key, data, train, Path(store_root))
            job.thread = threading.Thread(target=job.run, name=f"rotviz-train-{key}", daemon=True)
            self._jobs[key] = job
        job.thread.start()
        return job

    def get_running(self, data: DataConfig, train: TrainConfig, store_root: Path) -> Job | None:
        """The unfinished job for this configuration, or None."""
        job = self.get(job_key(data, train, store_root))
        return job if job is not None and not job.finished else None

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def wait_all(self, timeout: float | None = None) -> bool:
        """Join every job's thread (tests, shutdown); True when all finished."""
        for job in self.jobs():
            if job.thread is not None:
                job.thread.join(timeout)
        return all(j.finished for j in self.jobs())


def job_key(data: DataConfig, train: TrainConfig, store_root: Path) -> str:
    """The registry key: everything that decides which checkpoint a job produces."""
    return stable_hash(data, train, str(Path(store_root).resolve()))


@st.cache_resource
def registry() -> JobRegistry:
    """The process-wide job registry (one per server, shared by sessions and pages)."""
    return JobRegistry()

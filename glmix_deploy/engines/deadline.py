"""Every run of a CPU runtime has a time budget: a graph from a file must not hang the toolchain.

The budget is generous and grows with the input: BASE_S plus S_PER_INPUT_ELEMENT per input element.
A GLNet's work is linear in its input (convs on the pixel grid, attention among a fixed number of
slots): glnet_16g, the largest release, costs about 1.1e5 FLOPs per input element, so the budget
assumes a CPU doing 1 GFLOP/s, 50-100x slower than the 2-core machine of the README's numbers
(glnet_4g at 224x224: 60 s + 15 s budget for a 60 ms run). A run past its budget is stopped
(onnxruntime: RunOptions.terminate; OpenVINO: InferRequest.cancel) and reported as the file's
fault: RunTimeout, exit 2, 'did not finish in N s'.

The watchdog is one polling thread per engine, started on its first run: arming and disarming a
run only sets two attributes, so it adds nothing measurable to a timed inference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from glmix_deploy.errors import UserInputError

BASE_S = 60.0
S_PER_INPUT_ELEMENT = 1e-4


class RunTimeout(UserInputError):
    """A run of an artifact went past its time budget and was stopped."""


def run_budget_s(feeds: Mapping[str, np.ndarray]) -> float:
    """Seconds one run on `feeds` may take (see the module docstring)."""
    return BASE_S + S_PER_INPUT_ELEMENT * sum(int(np.asarray(v).size) for v in feeds.values())


class Watchdog:
    """Calls `on_expire` of the armed run once its deadline passes. Checked every `poll_s`."""

    def __init__(self, poll_s: float = 1.0):
        self.poll_s = poll_s
        self._run = 0  # which run is armed; a stale expiry never marks a later run
        self._armed: tuple[int, float, Callable[[], None]] | None = None
        self._expired_run = -1
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, on_expire: Callable[[], None]) -> int:
        """Starts the clock of a run; returns its number for `disarm`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="glmix-run-watchdog", daemon=True)
            self._thread.start()
        self._run += 1
        self._armed = (self._run, time.monotonic() + seconds, on_expire)
        return self._run

    def disarm(self, run: int) -> bool:
        """Ends run `run`; True if its deadline passed (and its `on_expire` was called)."""
        self._armed = None
        return self._expired_run == run

    def close(self) -> None:
        self._closed, self._armed = True, None

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(self.poll_s)
            armed = self._armed
            if armed is not None and time.monotonic() >= armed[1]:
                self._expired_run = armed[0]
                if self._armed is armed:
                    self._armed = None
                armed[2]()


def timeout_error(where: object, seconds: float) -> RunTimeout:
    return RunTimeout(f"{where} did not finish in {seconds:.3g} s (the time budget of a run on this input; "
                      "a GLNet export takes a small fraction of it)")

"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: extra OpenMP threads only add contention (up to ~60x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def watchdog(request):
    """Fails a test that runs longer than the module's WATCHDOG_S seconds (a hang) instead of blocking."""
    import signal

    seconds = getattr(request.module, "WATCHDOG_S", 60)

    def on_alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {seconds} s: a hang or deadlock")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)

"""Where the study commands run their simulations in parallel: a local process pool or Ray.

``run_local`` and ``run_ray`` run ``fn(task)`` for every task (a tuple whose first item names
it) and yield the results as they finish; a task that raises or whose worker dies is appended
to ``failures`` by name and the others go on. Sweeps and plans both use them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sim.errors import ConfigError


def _driver_alive(driver_pid: int) -> bool:
    """Whether ``driver_pid`` still runs: a process killed but not yet reaped by its own parent
    (a zombie, state Z) answers ``kill(pid, 0)`` but runs no more."""
    try:
        os.kill(driver_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive (the pid reused by another user's process: unlikely)
        return True
    try:
        with open(f"/proc/{driver_pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:  # no /proc (not Linux): kill(pid, 0) is all there is
        return True


def _exit_with(driver_pid: int) -> None:
    """Worker initializer: exit once the driver is gone. A pool worker holds its own queue's
    pipe open, so after a ``kill -9`` of the driver it would otherwise wait on it forever; a
    driver killed but not yet reaped by its parent counts as gone."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not _driver_alive(driver_pid):
                os._exit(1)

    threading.Thread(target=watch, name="servesim-driver-watch", daemon=True).start()


def usable_cpus() -> int:
    if hasattr(os, "process_cpu_count"):  # 3.13+: honours affinity and -X cpu_count
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


Failure = tuple[str, BaseException]


def run_local(tasks: list[tuple], workers: int | None, failures: list[Failure], fn: Callable) -> Iterator[dict]:
    """Run ``fn(task)`` for every task on a local process pool; yield results as they finish.
    A task is a tuple whose first item names it (failures are reported by that name)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Not fork: the driver may run threads (a progress bar, Ray), and forking them is unsafe.
    # A forkserver imports servesim once and forks each worker from it (spawn where there is none).
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["sim.run", fn.__module__])
    size = max(1, min(workers or usable_cpus(), len(tasks)))
    pool = ProcessPoolExecutor(max_workers=size, mp_context=ctx, initializer=_exit_with, initargs=(os.getpid(),))
    complete = False
    try:
        futures = {pool.submit(fn, task): task[0] for task in tasks}
        for fut in as_completed(futures):
            try:
                record = fut.result()
            except Exception as exc:  # a worker died or raised: the other points go on
                failures.append((futures[fut], exc))
                continue
            yield record
        complete = True
    finally:
        # Interrupted (Ctrl-C, or the driver raised): drop queued points, do not wait for running ones.
        pool.shutdown(wait=complete, cancel_futures=True)


def run_ray(
    tasks: list[tuple], workers: int | None, address: str | None, failures: list[Failure], fn: Callable
) -> Iterator[dict]:
    """As ``run_local``, on Ray: one task per item, at most ``workers`` in flight."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray backend needs ray: pip install 'servesim[sweep]'") from None
    import logging

    started = False
    if not ray.is_initialized():
        if address is not None:
            _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {first}") from None
        started = True
    remote = ray.remote(num_cpus=1)(fn)
    queue = list(tasks)
    queue.reverse()  # pop() from the end runs them in grid order
    limit = workers or len(tasks)
    in_flight: dict[Any, str] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                task = queue.pop()
                in_flight[remote.remote(task)] = task[0]
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                point = in_flight.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the task raised, or its worker died (after Ray's retries)
                    failures.append((point, exc))
                    continue
                yield record
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT that does not answer (Ray itself retries for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or something for Ray to interpret
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: cannot connect: {exc.strerror or exc}") from None

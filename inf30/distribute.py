"""One way to run a function over many work units: inline, in local worker processes, or as Ray tasks.

As img2dataset's distributors: a :class:`Distributor` is a callable, ``dist(fn, units)``, that yields one
:class:`Outcome` per unit (its value, or its recorded failure), with a progress bar, bounded retries of the
units that raised, and a clean Ctrl-C. ``fn`` and the units must be picklable (``fn`` a module-level
function). Backends:

- ``local`` (default): processes from a fork server (one start method: workers never inherit a long-lived
  caller's threads, which can deadlock a plain fork); inline in this process when ``workers == 1`` or there
  are fewer than ``inline_below`` units;
- ``ray``: Ray tasks on the cluster at ``ray_address`` (``ray.init(address=...)``), or on a local Ray
  started for the call. Ray is an optional extra: ``pip install 'infmae-toolkit[ray]'``.

A unit that raises is retried alone, at most ``retries`` more times, then reported (``Outcome.error``) and
the run goes on; exceptions of the ``fatal`` types stop the run at once (e.g. a full output disk). A worker
process that dies (killed, out of memory) breaks the pool: every unit in flight loses one attempt and a
new pool runs the rest. On Ctrl-C the workers,
which ignore SIGINT, print nothing; the parent terminates them and ``KeyboardInterrupt`` is raised once.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from .errors import UserError, check

BACKENDS = ("local", "ray")
RAY_HINT = "pip install 'infmae-toolkit[ray]'"

# a batch as submitted: [(unit index, unit, attempts so far)]; as returned: [(ok, value or one-line error)]
Batch = list[tuple[int, Any, int]]
BatchResult = list[tuple[bool, Any]]


@dataclass(frozen=True)
class Outcome:
    """What became of unit ``index`` (its position in the input): ``value = fn(unit)``, or ``error``
    (``"ExceptionType: message"`` of the last attempt) after ``attempts`` tries."""

    index: int
    value: Any = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(exc: BaseException) -> str:
    """``"ExceptionType: first line of the message"``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def run_batch(fn: Callable[[Any], Any], units: list[Any], fatal: tuple[type[BaseException], ...]) -> BatchResult:
    """Worker side: ``fn`` over ``units``; a unit that raises becomes ``(False, one-line error)``, except
    the ``fatal`` types, which propagate."""
    out: BatchResult = []
    for unit in units:
        try:
            out.append((True, fn(unit)))
        except fatal:
            raise
        except Exception as exc:  # recorded, the caller decides (retry or report)
            out.append((False, one_line(exc)))
    return out


def worker_init(parent_pid: int) -> None:
    """Local worker initializer: Ctrl-C is the parent's to handle (it terminates the workers), and a worker
    whose parent died without that (SIGKILL, a crash) exits instead of waiting forever for work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - the pid was reused by another user's process
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def pool_context(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """The one start method of local workers: a fork server that imported ``preload`` (module names) once."""
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - not on Linux
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["inf30.distribute", *preload])
    return ctx


# ----------------------------------------------------------------------------------------------- backends
# A backend runs batches: submit(token, fn, units); next_done() -> (token, results or the exception that
# lost the whole batch); close(abort) stops it (abort: now, without waiting for running units).
class _Inline:
    """Runs each batch at submit time, in this process."""

    def __init__(self, fatal: tuple[type[BaseException], ...]) -> None:
        self.fatal = fatal
        self.done: collections.deque[tuple[int, BatchResult]] = collections.deque()

    def submit(self, token: int, fn: Callable[[Any], Any], units: list[Any]) -> None:
        self.done.append((token, run_batch(fn, units, self.fatal)))

    def next_done(self) -> tuple[int, BatchResult | BaseException]:
        return self.done.popleft()

    def close(self, abort: bool) -> None:
        self.done.clear()


class _LocalPool:
    """A process pool from :func:`pool_context`; a pool broken by a dead worker is replaced on next submit.
    The batches the broken pool still held are returned by :meth:`next_done` (each failed with
    ``BrokenProcessPool``) and do not break the new pool."""

    def __init__(self, fatal: tuple[type[BaseException], ...], workers: int, preload: Sequence[str]) -> None:
        self.fatal, self.workers, self.preload = fatal, workers, preload
        self.ex: cf.ProcessPoolExecutor | None = None
        self.futures: dict[cf.Future, tuple[int, int]] = {}  # -> (token, generation of the pool that runs it)
        self.generation = 0
        self.broken = False

    def submit(self, token: int, fn: Callable[[Any], Any], units: list[Any]) -> None:
        if self.ex is None or self.broken:
            self._stop(abort=True)  # the broken pool's futures stay, all done, for next_done
            self.broken = False
            self.generation += 1
            ctx = pool_context(self.preload)
            self.ex = cf.ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=worker_init, initargs=(os.getpid(),)
            )
        self.futures[self.ex.submit(run_batch, fn, units, self.fatal)] = (token, self.generation)

    def next_done(self) -> tuple[int, BatchResult | BaseException]:
        done, _ = cf.wait(self.futures, return_when=cf.FIRST_COMPLETED)
        fut = min(done, key=lambda f: self.futures[f][0])  # deterministic among simultaneous ones
        token, generation = self.futures.pop(fut)
        exc = fut.exception()
        self.broken |= isinstance(exc, cf.process.BrokenProcessPool) and generation == self.generation
        return token, (exc if exc is not None else fut.result())

    def close(self, abort: bool) -> None:
        self.futures.clear()
        self._stop(abort)

    def _stop(self, abort: bool) -> None:
        ex, self.ex = self.ex, None
        if ex is None:
            return
        if abort:  # Ctrl-C or an error: stop the workers now, not after their current unit
            if hasattr(ex, "terminate_workers"):  # Python >= 3.14
                ex.terminate_workers()
            else:
                for proc in list((getattr(ex, "_processes", None) or {}).values()):
                    proc.terminate()
        ex.shutdown(wait=True, cancel_futures=True)


class _RayPool:
    """Each batch is one Ray task (1 CPU, no Ray-level retries: failures are counted here)."""

    def __init__(self, fatal: tuple[type[BaseException], ...], address: str | None, workers: int) -> None:
        ray = import_ray()
        self.ray, self.fatal = ray, fatal
        self.started = not ray.is_initialized()
        if self.started:
            # Ray's own INFO lines ("Connecting to existing Ray cluster ...") are not ours to print: a command's
            # output stays its own (a one-line error stays one line); Ray's warnings and errors still show
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "logging_level": logging.WARNING}
            if address is None and workers:
                kwargs["num_cpus"] = workers
            ray.init(**kwargs)
        self.task = ray.remote(num_cpus=1, max_retries=0)(run_batch)
        self.refs: dict[Any, int] = {}
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def submit(self, token: int, fn: Callable[[Any], Any], units: list[Any]) -> None:
        self.refs[self.task.remote(fn, units, self.fatal)] = token

    def next_done(self) -> tuple[int, BatchResult | BaseException]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        token = self.refs.pop(ready[0])
        try:
            result = self.ray.get(ready[0])
        except Exception as exc:  # a fatal type comes back as an instance of it (Ray's RayTaskError)
            return token, exc
        # numpy arrays in a result are views of Ray's shared object store, valid only while Ray holds the
        # object (not after this call's ray.shutdown, nor once the ref is gone): copy them into this process
        return token, pickle.loads(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))

    def close(self, abort: bool) -> None:
        if abort:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"the Ray backend needs Ray: {RAY_HINT}") from None
    return ray


def check_distributor(backend: str, ray_address: str | None) -> None:
    """The commands' ``--distributor`` / ``--ray-address``: a :class:`UsageError` for an unknown backend
    or an address without ``ray``, the one-line install hint when ``ray`` is asked for and Ray is not
    installed; called by the options' ``validate()``, before any work."""
    check(backend in BACKENDS, f"--distributor must be one of {', '.join(BACKENDS)}, got {backend!r}")
    check(ray_address is None or backend == "ray", "--ray-address needs --distributor ray")
    check(ray_address is None or bool(str(ray_address).strip()), "--ray-address must not be empty")
    if backend == "ray":
        import_ray()


# ------------------------------------------------------------------------------------------- distributor
@dataclass
class Distributor:
    """Runs ``fn`` over work units; see the module docstring.

    backend: ``local`` | ``ray``. workers: processes (local) or concurrent tasks (ray); 0 = all cores / all
    the cluster's CPUs; 1 = inline (local). retries: extra attempts of a unit that raised. ordered: yield in
    input order (else as completed). chunksize: units per submitted task. inline_below: run inline when
    there are fewer units. progress, desc, unit: the progress bar. ray_address: the cluster (None = a local
    Ray, started and stopped by the call). preload: modules the local fork server imports once. fatal:
    exception types that stop the run instead of being retried and reported.

    Each call starts its workers and stops them at its end; inside ``with dist:`` the calls share one pool
    (one Ray connection), stopped when the block ends: for stages that submit work in rounds.
    """

    backend: str = "local"
    workers: int = 0
    retries: int = 1
    ordered: bool = False
    chunksize: int = 1
    inline_below: int = 2
    progress: bool = True
    desc: str = "work"
    unit: str = "unit"
    ray_address: str | None = None
    preload: tuple[str, ...] = ()
    fatal: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check(self.backend in BACKENDS, f"unknown distributor {self.backend!r}; expected one of {BACKENDS}")
        check(self.workers >= 0, f"workers must be >= 0 (0 = all cores), got {self.workers}")
        check(self.retries >= 0, f"retries must be >= 0, got {self.retries}")
        check(self.chunksize >= 1, f"chunksize must be >= 1, got {self.chunksize}")
        check(self.ray_address is None or self.backend == "ray", "ray_address needs the ray backend")
        if self.backend == "ray":
            import_ray()  # a missing extra is a usage error, found before any work
        self._session: dict[str, tuple[Any, int]] | None = None  # the pools kept open by `with`

    def __enter__(self) -> Distributor:
        self._session = {}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        session, self._session = self._session or {}, None
        for pool, _width in session.values():
            pool.close(abort=exc_type is not None)

    def _backend(self, n_batches: int, n_units: int) -> tuple[Any, int, bool]:
        """(backend, how many batches it runs at once, whether this call owns it)."""
        n_local = self.workers or os.cpu_count() or 1
        if self.backend == "local" and (n_local <= 1 or min(n_batches, n_local) <= 1
                                        or n_units < self.inline_below):  # fmt: skip
            return _Inline(self.fatal), 1, True
        if self._session is not None and self.backend in self._session:
            return (*self._session[self.backend], False)
        if self.backend == "ray":
            ray_pool = _RayPool(self.fatal, self.ray_address, self.workers)
            made: tuple[Any, int] = (ray_pool, ray_pool.workers)
        else:  # a pool kept for the session has every worker; one for this call only, no more than it needs
            n = n_local if self._session is not None else min(n_local, n_batches)
            made = (_LocalPool(self.fatal, n, self.preload), n)
        if self._session is not None:
            self._session[self.backend] = made
            return (*made, False)
        return (*made, True)

    def __call__(
        self,
        fn: Callable[[Any], Any],
        units: Iterable[Any],
        *,
        weight: Callable[[Any], int] | None = None,
        bar: tqdm | None = None,
    ) -> Iterator[Outcome]:
        """Yield one :class:`Outcome` per unit. ``weight(unit)``: its share of the progress bar (default 1);
        ``bar``: a bar of the caller's to advance instead of a new one (it is not closed)."""
        units = list(units)
        size = weight or (lambda _u: 1)
        own_bar = bar is None
        if bar is None:
            total = sum(size(u) for u in units)
            bar = tqdm(total=total, desc=self.desc, unit=self.unit, disable=not self.progress, dynamic_ncols=True)
        todo: collections.deque[Batch] = collections.deque(
            [(i, units[i], 0) for i in range(s, min(s + self.chunksize, len(units)))]
            for s in range(0, len(units), self.chunksize)
        )
        pool, width, owned = self._backend(len(todo), len(units)) if units else (None, 0, True)
        in_flight: dict[int, Batch] = {}
        finished: dict[int, Outcome] = {}
        next_index, token = 0, 0
        clean = False
        try:
            while todo or in_flight:
                while todo and len(in_flight) < 2 * width:  # a bounded window: units may be large
                    batch = todo.popleft()
                    in_flight[token] = batch
                    pool.submit(token, fn, [u for _, u, _ in batch])
                    token += 1
                tok, res = pool.next_done()
                batch = in_flight.pop(tok)
                if isinstance(res, BaseException):
                    if isinstance(res, self.fatal) or isinstance(res, KeyboardInterrupt):
                        raise res
                    res = [(False, f"worker failed: {one_line(res)}")] * len(batch)
                for (i, unit, tries), (ok, value) in zip(batch, res, strict=True):
                    tries += 1
                    if not ok and tries <= self.retries:
                        todo.append([(i, unit, tries)])  # retried alone
                        continue
                    finished[i] = Outcome(i, value, None, tries) if ok else Outcome(i, None, value, tries)
                    bar.update(size(unit))
                if self.ordered:
                    while next_index in finished:
                        yield finished.pop(next_index)
                        next_index += 1
                else:
                    for i in sorted(finished):
                        yield finished.pop(i)
            clean = True
        finally:
            if pool is not None and (owned or not clean):
                pool.close(abort=not clean)
                if not owned and self._session is not None:  # an aborted shared pool is not reused
                    self._session.pop(self.backend, None)
            if own_bar:
                bar.close()

    def map(self, fn: Callable[[Any], Any], units: Iterable[Any], **kwargs: Any) -> list[Outcome]:
        """Every outcome, in input order."""
        return sorted(self(fn, units, **kwargs), key=lambda o: o.index)


__all__ = ["BACKENDS", "Distributor", "Outcome", "check_distributor", "import_ray", "one_line", "pool_context", "run_batch"]

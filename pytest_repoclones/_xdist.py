"""What crosses between the xdist controller and its workers, by xdist's own channels only.

Workers may run elsewhere (``--tx ssh=…``, ``--tx socket=…``, a container): nothing here
assumes the controller's filesystem, temporary directory or cache is visible to them.

- ``workerinput`` (controller to worker, at start): the run's session id; an execnet channel
  the controller opened on the worker's gateway; facts about the controller: its cache's
  identity and whether the worker is its own child.
- ``workeroutput`` (worker to controller, at the end): the worker's counters for the summary.
- The channel, during the run. Worker to controller: what its tests declare, once collected
  (xdist carries collected node ids only); its counters after each test report that changed
  them (a worker that crashes sends no ``workeroutput``; the summary then counts it up to its
  last report); commits its own prefetch could not get (a remote worker's stderr is not the
  user's terminal); remotes that did not answer it. Controller to worker: remotes that did not
  answer someone else on the same network.

Decided by each worker, from what it was handed: whether the controller's cache is its own
(same kernel, same directory: device and inode, see :func:`same_cache`). If it is, the
controller prefetches what the worker declares before scheduling any test, as before; if not
(another machine, another cache directory), the worker warms its own cache before it reports
its collection, which holds back scheduling just the same. A remote's failure to answer is
taken only by processes on the same network (kernel and network namespace): a server one
machine cannot reach may answer another.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import CHANNEL, CONTROLLER, SESSION_ID

# prefetch (and urls behind it) is imported where the controller needs it: a worker whose
# suite never asks for a worktree imports no more than the plugin's hooks.
if TYPE_CHECKING:
    from execnet import Channel

    from . import prefetch
    from ._remote_failures import FailureRecord, RemoteFailures
    from .plugin import StoreSlot

__all__ = [
    "CHANNEL",
    "CONTROLLER",
    "SESSION_ID",
    "STATS_KEY",
    "FailureShare",
    "WorkerLink",
    "XdistHooks",
    "cache_identity",
    "network_place",
    "same_cache",
]

log = logging.getLogger("pytest_repoclones")

#: The key of a worker's counters in its ``workeroutput``.
STATS_KEY = "repoclones_stats"

#: A message on the channel: (kind, payload), plain builtins (execnet copies them by value).
Message = tuple[str, Any]


@functools.cache
def _machine() -> str:
    """This kernel (its boot id: containers on one host share it), else the host name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return socket.gethostname()


def cache_identity(path: Path | None) -> list[object] | None:
    """What tells another process whether its cache directory is this one: the kernel, the
    device and inode of ``path`` or, while it does not exist yet (nothing is made for this),
    of its nearest existing parent, then the names from there down to ``path``.

    A bind mount of the directory into a container keeps device and inode; a path that only
    looks the same, on another machine or on a container's own disk, does not. None if the
    path cannot be looked at.
    """
    if path is None:
        return None
    probe, tail = Path(os.path.abspath(path)), list[str]()
    while True:
        try:
            info = os.stat(probe)
            break
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return None
            tail.insert(0, probe.name)
            probe = probe.parent
        except OSError:
            return None
    return [_machine(), info.st_dev, info.st_ino, *tail]


def same_cache(path: Path | None, identity: object) -> bool:
    """Whether ``path`` is the directory :func:`cache_identity` described, even if it was made
    since: its parent as many levels up as the names that did not exist then is the same
    directory, and those names are the same. (A path through another symlink to a directory
    that did not exist then is taken for another cache: that worker warms it itself, which
    costs lock waits, not a second clone.)"""
    if path is None or not isinstance(identity, (list, tuple)) or len(identity) < 3:
        return False
    machine, device, inode, *tail = identity
    parts = Path(os.path.abspath(path)).parts
    if machine != _machine() or len(parts) <= len(tail):
        return False
    if tail and list(parts[-len(tail) :]) != tail:
        return False
    try:
        info = os.stat(Path(*parts[: len(parts) - len(tail)]))
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


@functools.cache
def network_place() -> str:
    """Processes that reach remotes the same way: one kernel and network namespace (Linux), or
    one host name elsewhere."""
    try:
        return f"{_machine()}/{os.readlink('/proc/self/ns/net')}"
    except OSError:
        return socket.gethostname()


def _send(channel: Channel, message: Message) -> bool:
    """Send ``message``; False if the other side is gone (a crashed worker, a run ending)."""
    try:
        channel.send(message)
    except Exception as exc:  # noqa: BLE001 - it only saves time: never fail a run over it
        log.debug("repoclones: could not send %s on %r: %s", message[0], channel, exc)
        return False
    return True


def _unpack(message: object) -> tuple[str, Any]:
    """(kind, payload) of a message from the other side; ("", None) if it is not one."""
    if isinstance(message, (tuple, list)) and len(message) == 2 and isinstance(message[0], str):
        return message[0], message[1]
    return "", None


class FailureShare:
    """One process's part in the run's memory of remotes that did not answer.

    Each failure travels with the network place of the process that met it, and is taken only
    where the place is the same. Failures told before this process makes its store wait here.
    """

    def __init__(self, publish: Callable[[dict[str, Any]], object]) -> None:
        self.place = network_place()
        self._publish = publish
        self._mutex = threading.Lock()
        self._failures: RemoteFailures | None = None
        self._pending: list[tuple[str, object]] = []

    def attach(self, failures: RemoteFailures) -> None:
        """Connect the store's failures: learn what was told so far, publish what it records."""
        failures.on_record = self._recorded
        with self._mutex:
            self._failures = failures
            pending, self._pending = self._pending, []
        for key, record in pending:
            failures.learn(key, record)

    def told(self, message: Mapping[str, Any]) -> None:
        """A failure another process published (a message :meth:`_recorded` made)."""
        key = message.get("key")
        if message.get("place") != self.place or not isinstance(key, str):
            return
        with self._mutex:
            failures = self._failures
            if failures is None:
                self._pending.append((key, message.get("failure")))
                return
        failures.learn(key, message.get("failure"))

    def _recorded(self, key: str, failure: FailureRecord) -> None:
        self._publish({"key": key, "failure": failure, "place": self.place})


class WorkerLink:
    """A worker's end of its channel to the controller."""

    def __init__(
        self, channel: Channel, controller: Mapping[str, Any], cache_dir: Path | None
    ) -> None:
        self._channel = channel
        # Prefetch threads publish failures while the main thread sends counters: one message
        # at a time on the wire.
        self._sending = threading.Lock()
        self._controller_cache = controller.get("cache")
        self._cache_dir = cache_dir
        self._shares_cache: bool | None = None
        self._counters: list[dict[str, Any]] | None = None
        self.failures = FailureShare(lambda message: self._send(("unanswered", message)))
        channel.setcallback(self._received)

    @property
    def shares_cache(self) -> bool:
        """Whether this worker's cache is the controller's (decided once, at first need)."""
        if self._shares_cache is None:
            self._shares_cache = same_cache(self._cache_dir, self._controller_cache)
        return self._shares_cache

    @property
    def cache_label(self) -> str | None:
        """How the summary names this worker's cache, if it is not the controller's."""
        if self._cache_dir is None or self.shares_cache:
            return None
        return f"{self._cache_dir} on {socket.gethostname()}"

    def declare(self, wanted: prefetch.Wanted, pairs: list[prefetch.KeyPair] | None) -> bool:
        """Tell the controller what this worker's tests declare (``pairs``: for the cache key
        it prints). True if the controller prefetches ``wanted``, into the cache this worker
        shares with it, before any test is scheduled."""
        delegate = bool(wanted) and self.shares_cache
        if not delegate and pairs is None:
            return False
        payload = {"wanted": wanted if delegate else None, "pairs": pairs}
        return self._send(("declared", payload)) and delegate

    def unfetched(self, failure: prefetch.Unfetched) -> None:
        """Have the controller say it, once for the run: a remote worker's stderr is not the
        user's terminal, and several workers warming their own caches would each say it."""
        self._send(("unfetched", failure._asdict()))

    def counters(self, rows: list[dict[str, Any]]) -> None:
        """The counters so far, if they changed since last sent."""
        if rows != self._counters and self._send(("counters", rows)):
            self._counters = rows

    def _send(self, message: Message) -> bool:
        with self._sending:
            return _send(self._channel, message)

    def _received(self, message: object) -> None:
        # In execnet's receiver thread: an exception would close the channel.
        try:
            kind, payload = _unpack(message)
            if kind == "unanswered" and isinstance(payload, dict):
                self.failures.told(payload)
        except Exception:
            log.exception("repoclones: bad message from the xdist controller")


class XdistHooks:
    """Controller side: hand workers the run's session id and a channel, prefetch what workers
    sharing its cache declare before any test is scheduled, relay remotes that did not answer,
    gather counters (from a crashed worker, the last it sent)."""

    def __init__(
        self,
        session_id: str,
        slot: StoreSlot,
        report: Callable[[str], None] | None = None,
        say_key: Callable[[list[prefetch.KeyPair]], None] | None = None,
    ) -> None:
        self.session_id = session_id
        #: Where prefetch failures are said (the terminal), once per (url, commit).
        self._report = report
        #: Prints the CI cache key (--repo-cache-key), from the first worker's declarations.
        self._say_key = say_key
        #: The controller's store, made only if it has something to prefetch.
        self._slot = slot
        self.worker_stats: list[dict[str, Any]] = []
        #: Workers that ended without their final counters; the summary says so.
        self.crashed: list[str] = []
        self._mutex = threading.Lock()
        #: Every worker's channel: execnet keeps channels only weakly.
        self._channels: dict[str, Channel] = {}
        #: Channels of workers that have their workerinput: messages reach them from now on.
        self._ready: dict[str, Channel] = {}
        #: Filled in execnet's receiver threads, read in xdist's loop (the main thread).
        self._declared: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, list[Any]] = {}
        self._unfetched: list[prefetch.Unfetched] = []
        #: Every no-answer failure seen in the run, by (cache key, network place).
        self._told: dict[tuple[str, str], dict[str, Any]] = {}
        self._said: set[tuple[str, str | None]] = set()
        #: (url, declared item) already prefetched: a commit alone and with its submodules are
        #: two items (only the second warms the submodules' entries).
        self._prefetched: set[tuple[str, prefetch.Want]] = set()
        self._down: set[str] = set()
        self._cache: list[object] | None = None
        self._cache_known = False
        self.failures = FailureShare(lambda message: self._relay(None, message))
        slot.share_failures(self.failures)

    def _cache_identity(self) -> list[object] | None:
        if not self._cache_known:  # taken once, before anything is prefetched
            self._cache_known = True
            self._cache = cache_identity(self._slot.settings.cache_dir)
        return self._cache

    def pytest_configure_node(self, node: Any) -> None:
        worker = node.gateway.id
        spec = node.gateway.spec
        node.workerinput[SESSION_ID] = self.session_id
        node.workerinput[CONTROLLER] = {
            "cache": self._cache_identity(),
            # Only the controller's own children may die with their parent (plugin.py).
            "local": bool(spec.popen and not spec.via),
        }
        try:
            channel = node.gateway.newchannel()
            channel.setcallback(functools.partial(self._received, worker))
        except Exception:  # the worker then does it all itself
            log.exception("repoclones: no channel to xdist worker %s", worker)
            return
        with self._mutex:
            self._channels[worker] = channel
        # execnet sends a channel by its id: the worker gets its end with its workerinput.
        node.workerinput[CHANNEL] = channel

    def pytest_testnodeready(self, node: Any) -> None:
        # A message sent before the worker unpacked its workerinput would be dropped; from now
        # on it gets every failure told, starting with those told so far.
        worker = node.gateway.id
        with self._mutex:
            channel = self._channels.get(worker)
            if channel is None:
                return
            self._ready[worker] = channel
            told = list(self._told.values())
        for message in told:
            _send(channel, ("unanswered", message))

    def _received(self, worker: str, message: object) -> None:
        # In the receiver thread of the worker's gateway: keep, relay, never block or raise.
        try:
            kind, payload = _unpack(message)
            if kind == "declared" and isinstance(payload, dict):
                with self._mutex:
                    self._declared[worker] = payload
            elif kind == "counters" and isinstance(payload, list):
                with self._mutex:
                    self._counters[worker] = payload
            elif kind == "unfetched" and isinstance(payload, dict):
                failure = _as_unfetched(payload)
                if failure is not None:
                    with self._mutex:
                        self._unfetched.append(failure)
            elif kind == "unanswered" and isinstance(payload, dict):
                self.failures.told(payload)
                self._relay(worker, payload)
        except Exception:
            log.exception("repoclones: bad message from xdist worker %s", worker)

    def _relay(self, origin: str | None, message: dict[str, Any]) -> None:
        """Tell every ready worker but ``origin`` of a failure (each takes it if its network
        place is the failure's)."""
        key, place = message.get("key"), message.get("place")
        if not isinstance(key, str) or not isinstance(place, str):
            return
        with self._mutex:
            if (key, place) in self._told:
                return
            self._told[(key, place)] = message
            targets = [channel for worker, channel in self._ready.items() if worker != origin]
        for channel in targets:
            _send(channel, ("unanswered", message))

    def _say(self, failure: prefetch.Unfetched) -> None:
        # From prefetch's threads, and for what workers sent, from the main thread.
        with self._mutex:
            new = (failure.url, failure.commit) not in self._said
            self._said.add((failure.url, failure.commit))
        if new and self._report is not None:
            self._report(failure.line)

    def _say_unfetched(self) -> None:
        """What workers warming their own caches could not get, said in xdist's loop."""
        with self._mutex:
            unfetched, self._unfetched = self._unfetched, []
        for failure in unfetched:
            self._say(failure)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # xdist schedules no test until every worker has reported its collection, and this hook
        # runs in its event loop: blocking here is what keeps workers from starting early. The
        # worker sent its messages before that report: they are here.
        self._say_unfetched()
        with self._mutex:
            declared = self._declared.pop(node.gateway.id, None)
        if declared is None:
            return
        from . import prefetch

        if self._say_key is not None:
            say, self._say_key = self._say_key, None  # every worker collects the same tests
            say(prefetch.parse_key_pairs(declared.get("pairs")))
        if not self._slot.available:
            return
        new: prefetch.Wanted = {}
        for url, wants in prefetch.parse_declared(declared.get("wanted")).items():
            for want in wants:
                if (url, want) not in self._prefetched:
                    self._prefetched.add((url, want))
                    new.setdefault(url, []).append(want)
        if new:
            prefetch.prefetch(self._slot.get(), new, report=self._say)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self._say_unfetched()  # from a worker that died before it reported its collection
        worker = node.gateway.id
        with self._mutex:
            if worker in self._down:
                return  # xdist may call this twice for one worker (an interrupted one)
            self._down.add(worker)
            self._ready.pop(worker, None)
            self._channels.pop(worker, None)
            last = self._counters.pop(worker, None)
        output = getattr(node, "workeroutput", None)
        rows = output.get(STATS_KEY) if isinstance(output, dict) else None
        if not isinstance(rows, list):
            # Crashed: no workeroutput, only the counters it sent after its last report.
            self.crashed.append(worker)
            rows = last or []
        self.worker_stats.extend({**row, "worker": worker} for row in rows if isinstance(row, dict))


def _as_unfetched(payload: Mapping[str, Any]) -> prefetch.Unfetched | None:
    from .prefetch import Unfetched

    url, commit, line = payload.get("url"), payload.get("commit"), payload.get("line")
    if not isinstance(url, str) or not isinstance(line, str):
        return None
    if commit is not None and not isinstance(commit, str):
        return None
    return Unfetched(url, commit, line)

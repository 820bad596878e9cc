"""A snapshot's files against the list it was recorded with, so a corrupt or missing file names itself.

Each snapshot records what it should hold, file by file (path, size, sha256): the models CLI in
``flexyface-manifest.json``, the demo and random-snapshot builders in the ``files`` of their
``flexyface-demo.json`` marker. ``SnapshotVerifier.check`` compares every size (one stat a file) and
every recorded digest. A digest is computed again only when a file's size or mtime changed since it
was last verified: in memory for every file, and for large files also in ``.flexyface-verified.json``
beside the snapshot (when the folder is writable), so a restarted worker does not hash tens of GB
again. A snapshot with no such list has nothing to be checked against and passes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..residency import file_sha256

log = logging.getLogger(__name__)

HUB_MANIFEST_FILE = "flexyface-manifest.json"  # written by the models CLI (libs/hub)
BUILT_MARKER_FILE = "flexyface-demo.json"  # written by demo_snapshots.py and bench/gpu/snapshots.py
VERIFIED_FILE = ".flexyface-verified.json"
#: Digests of files at least this large are kept on disk too (hashing them again is what costs).
PERSIST_FROM_BYTES = 64 * 1024 * 1024


def recorded_files(path: Path) -> dict[str, tuple[int, str | None]] | None:
    """relative path -> (size, sha256 or None) as the snapshot recorded them; None if it recorded none."""
    for name in (HUB_MANIFEST_FILE, BUILT_MARKER_FILE):
        record = path / name
        if not record.exists():
            continue
        try:
            files = json.loads(record.read_text(encoding="utf-8")).get("files")
            if not isinstance(files, list):
                continue
            return {str(f["path"]): (int(f["size"]), str(f["sha256"]) if f.get("sha256") else None) for f in files}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {name: (-1, None)}  # an unreadable record is itself the problem: no file has size -1
    return None


class SnapshotVerifier:
    """Checks snapshots; remembers verified digests by (size, mtime) across calls and, for large files, restarts."""

    def __init__(self) -> None:
        # snapshot folder -> relative path -> (size, mtime_ns, sha256) verified on disk
        self._verified: dict[Path, dict[str, tuple[int, int, str]]] = {}

    def check(self, path: Path) -> str | None:
        """None when every recorded file is there with its size and digest; else what is wrong, naming the file."""
        expected = recorded_files(path)
        if expected is None:
            return None
        verified = self._load_verified(path)
        changed = False
        try:
            for relative, (size, sha256) in sorted(expected.items()):
                if size < 0:
                    return f"{path / relative} is unreadable"
                file = path / relative
                try:
                    stat = file.stat()
                except FileNotFoundError:
                    return f"{file} is missing"
                if stat.st_size != size:
                    return f"{file} is {stat.st_size} bytes; its manifest records {size}"
                if sha256 is None:
                    continue
                known = verified.get(relative)
                if known and known[:2] == (stat.st_size, stat.st_mtime_ns) and known[2] == sha256:
                    continue
                actual = file_sha256(file)
                if actual != sha256:
                    verified.pop(relative, None)
                    return f"{file} fails its sha256 check (recorded {sha256[:12]}…, found {actual[:12]}…)"
                verified[relative] = (stat.st_size, stat.st_mtime_ns, sha256)
                changed = changed or stat.st_size >= PERSIST_FROM_BYTES
        finally:
            if changed:
                self._save_verified(path, verified)
        return None

    def _load_verified(self, path: Path) -> dict[str, tuple[int, int, str]]:
        if path not in self._verified:
            entries: dict[str, tuple[int, int, str]] = {}
            try:
                raw = json.loads((path / VERIFIED_FILE).read_text(encoding="utf-8"))
                entries = {str(k): (int(v[0]), int(v[1]), str(v[2])) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                pass  # none yet, or unreadable: verified afresh
            self._verified[path] = entries
        return self._verified[path]

    @staticmethod
    def _save_verified(path: Path, verified: dict[str, tuple[int, int, str]]) -> None:
        large = {k: list(v) for k, v in verified.items() if v[0] >= PERSIST_FROM_BYTES}
        tmp = path / f"{VERIFIED_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(large, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path / VERIFIED_FILE)
        except OSError as exc:  # a read-only models folder: the digests stay in memory
            log.debug("cannot keep verified digests in %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

"""Every number a comparison or study reuses carries the protocol it was measured with; a changed protocol refuses.

Why: continuing a finished `compare` with another --features (or --data, --eval-seeds) once rewrote results.json
and the report to name the new feature net over FIDs made with the old one. Now OUT/protocol.json records the
protocol of every number under OUT, each evals file records its digest, and a continuation whose protocol differs
is refused in one line (recomputing would silently discard hours of measurements: the user chooses, by a new --out).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import BdenseError
from ..io import atomic_write_text, read_json_file

PROTOCOL_FILE = "protocol.json"
TAG = "_protocol"  # the key of an evals file that holds its protocol digest
# keys recorded only since this check exists: a folder made before lacks them and is taken as made with today's
ADDED = ("extractor_digest",)


def measured(protocol: dict) -> dict:
    """What a protocol measured with: the reference statistics by digest (ref_sha256), without the path of the file
    that held them ("ref"), which changes when a folder moves or a shard ran in its own folder."""
    return {k: v for k, v in protocol.items() if k != "ref"}


def differs(old: dict, new: dict) -> list[str]:
    """Keys whose values differ (sorted); a key of ADDED missing from `old` does not count."""
    return sorted(k for k in set(old) | set(new) if old.get(k, new.get(k) if k in ADDED else None) != new.get(k))


def refuse(where, keys: list[str], old: dict, new: dict, fix: str) -> None:
    if keys:
        what = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:3])
        raise BdenseError(f"{where} holds numbers measured with another protocol ({what}); {fix}")


def digest(protocol: dict) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_folder(out: Path, protocol: dict, flag: str = "--out") -> None:
    """Refuse a folder whose numbers were measured with another protocol; record the protocol the first time.
    A folder from before protocol.json existed is judged by the protocol its results.json names."""
    path = out / PROTOCOL_FILE
    fix = f"rerun with the options it was made with, or choose a new {flag} to measure with these"
    old = read_json_file(path, f"delete {path} or choose a new {flag}")
    if not old:
        old = measured(read_json_file(out / "results.json",
                                      f"delete {out / 'results.json'} so that it is made again").get("protocol", {}))
    if old:  # a new folder has nothing measured yet
        refuse(out, differs(old, protocol), old, protocol, fix)
    if not path.exists():
        atomic_write_text(path, json.dumps(protocol, indent=1, sort_keys=True, default=str))


def read_measured(path: Path, protocol: dict) -> dict:
    """The numbers of an evals file, refused if they carry another protocol's digest (older files carry none)."""
    done = read_json_file(path, f"delete {path} so that it is measured again")
    tag = done.pop(TAG, None)
    if tag is not None and tag != digest(protocol):
        raise BdenseError(f"{path} holds numbers measured with another protocol (digest {tag}, now "
                          f"{digest(protocol)}); delete it to measure again, or rerun with the original options")
    return done


def write_measured(path: Path, done: dict, protocol: dict) -> None:
    atomic_write_text(path, json.dumps({TAG: digest(protocol), **done}, indent=1))

"""`pybridge clean`: remove what drivers that died left in /dev/shm."""

from __future__ import annotations

from ..core.cleanup import clean

__all__ = ["run"]


def run(*, dry_run: bool = False) -> int:
    removed = clean(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry.path}  ({entry.reason})")
    print(f"{len(removed)} stale entries {verb}; live channels are never touched")
    return 0

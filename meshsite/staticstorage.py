"""Static files with hashed, compressed names once `collectstatic` has run, plain names before.

Production and `make run` collect static files into STATIC_ROOT, where whitenoise serves
`admin/css/base.<hash>.css` (with gzip and brotli siblings) under a year-long immutable cache.
Django's manifest storage, though, makes every `{% static %}` raise when no manifest exists:
in the test suite (DEBUG is off there, and no test should need a collectstatic first) and in
a fresh checkout. So the absence of the manifest file alone means "not collected, use the
plain name"; a manifest that exists stays strict, so a file missing from a real collection
is still an error instead of a silently uncached URL.

Compression (brotli at its best ratio) is most of collectstatic's time, about a minute for
the admin and the API docs' bundles on a busy 2-core machine, and `make run` collects at every
start. whitenoise compresses every file every time; this storage compresses only files whose
.gz/.br siblings are missing or older than the file. A hashed name's content never changes
(the name is its hash), though Django rewrites hashed CSS/JS on every run, so for those the
siblings' existence is enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    manifest_found = False

    def read_manifest(self) -> Any:
        content = super().read_manifest()
        self.manifest_found = content is not None
        return content

    def save_manifest(self) -> None:
        super().save_manifest()
        self.manifest_found = True

    def compress_files(self, paths: Iterable[str]) -> Iterator[tuple[str, str]]:
        hashed = set(self.hashed_files.values())
        stale = [path for path in paths if not self._compressed_current(path, is_hashed=path in hashed)]
        return super().compress_files(stale)

    def _compressed_current(self, name: str, *, is_hashed: bool) -> bool:
        source = Path(self.path(name))
        siblings = [source.with_name(source.name + suffix) for suffix in (".gz", ".br")]
        if not all(sibling.exists() for sibling in siblings):
            return False
        return is_hashed or all(sibling.stat().st_mtime >= source.stat().st_mtime for sibling in siblings)

    def stored_name(self, name: str) -> str:
        if not self.manifest_found:
            return name
        return super().stored_name(name)

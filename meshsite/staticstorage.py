"""Static files with hashed, compressed names once `collectstatic` has run, plain names before.

Production and `make run` collect static files into STATIC_ROOT, where whitenoise serves
`admin/css/base.<hash>.css` (with gzip and brotli siblings) under a year-long immutable cache.
Django's manifest storage, though, makes every `{% static %}` raise when no manifest exists:
in the test suite (DEBUG is off there, and no test should need a collectstatic first) and in
a fresh checkout. So the absence of the manifest file alone means "not collected, use the
plain name"; a manifest that exists stays strict, so a file missing from a real collection
is still an error instead of a silently uncached URL.
"""

from __future__ import annotations

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

    def stored_name(self, name: str) -> str:
        if not self.manifest_found:
            return name
        return super().stored_name(name)

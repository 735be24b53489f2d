"""The labels the publisher writes on every image, in one place.

The registry is the record of what was released, so each image carries what a later
run needs to reason about it without any local state: its version (no-downgrade rule),
its commit (nightly no-op check), its build inputs (drift report) and, when it replaced
an earlier image under the same tags, that image's digest.
"""

from __future__ import annotations

TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
REVISION = "org.opencontainers.image.revision"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
PYTHON = "io.prefect.python-version"
# sha256 over the build inputs: the key of the local build cache.
FINGERPRINT = "io.prefect.publisher.fingerprint"
# The inputs themselves (JSON), so that `status` can say *what* changed, not only that.
INPUTS = "io.prefect.publisher.inputs"
# The resolved package set; deliberately not an input (see inputs.py).
PACKAGES = "io.prefect.publisher.packages"
# Set by `publish --replace`: the digest this image took the tags from.
REPLACES = "io.prefect.publisher.replaces"
# A nightly's UI bundles: built, skipped (--no-ui) or absent (the source has no UI projects).
UI = "io.prefect.publisher.ui"
UI_BUILT = "built"
UI_SKIPPED = "skipped"
UI_ABSENT = "absent"

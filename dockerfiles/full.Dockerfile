# The full image: a core image of the same Prefect and Python, plus prefect's extras.
#
# Built FROM the core image so every full image shares the base, tini and prefect layers
# with its core image: registries store them once and pulls of both fetch them once.
ARG CORE_IMAGE=prefecthq/prefect:core

FROM ${CORE_IMAGE} AS install
COPY wheels/ /tmp/wheels/
ARG PREFECT_REQUIREMENT=prefect
# prefect itself is already installed in the core layers; pip stages only what the extras add.
# PREFECT_REQUIREMENT is pinned (prefect==X.Y.Z); every other package is pinned by the
# resolved wheel set, which is the only thing pip can see.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        --root /staging --no-warn-script-location "${PREFECT_REQUIREMENT}"

FROM ${CORE_IMAGE}
COPY --from=install /staging/ /

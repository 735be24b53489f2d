# The full image: a core image of the same Prefect and Python, plus what prefect's
# extras add.
#
# Built FROM the core image so every full image shares the base, tini, dependency and
# prefect layers with its core image: registries store them once, pulls fetch them once.
# Build context: extras/, the wheels the extras add to the core set, with a pinned
# requirements file (possibly empty).
ARG CORE_IMAGE=prefecthq/prefect:core

FROM ${CORE_IMAGE} AS install
COPY extras/ /tmp/extras/
RUN mkdir -p /staging/extras \
    && pip install --no-cache-dir --no-index --no-deps --no-warn-script-location \
        --ignore-installed --find-links /tmp/extras --root /staging/extras \
        --requirement /tmp/extras/requirements.txt

FROM ${CORE_IMAGE}
COPY --from=install /staging/extras/ /

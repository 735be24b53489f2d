# The core image: Python, tini, the entrypoint and prefect with its core dependencies.
#
# Build context (prepared by the publisher): this file, entrypoint.sh and wheels/, the
# wheels resolved on the host for the target Python. Nothing is fetched from a package
# index during the build, so no index URL or credential can reach the image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS install
COPY wheels/ /tmp/wheels/
ARG PREFECT_REQUIREMENT=prefect
# --root stages the install under /staging in the system layout of this base (site- or
# dist-packages, /usr/local/bin), so the final stage copies packages without the wheels.
# PREFECT_REQUIREMENT is pinned (prefect==X.Y.Z); every other package is pinned by the
# resolved wheel set, which is the only thing pip can see.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        --root /staging --no-warn-script-location "${PREFECT_REQUIREMENT}"

FROM ${BASE_IMAGE}
# tini reaps zombies and forwards signals to the flow run. Debian's current tini is what
# we want, so it is not pinned.
# The package caches go too: bases without the docker-clean apt hook (debootstrap ones)
# would otherwise keep ~90 MB of them in this layer.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
COPY --from=install /staging/ /
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

# The core image: Python, tini, the entrypoint and prefect with its core dependencies.
#
# Build context (prepared by the publisher): this file, entrypoint.sh, and the wheels the
# base image's own pip resolved for this cell: deps/ (everything prefect needs) and
# prefect/ (prefect itself), each with a pinned requirements file. Nothing is fetched
# from a package index during the build, so no index URL or credential can reach the
# image, and every install below is --no-deps: the resolution already happened.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS install
# Dependencies and prefect are staged separately, so that releases whose dependencies
# resolve alike (most patch releases) share one dependency layer: the builder's cache
# reuses it and registries store and serve it once.
COPY deps/ /tmp/deps/
# --root stages the install in this base's own system layout (site- or dist-packages,
# /usr/local/bin), so the final stage copies installed files without the wheels.
RUN pip install --no-cache-dir --no-index --no-deps --no-warn-script-location \
        --ignore-installed --find-links /tmp/deps --root /staging/deps \
        --requirement /tmp/deps/requirements.txt
COPY prefect/ /tmp/prefect/
RUN pip install --no-cache-dir --no-index --no-deps --no-warn-script-location \
        --ignore-installed --find-links /tmp/prefect --root /staging/prefect \
        --requirement /tmp/prefect/requirements.txt

FROM ${BASE_IMAGE}
# tini reaps zombies and forwards signals to the flow run. Debian's current tini is what
# we want, so it is not pinned. The package caches go too: bases without the docker-clean
# apt hook (debootstrap ones) would otherwise keep ~90 MB of them in this layer.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
COPY --from=install /staging/deps/ /
COPY --from=install /staging/prefect/ /
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

# The baseline a careful maintainer writes today: one BuildKit build per matrix cell of a
# lean Dockerfile (tini, no compiler, prefect with its extras straight from the index,
# pip's download cache kept between builds in a BuildKit cache mount), then tag and push.
ARG BASE_IMAGE=python:3.13-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
ARG PIP_INDEX_URL
ARG PREFECT_REQUIREMENT
# hadolint ignore=DL3013,DL3042
RUN --mount=type=cache,target=/root/.cache/pip pip install "${PREFECT_REQUIREMENT}"
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

# The baseline the benchmark compares against: one self-contained build per matrix cell,
# as the hand-written CI jobs did (compiler and tini from apt, prefect and its extras from
# the index during the build, no layer shared with any other cell).
ARG BASE_IMAGE=python:3.8-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
ARG PIP_INDEX_URL
ARG PREFECT_REQUIREMENT
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${PREFECT_REQUIREMENT}"
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

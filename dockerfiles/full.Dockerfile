# The full image: a core image of the same Prefect and Python, plus what prefect's
# extras add.
#
# Built FROM the core image so every full image shares the base, tini, dependency and
# prefect layers with its core image: registries store them once, pulls fetch them once.
# Build context: extras.tar, the packages the extras add to the core image's, installed as
# that image's pip installs them with --root (possibly nothing), outside the build (see
# core.Dockerfile).
ARG CORE_IMAGE=prefecthq/prefect:core

FROM ${CORE_IMAGE}
ADD extras.tar /

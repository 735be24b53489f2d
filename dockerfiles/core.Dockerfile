# The core image: Python, tini, the entrypoint and prefect with its core dependencies.
#
# Build context (prepared by the publisher): this file, entrypoint.sh, the .deb files of
# debs/ (tini), and the packages the base image's pip resolved for this cell, already
# installed as that pip installs them with --root (the base's site- or dist-packages,
# /usr/local/bin), each tree as one tar that ADD unpacks onto /: deps.tar (everything
# prefect needs) and prefect.tar (prefect itself). One tar, not a folder for COPY, because
# BuildKit took twice as long to take in and copy the tree file by file. They are
# installed outside the build, on the daemon's own platform even when the image is for
# another one (under QEMU, pip took 20 minutes to install what it installs natively in
# seconds), and from wheels only: no index URL or credential can reach the image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE}
# tini reaps zombies and forwards signals to the flow run. Its .deb (debs/) was fetched by
# the base's own apt for this platform, outside the build (publisher/debs.py): dpkg only
# installs it here, so no `apt-get update` runs in the build, which took minutes under QEMU.
# Mounted, not copied: a COPY'd .deb stays in the image's layers after `rm` (BuildKit's
# bind mount; the classic builder cannot build this file). On /mnt, which the base has:
# a mount point BuildKit has to create stays in the layer as an empty folder.
RUN --mount=type=bind,source=debs,target=/mnt dpkg -i /mnt/*.deb
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
# Dependencies and prefect are separate layers, so that releases whose dependencies resolve
# alike (most patch releases) share one dependency layer: the same wheels install as the
# same bytes, the builder's cache reuses the layer and registries store and serve it once.
ADD deps.tar /
ADD prefect.tar /
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

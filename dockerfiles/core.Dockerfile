# The core image: Python, tini, the entrypoint and prefect with its core dependencies.
#
# This file builds the core's parent: the base image with tini and the entrypoint. The
# publisher then makes the core image of that parent and two layers it installed itself
# with the base's own pip (--root: the base's site- or dist-packages, /usr/local/bin):
# prefect's dependencies, then prefect (publisher/assemble.py). It writes the image's
# config and loads config and layers into the daemon; an image with extras is the core
# plus one more such layer. The packages are installed outside any build, on the daemon's
# own platform even when the image is for another one (under QEMU, pip took 20 minutes to
# install what it installs natively in seconds), and from wheels only: no index URL or
# credential can reach the image.
#
# Build context (prepared by the publisher): this file, entrypoint.sh and the .deb files
# of debs/ (tini).
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
ENTRYPOINT ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"]

#!/bin/sh
# Entrypoint of the prefecthq/prefect images; tini runs it as PID 1's only child.
#
# EXTRA_PIP_PACKAGES="pkg1 pkg2==1.0" installs those packages before the command runs.
# The value is split on whitespace and handed to pip as arguments: it is never evaluated
# by a shell, so quotes, $(...) or ; in it do nothing special.
set -eu

if [ -n "${EXTRA_PIP_PACKAGES:-}" ]; then
    echo "+pip install ${EXTRA_PIP_PACKAGES}"
    set -f  # no glob expansion of the package list
    # shellcheck disable=SC2086  # word splitting is the point
    pip install ${EXTRA_PIP_PACKAGES} || {
        status=$?
        echo "entrypoint: EXTRA_PIP_PACKAGES could not be installed (pip exited with ${status}); not starting the command" >&2
        exit "${status}"
    }
    set +f
fi

if [ "$#" -eq 0 ]; then
    # No command given: an interactive shell, as `docker run -it IMAGE` users expect.
    if command -v bash >/dev/null 2>&1; then
        exec bash
    fi
    exec sh
fi
exec "$@"

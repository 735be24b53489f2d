"""The smoke test's report parsing and checks, with `docker_client.run` faked: no Docker."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest

from publisher import labels, smoke
from publisher.errors import BuildError

PREFECT_3_OUTPUT = """\
Version:             3.9.1
API version:         0.8.4
Python version:      3.13.5
Server type:         ephemeral
"""


# Shortened from prefect 3.9.1's bundles: ui mounts into <div id="app">, ui-v2 into
# <div id="root">; each loads one content-hashed module script.
PLACEHOLDER = "/PREFECT_UI_SERVE_BASE_REPLACE_PLACEHOLDER"
UI_INDEX = (
    '<!DOCTYPE html><html lang="en"><head><title>Prefect Server</title>\n'
    f'<script type="module" crossorigin src="{PLACEHOLDER}/assets/index-Bny_92F-.js"></script>\n'
    '</head><body><div id="app"></div></body></html>'
)
UI_V2_INDEX = (
    '<!DOCTYPE html><html lang="en"><head><title>Prefect Server</title>\n'
    f'<script type="module" crossorigin src="{PLACEHOLDER}/assets/index-DcpMCR-U.js"></script>\n'
    f'<link rel="modulepreload" crossorigin href="{PLACEHOLDER}/assets/vendor-react-PLCm.js">\n'
    '</head><body><div id="root"></div></body></html>'
)
# What the server answers for `/`: ui-v2's page, its placeholder replaced by the base path.
SERVED_V2 = UI_V2_INDEX.replace(PLACEHOLDER, "/v2")


def served(**changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status": 200,
        "url": "http://127.0.0.1:41234/v2/",
        "content_type": "text/html; charset=utf-8",
        "body": SERVED_V2,
        "seconds": 8.4,
        "output": "Check out the dashboard at http://127.0.0.1:41234\n",
    }
    answer.update(changes)
    return answer


def report_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "pid1": {"cmdline": ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"], "comm": "tini"},
        "python": "3.13.5",
        "machine": "x86_64",
        "prefect": {"code": 0, "output": PREFECT_3_OUTPUT},
        "extras": {
            "docker": {"packages": ["docker"], "installed": ["docker"]},
            "aws": {"packages": ["boto3", "s3fs"], "installed": []},
        },
        "ui": {"bundles": {"ui": UI_INDEX, "ui-v2": UI_V2_INDEX}, "served": served()},
    }
    document.update(changes)
    return document


def container_output(document: dict[str, Any], *, noise: str = "") -> str:
    return noise + smoke.REPORT_MARKER + json.dumps(document) + "\n"


class FakeRun:
    """Stands in for docker_client.run: records each call and answers one canned result."""

    def __init__(self, code: int, output: str) -> None:
        self.code, self.output = code, output
        self.calls: list[tuple[str, list[str], dict[str, Any]]] = []

    def __call__(
        self, client: object, image: str, command: list[str], **kwargs: Any
    ) -> tuple[int, str]:
        self.calls.append((image, command, kwargs))
        return self.code, self.output


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(code: int = 0, output: str | None = None, **changes: Any) -> FakeRun:
        fake = FakeRun(
            code, container_output(report_document(**changes)) if output is None else output
        )
        monkeypatch.setattr(smoke.docker_client, "run", fake)
        # The tests name images by id already.
        monkeypatch.setattr(smoke.docker_client, "image_id", lambda client, image: image)
        return fake

    return install


# What `check` and `earlier` below ask of the image unless told otherwise.
EXPECTED: dict[str, Any] = {
    "python": "3.13",
    "prefect_version": "3.9.1",
    "extras_present": ["docker"],
    "extras_absent": ["aws"],
    "ui": smoke.UI_IF_PRESENT,
}


def check(**overrides: Any) -> smoke.SmokeResult:
    arguments: dict[str, Any] = {**EXPECTED, **overrides}
    return smoke.check(object(), "sha256:image", **arguments)  # type: ignore[arg-type]


def test_one_container_through_the_entrypoint_checks_everything(fake_run: Any) -> None:
    fake = fake_run(output=container_output(report_document(), noise="+pip install x\n"))

    assert check() == smoke.SmokeResult(
        prefect_version="3.9.1",
        python_version="3.13.5",
        ui="UI served in 8s (ui, ui-v2)",
        machine="x86_64",
    )

    assert len(fake.calls) == 1
    image, command, options = fake.calls[0]
    assert image == "sha256:image"
    assert command[:2] == ["python", "-c"] and command[3:] == [
        "--ui=if-present",
        "--package=prefect",
        "docker",
        "aws",
    ]
    # The image's own entrypoint (tini + entrypoint.sh) must start the probe.
    assert options.get("entrypoint") is None
    # The server the probe starts answers on the container's own loopback only.
    assert options["network_mode"] == "none"


@pytest.mark.parametrize(
    ("image_labels", "mode"),
    [
        ({labels.UI: labels.UI_BUILT}, smoke.UI_REQUIRED),
        ({labels.UI: labels.UI_SKIPPED}, smoke.UI_SKIP),
        # A nightly of a source without UI projects (an sdist may ship built bundles).
        ({labels.UI: labels.UI_ABSENT}, smoke.UI_IF_PRESENT),
        # A release: Prefect 3's wheels carry the bundles, 0.14's have none.
        ({labels.VERSION: "3.9.1"}, smoke.UI_IF_PRESENT),
        ({}, smoke.UI_IF_PRESENT),
    ],
)
def test_whether_the_ui_must_be_there_comes_from_the_image_labels(
    image_labels: dict[str, str], mode: str
) -> None:
    assert smoke.ui_check(image_labels) == mode


def test_an_unknown_ui_mode_is_a_programming_error(fake_run: Any) -> None:
    fake = fake_run()
    with pytest.raises(ValueError, match="unknown UI check 'maybe'"):
        check(ui="maybe")
    assert fake.calls == []


def earlier(image: str = "sha256:image", **overrides: Any) -> smoke.SmokeResult | None:
    """What ``check`` answers from a kept report; None when it had to run the image."""
    probed: list[str] = []
    arguments: dict[str, Any] = {**EXPECTED, **overrides}
    try:
        result = smoke.check(
            object(),  # type: ignore[arg-type]
            image,
            reuse=True,
            on_probe=lambda: probed.append(image),
            **arguments,
        )
    except BuildError:
        assert probed, "a kept report failed the check instead of the image being probed"
        return None
    assert result.earlier != bool(probed)
    return None if probed else result


def test_a_probe_that_passed_is_not_run_again_on_the_same_image(fake_run: Any) -> None:
    fake = fake_run()
    assert earlier() is None  # nothing probed yet

    passed = check()

    assert earlier() == dataclasses.replace(passed, earlier=True)
    assert len(fake.calls) == 2  # the one above, and the first check: none since


def test_a_kept_report_answers_only_the_image_and_probe_it_came_from(fake_run: Any) -> None:
    fake_run()
    check()

    assert earlier("sha256:other") is None  # another image
    assert earlier(extras_present=["aws"], extras_absent=["docker"]) is None  # other extras
    assert earlier(ui=smoke.UI_REQUIRED) is None  # another probe command
    assert earlier(package="prefect-client") is None
    # The same probe, asked to expect another version: the kept report does not pass that,
    # so the probe runs again rather than failing on an old report.
    assert earlier(prefect_version="3.9.0") is None
    assert earlier(machine="aarch64") is None
    assert earlier(machine="x86_64") is not None


def test_a_failed_probe_is_run_again(fake_run: Any) -> None:
    fake_run(prefect={"code": 1, "output": "Traceback: ImportError"})
    with pytest.raises(BuildError):
        check()
    assert earlier() is None
    # A server too slow to answer under load is not kept either.
    fake_run(ui={"bundles": {"ui": UI_INDEX}, "served": served(status=None, error="no answer")})
    with pytest.raises(BuildError):
        check()
    assert earlier() is None


def test_a_damaged_or_unwritable_cache_costs_a_probe_not_the_check(
    fake_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_run()
    check()
    (entry,) = smoke.CACHE.iterdir()
    entry.write_text('{"code": 0, "output": "publisher-smoke-report: {trunc')
    assert earlier() is None  # probed again, and kept again
    assert len(fake.calls) == 2
    assert earlier() is not None

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(smoke, "CACHE", blocked / "smoke")  # cannot be a folder
    assert check().prefect_version == "3.9.1"
    assert earlier() is None


def test_a_release_without_ui_bundles_passes_without_starting_a_server(fake_run: Any) -> None:
    fake_run(ui={"bundles": {}, "served": None})

    assert check().ui == "no UI"


def test_a_ui_built_with_no_ui_is_not_looked_at(fake_run: Any) -> None:
    fake_run(ui={"bundles": {}, "served": None}, ui_error="ValueError: not even run")

    assert check(ui=smoke.UI_SKIP).ui == "UI not checked"


def test_the_v1_ui_served_by_an_older_prefect_is_recognised(fake_run: Any) -> None:
    page = UI_INDEX.replace(PLACEHOLDER, "")
    fake_run(ui={"bundles": {"ui": UI_INDEX}, "served": served(body=page, url="http://x/")})

    assert check(ui=smoke.UI_REQUIRED).ui == "UI served in 8s (ui)"


def test_a_ui_without_module_scripts_is_recognised_by_its_mount_point(fake_run: Any) -> None:
    index = '<html><body><div id="app"></div><script src="/app.js"></script></body></html>'
    fake_run(ui={"bundles": {"ui": index}, "served": served(body=index)})
    assert check().ui.startswith("UI served")

    fake_run(ui={"bundles": {"ui": index}, "served": served(body="<html>Welcome</html>")})
    with pytest.raises(BuildError, match=r"none of the UI bundles' index\.html"):
        check()


@pytest.mark.parametrize(
    ("ui", "mode", "message"),
    [
        (
            {"bundles": {}, "served": None},
            smoke.UI_REQUIRED,
            r"the image has no UI bundles \(prefect/server/ui, prefect/server/ui-v2\), "
            r"but its UI was built \(io.prefect.publisher.ui=built\)",
        ),
        (
            {"bundles": {"ui": UI_INDEX, "ui-v2": ""}, "served": served()},
            smoke.UI_IF_PRESENT,
            "the UI bundle prefect/server/ui-v2 has no index.html",
        ),
        (
            {"bundles": {"ui": UI_INDEX}, "served": None},
            smoke.UI_IF_PRESENT,
            "the UI check did not start `prefect server start`",
        ),
        (
            {
                "bundles": {"ui-v2": UI_V2_INDEX},
                "served": served(
                    status=None,
                    error="no answer within 90 s",
                    output="Starting...\nsqlite3.OperationalError: database is locked\n",
                ),
            },
            smoke.UI_REQUIRED,
            "`prefect server start` did not serve the UI: no answer within 90 s; "
            "its output ends: sqlite3.OperationalError: database is locked",
        ),
        (
            {"bundles": {"ui-v2": UI_V2_INDEX}, "served": served(status=404, body="Not Found")},
            smoke.UI_IF_PRESENT,
            "GET / from `prefect server start` answered 404",
        ),
        (
            {
                "bundles": {"ui-v2": UI_V2_INDEX},
                "served": served(content_type="application/json", body='{"detail": "x"}'),
            },
            smoke.UI_IF_PRESENT,
            "GET / answered application/json, not HTML",
        ),
        (
            # A page, but not the bundle's: e.g. a stale copy of another build served.
            {
                "bundles": {"ui-v2": UI_V2_INDEX},
                "served": served(body=SERVED_V2.replace("DcpMCR-U", "0ld")),
            },
            smoke.UI_IF_PRESENT,
            r"GET / answered a page that is none of the UI bundles' index.html "
            r"\(http://127.0.0.1:41234/v2/: <!DOCTYPE html>",
        ),
    ],
)
def test_each_failing_ui_check_is_named_in_one_line(
    fake_run: Any, ui: dict[str, Any], mode: str, message: str
) -> None:
    fake_run(ui=ui)

    with pytest.raises(BuildError, match=message) as caught:
        check(ui=mode)
    assert "\n" not in str(caught.value)


def test_a_probe_whose_ui_part_crashed_fails_unless_the_ui_is_skipped(fake_run: Any) -> None:
    document = report_document(
        ui_error="AttributeError: 'NoneType' object has no attribute 'origin'"
    )
    del document["ui"]
    fake_run(output=container_output(document))

    with pytest.raises(BuildError, match="the UI check failed to run: AttributeError"):
        check()
    assert check(ui=smoke.UI_SKIP).prefect_version == "3.9.1"


def test_parse_report_reads_pid1_from_cmdline_or_comm() -> None:
    parsed = smoke.parse_report(0, container_output(report_document()))
    assert parsed.pid1 == "tini"
    assert parsed.extras["aws"] == smoke.Extra(packages=("boto3", "s3fs"), installed=())

    by_path = report_document(pid1={"cmdline": ["/usr/bin/tini", "--"], "comm": "tini"})
    assert smoke.parse_report(0, container_output(by_path)).pid1 == "tini"
    kernel_thread = report_document(pid1={"cmdline": [], "comm": "tini"})
    assert smoke.parse_report(0, container_output(kernel_thread)).pid1 == "tini"
    # An arm64 container under QEMU, as its /proc/1/cmdline read on this machine.
    emulated = report_document(
        pid1={
            "cmdline": ["/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/tini", "tini"],
            "comm": "aarch64-binfmt-P",
        }
    )
    assert smoke.parse_report(0, container_output(emulated)).pid1 == "tini"
    emulated_shell = report_document(
        pid1={"cmdline": ["/usr/bin/qemu-aarch64-static", "/bin/sh", "sh"], "comm": "qemu"}
    )
    assert smoke.parse_report(0, container_output(emulated_shell)).pid1 == "sh"


def test_nightly_accepts_any_version_and_bare_0x_output_is_read(fake_run: Any) -> None:
    fake_run(prefect={"code": 0, "output": "0.14.10\n"})

    assert check(prefect_version=None).prefect_version == "0.14.10"


@pytest.mark.parametrize(
    ("changes", "overrides", "message"),
    [
        (
            {"pid1": {"cmdline": ["python", "-c", "..."], "comm": "python"}},
            {},
            "PID 1 is 'python', not tini",
        ),
        (
            {"prefect": {"code": 1, "output": "Traceback\nImportError: no module named x\n"}},
            {},
            "`prefect version` exited with 1: ImportError: no module named x",
        ),
        ({"prefect": {"code": 0, "output": "  \n"}}, {}, "`prefect version` printed nothing"),
        ({}, {"prefect_version": "3.9.0"}, "`prefect version` reports 3.9.1, expected 3.9.0"),
        ({}, {"python": "3.11"}, "`python` in the image is Python 3.13.5, expected Python 3.11"),
        ({"python": "3.1.4"}, {"python": "3.1"}, None),
        ({}, {"python": "3.1"}, "is Python 3.13.5, expected Python 3.1$"),
        ({}, {"machine": "aarch64"}, "the image runs as x86_64, expected aarch64"),
        ({}, {"machine": "x86_64"}, None),
        ({"machine": ""}, {"machine": "x86_64"}, "runs as an unknown machine, expected x86_64"),
        (
            {"extras_error": "PackageNotFoundError: prefect"},
            {},
            "extras check failed to run: PackageNotFoundError: prefect",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": [], "installed": []},
                    "aws": {"packages": [], "installed": []},
                }
            },
            {},
            "prefect declares no packages for extra 'docker'",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": ["docker", "six"], "installed": ["docker"]},
                    "aws": {"packages": [], "installed": []},
                }
            },
            {},
            "extra 'docker' is missing six",
        ),
        (
            {
                "extras": {
                    "docker": {"packages": ["docker"], "installed": ["docker"]},
                    "aws": {"packages": ["boto3"], "installed": ["boto3"]},
                }
            },
            {},
            "a core image must not carry extra 'aws', but has boto3",
        ),
    ],
)
def test_each_failing_check_is_named_in_one_line(
    fake_run: Any, changes: dict[str, Any], overrides: dict[str, Any], message: str | None
) -> None:
    fake_run(**changes)

    if message is None:
        check(**overrides)
        return
    with pytest.raises(BuildError, match=message) as caught:
        check(**overrides)
    assert "\n" not in str(caught.value)


def test_the_first_failing_check_wins(fake_run: Any) -> None:
    fake_run(python="3.11.2", prefect={"code": 0, "output": "Version: 3.9.0\n"})

    with pytest.raises(BuildError, match=r"`prefect version` reports 3\.9\.0"):
        check()


def test_extras_error_does_not_matter_without_extras(fake_run: Any) -> None:
    fake_run(extras={}, extras_error="PackageNotFoundError: prefect")

    assert check(extras_present=[], extras_absent=[]).python_version == "3.13.5"


@pytest.mark.parametrize(
    ("code", "output", "message"),
    [
        (
            127,
            "entrypoint: EXTRA_PIP_PACKAGES could not be installed\n",
            "exited with 127: entrypoint",
        ),
        (0, "no report here\n", "the smoke probe exited with 0: no report here"),
        (1, "", r"exited with 1: \(no output\)"),
        (0, smoke.REPORT_MARKER + "{not json\n", "the smoke probe's report is malformed"),
        (0, smoke.REPORT_MARKER + '{"pid1": {}}\n', "the smoke probe's report is malformed"),
    ],
)
def test_a_probe_that_did_not_report_is_one_line(
    fake_run: Any, code: int, output: str, message: str
) -> None:
    fake_run(code=code, output=output)

    with pytest.raises(BuildError, match=message) as caught:
        check()
    assert "\n" not in str(caught.value)


def test_a_client_image_is_asked_for_its_own_package(fake_run: Any) -> None:
    fake = fake_run()
    check(package="prefect-client", extras_present=[], extras_absent=[])
    (_, command, _) = fake.calls[0]
    assert command[3:] == ["--ui=if-present", "--package=prefect-client"]
    # prefect-client installs the module, not the `prefect` command.
    assert "import prefect; print('Version: ' + prefect.__version__)" in command[2]


def test_the_probe_runs_and_reports_what_the_prefect_command_printed(tmp_path: Path) -> None:
    """The probe itself, run by this machine's Python with a stand-in `prefect` command."""
    fake = tmp_path / "prefect"
    fake.write_text("#!/bin/sh\necho 'Version:             3.9.1'\n")
    fake.chmod(0o755)
    done = subprocess.run(
        smoke.probe_command(smoke.UI_SKIP, "prefect", (), ()),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        timeout=60,
    )
    report = smoke.parse_report(done.returncode, done.stdout + done.stderr)
    assert (report.prefect_exit_code, report.prefect_output.strip()) == (
        0,
        "Version:             3.9.1",
    )
    assert report.python_version == platform.python_version()
    assert report.machine == platform.machine()

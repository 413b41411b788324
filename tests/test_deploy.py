"""The Dataflow deployment (deploy/): template metadata against tileseg's options, the nightly
templates, launch.sh's gcloud commands (run against a fake gcloud), the image's version pins and
CUDA library path, and the image smoke test on this machine's CPU. No network, no gcloud, no docker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from common.safepath import UnsafePathError, check_segment
from model.card import load_card
from model.loading import PRECISIONS
from model.shipped import DEFAULT_MODEL
from pipelines.config import SegmentOptions
from transforms.tiles import parse_bands

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
VARIABLES = {"PROJECT": "my-proj", "REGION": "europe-west4", "BUCKET": "my-bucket", "TAG": "abc1234",
             "SCHEDULER_SA": "nightly@my-proj.iam.gserviceaccount.com"}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load("render")
cuda_libs = _load("cuda_libs")


def _tileseg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    SegmentOptions._add_argparse_args(parser)
    return parser


def _tileseg_actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in _tileseg_parser()._actions if a.dest != "help"}


def _specs() -> dict[str, dict]:
    return render.parameter_specs(json.loads((DEPLOY / "metadata.json").read_text()))


def _matches(name: str, value: str) -> bool:
    return all(re.fullmatch(r, value) for r in _specs()[name]["regexes"])


# --- Flex Template metadata ------------------------------------------------------------------------


def test_metadata_parameters_are_exactly_the_tileseg_options() -> None:
    # A new tileseg option fails this until deploy/metadata.json declares it too.
    names = [p["name"] for p in json.loads((DEPLOY / "metadata.json").read_text())["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == set(_tileseg_actions())


def test_only_input_and_output_are_required_and_every_parameter_is_described() -> None:
    specs = _specs()
    assert {n for n, s in specs.items() if not s.get("isOptional")} == {"input", "output"}
    for name, spec in specs.items():
        assert spec["label"].strip() and spec["helpText"].strip(), name
        assert spec["regexes"], f"{name} has no regex"
        for regex in spec["regexes"]:
            re.compile(regex)
            assert regex.startswith("^") and regex.endswith("$"), f"{name}: anchor {regex}"


#: name → (valid values, invalid values). Every valid value is also parsed by tileseg's own parser.
EXAMPLES = {
    "input": (["gs://my-bucket/tiles/**/*.tif", "gs://my-bucket/a b/x.tif", "gs://my-bucket"],
              ["/data/tiles/*.tif", "tiles/*.tif", "file:///tmp/x.tif", "s3://my-bucket/x.tif", "gs://",
               "gs://My_Bucket/x", "gs://my-bucket/x\n.tif"]),
    "output": (["gs://my-bucket/tileseg-out", "gs://my-bucket/out/2024/"],
               ["out/", "/tmp/out", "gs://my-bucket/out/*", "gs://my-bucket/out?"]),
    "model": (["gs://models/aerial-dubai6", "gs://models/a/b/"],
              [DEFAULT_MODEL, "model/weights/aerial-dubai6", "gs://models/*"]),
    "precision": (["auto", "float32", "bfloat16", "float16"], ["fp16", "AUTO", "float64", ""]),
    "batch_size": (["1", "8", "64"], ["0", "-1", "08", "8.0", "eight", ""]),
    "stitch": (["overlap", "blend"], ["mean", "Overlap", ""]),
    "bands": (["3,2,1", "1", "4,3,2"], ["0,1,2", "3, 2, 1", "3,,1", "3;2;1", ""]),
    "patch_size": (["768", "512"], ["0", "-512", "512px", ""]),
    "halo": (["0", "64"], ["-1", "064", "x", ""]),
    "patches_per_block": (["1", "4"], ["0", "-4", ""]),
    "overwrite": (["true", "false"], ["yes", "1", "True", ""]),
    "max_tile_pixels": (["5000000000", "1"], ["0", "5e9", "5,000,000,000", ""]),
    "model_copies": (["0", "2"], ["-1", "two", ""]),
    "radiometry": (["card", "stretch", "none"], ["Card", "auto", ""]),
    "landing": (["small-drone", "gs://bucket/profiles/heavy-lift.json"], ["", "a profile", "x;rm"]),
    "gsd": (["0.5", "0.025", "12"], ["", "-1", "0.5m", "1e-3"]),
    "run_id": (["20240101T020000Z-abc123", "nightly_1", "run.2"],
               ["../escape", ".hidden", "a/b", "x" * 129, "", "a b"]),
}


def test_examples_cover_every_parameter() -> None:
    assert set(EXAMPLES) == set(_specs())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_regexes_accept_valid_values_that_tileseg_parses_and_reject_invalid(name: str) -> None:
    valid, invalid = EXAMPLES[name]
    parser = _tileseg_parser()
    for value in valid:
        assert _matches(name, value), f"{name}={value!r} should be accepted"
        # The launcher passes parameters as --name=value: tileseg's parser takes every accepted value.
        parsed = getattr(parser.parse_args([f"--{name}={value}"]), name)
        action = _tileseg_actions()[name]
        if action.type is int:
            assert isinstance(parsed, int) and str(parsed) == value
        if name == "overwrite":
            assert parsed is (value == "true")
        if name == "bands":
            assert parse_bands(parsed) == tuple(int(b) for b in value.split(","))
        if name == "run_id":
            assert check_segment(parsed, "--run_id") == value
    for value in invalid:
        assert not _matches(name, value), f"{name}={value!r} should be refused"


def test_enum_regexes_list_exactly_the_argparse_choices() -> None:
    for name, action in _tileseg_actions().items():
        regex = _specs()[name]["regexes"][0]
        alternatives = re.fullmatch(r"\^\(([a-z0-9|]+)\)\$", regex)
        if action.choices is not None:
            assert alternatives, f"{name} has choices {action.choices} but regex {regex}"
            assert set(alternatives.group(1).split("|")) == set(action.choices)
    assert set(_specs()["precision"]["regexes"][0][2:-2].split("|")) == set(PRECISIONS)


def test_run_id_regex_agrees_with_tileseg_run_id_check() -> None:
    samples = ["a", "A-1", "_x", "-x", ".x", "x.", "x" * 128, "x" * 129, "a/b", "a\\b", "ü", "a\tb", "..", "1.2.3"]
    for value in samples:
        try:
            check_segment(value, "--run_id")
            ok = True
        except UnsafePathError:
            ok = False
        assert _matches("run_id", value) is ok, value


def test_launch_parameters_from_tileseg_options() -> None:
    params = render.options_to_parameters(
        "gs://b-1/tiles/*.tif", "gs://b-1/out", ["--overwrite", "--batch_size", "8", "--bands=3,2,1", "--stitch=blend"])
    assert params == {"input": "gs://b-1/tiles/*.tif", "output": "gs://b-1/out", "overwrite": "true",
                      "batch_size": "8", "bands": "3,2,1", "stitch": "blend"}
    assert render.gcloud_parameter_flags({"bands": "3,2,1", "batch_size": "8"}) == [
        "--parameters=^~^bands=3,2,1", "--parameters=batch_size=8"]
    assert render.options_to_parameters("gs://b-1/t", "gs://b-1/o", ["--overwrite", "false"])["overwrite"] == "false"
    with pytest.raises(render.RenderError, match="input='/data/x.tif' does not match"):
        render.options_to_parameters("/data/x.tif", "gs://b-1/o", [])
    with pytest.raises(render.RenderError, match="--num_workers is not a tileseg template parameter"):
        render.options_to_parameters("gs://b-1/t", "gs://b-1/o", ["--num_workers=3"])
    with pytest.raises(render.RenderError, match="batch_size='0'"):
        render.options_to_parameters("gs://b-1/t", "gs://b-1/o", ["--batch_size=0"])


# --- nightly schedule templates ------------------------------------------------------------------


def _render(tmp_path: Path, variables: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | variables
    return subprocess.run([sys.executable, str(DEPLOY / "render.py"), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60)


def test_nightly_templates_render_to_a_valid_launch_request(tmp_path: Path) -> None:
    done = _render(tmp_path, VARIABLES)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "nightly-launch.json").read_text()
    assert "$" not in text
    assert not re.search(r"\b(PROJECT|REGION|BUCKET|TAG)\b", text)  # neither new nor old-style placeholders
    launch = json.loads(text)["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://my-bucket/templates/tileseg-abc1234.json"
    env = launch["environment"]
    assert env["sdkContainerImage"] == "europe-west4-docker.pkg.dev/my-proj/tileseg/tileseg:abc1234"
    assert env["tempLocation"] == "gs://my-bucket/tmp" and env["stagingLocation"] == "gs://my-bucket/staging"
    assert "no_use_multiple_sdk_containers" not in env["additionalExperiments"]
    params = launch["parameters"]
    assert params["input"].startswith("gs://my-bucket/") and params["output"].startswith("gs://my-bucket/")
    for name, value in params.items():
        assert name in _specs(), f"{name} is not a template parameter"
        assert isinstance(value, str) and _matches(name, value), f"{name}={value!r}"

    scheduler = yaml.safe_load((tmp_path / "nightly-scheduler.yaml").read_text())
    assert scheduler["uri"] == ("https://dataflow.googleapis.com/v1b3/projects/my-proj/locations/europe-west4"
                                "/flexTemplates:launch")
    assert scheduler["oauth_service_account_email"] == VARIABLES["SCHEDULER_SA"]
    assert scheduler["schedule"] == "0 2 * * *"
    command = [line for line in (tmp_path / "nightly-scheduler.yaml").read_text().splitlines()
               if "gcloud scheduler jobs create http" in line]
    assert command and "$" not in command[0] and "--location europe-west4" in command[0]


def test_render_refuses_missing_or_malformed_variables_and_writes_nothing(tmp_path: Path) -> None:
    partial = {k: v for k, v in VARIABLES.items() if k not in ("TAG", "SCHEDULER_SA")}
    done = _render(tmp_path / "a", partial)
    assert done.returncode == 2
    assert "missing: SCHEDULER_SA" in done.stderr and "TAG (" in done.stderr
    assert not (tmp_path / "a").exists()
    done = _render(tmp_path / "b", VARIABLES | {"BUCKET": "gs://my-bucket"})
    assert done.returncode == 2 and "BUCKET='gs://my-bucket' is not a bucket name" in done.stderr
    assert not (tmp_path / "b").exists()


def test_render_refuses_a_launch_request_the_metadata_would_refuse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in render.TEMPLATES:
        (src / name).write_text((DEPLOY / name).read_text())
    launch = src / "nightly-launch.json"
    launch.write_text(launch.read_text().replace('"batch_size": "8"', '"batch_size": "8", "stich": "blend"'))
    with pytest.raises(render.RenderError, match="stich: not a template parameter"):
        render.render_all(VARIABLES, src)


# --- launch.sh, against a fake gcloud --------------------------------------------------------------

FAKE = """#!/usr/bin/env bash
{ printf '%s\\x1f' "$(basename "$0")" "$@"; printf '\\n'; } >> "$FAKE_LOG"
case " $* " in *" describe "*) exit "${FAKE_DESCRIBE_RC:-0}" ;; esac
"""


def _launch(tmp_path: Path, *args: str, describe_rc: int = 0) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("gcloud", "docker"):
        (bin_dir / tool).write_text(FAKE)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = os.environ | {k: v for k, v in VARIABLES.items() if k != "SCHEDULER_SA"} | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(log),
        "FAKE_DESCRIBE_RC": str(describe_rc), "PYTHON": sys.executable}
    for name in ("MACHINE_TYPE", "GPU_TYPE", "GPU_COUNT", "MAX_WORKERS", "REPOSITORY"):
        env.pop(name, None)
    done = subprocess.run(["bash", str(DEPLOY / "launch.sh"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    calls = [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines()]
    return done, calls


def _flag(call: list[str], name: str) -> list[str]:
    return [call[i + 1] for i, a in enumerate(call) if a == name]


def test_launch_help_lists_its_options(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "--help")
    assert done.returncode == 0 and not calls
    for option in ("--rebuild", "--build-only", "--smoke-test", "--dry-run", "INPUT OUTPUT", "--overwrite",
                   "PROJECT", "REGION", "BUCKET", "TAG", "deploy/render.py"):
        assert option in done.stdout, option


def test_launch_builds_with_a_cloudbuild_config_and_no_tag_when_the_image_is_missing(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "gs://my-bucket/tiles/**/*.tif", "gs://my-bucket/out", describe_rc=1)
    assert done.returncode == 0, done.stderr
    builds = [c for c in calls if c[1:3] == ["builds", "submit"]]
    assert len(builds) == 1
    build = builds[0]
    assert "--tag" not in build and "-t" not in build
    assert _flag(build, "--config") == ["deploy/cloudbuild.yaml"]
    beam = re.search(r"^apache-beam==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert beam is not None
    image = "europe-west4-docker.pkg.dev/my-proj/tileseg/tileseg:abc1234"
    assert _flag(build, "--substitutions") == [f"_IMAGE={image},_BEAM_VERSION={beam.group(1)}"]
    template_builds = [c for c in calls if c[1:4] == ["dataflow", "flex-template", "build"]]
    assert len(template_builds) == 1
    assert template_builds[0][4] == "gs://my-bucket/templates/tileseg-abc1234.json"
    assert _flag(template_builds[0], "--image") == [image]
    assert _flag(template_builds[0], "--metadata-file") == ["deploy/metadata.json"]
    # built before launching
    order = [" ".join(c[1:4]) for c in calls if "describe" not in c]
    assert order == ["builds submit --project", "dataflow flex-template build", "dataflow flex-template run"]

    cloudbuild = yaml.safe_load((DEPLOY / "cloudbuild.yaml").read_text())
    assert set(cloudbuild["substitutions"]) == {"_IMAGE", "_BEAM_VERSION"}
    assert cloudbuild["images"] == ["${_IMAGE}"]
    steps = [" ".join(s["args"]) for s in cloudbuild["steps"]]
    assert "BEAM_VERSION=${_BEAM_VERSION}" in steps[0] and "-f deploy/Dockerfile" in steps[0]
    assert "/opt/tileseg/deploy/gpu_check.py --allow-cpu" in steps[1]


def test_launch_reuses_an_existing_image_and_passes_tileseg_options(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "gs://my-bucket/tiles/**/*.tif", "gs://my-bucket/out",
                          "--bands", "3,2,1", "--overwrite", "--batch_size=16", describe_rc=0)
    assert done.returncode == 0, done.stderr
    assert not [c for c in calls if c[1:3] == ["builds", "submit"] or c[1:4] == ["dataflow", "flex-template", "build"]]
    runs = [c for c in calls if c[1:4] == ["dataflow", "flex-template", "run"]]
    assert len(runs) == 1
    run = runs[0]
    assert _flag(run, "--template-file-gcs-location") == ["gs://my-bucket/templates/tileseg-abc1234.json"]
    assert [a for a in run if a.startswith("--parameters=")] == [
        "--parameters=input=gs://my-bucket/tiles/**/*.tif", "--parameters=output=gs://my-bucket/out",
        "--parameters=^~^bands=3,2,1", "--parameters=overwrite=true", "--parameters=batch_size=16"]
    assert _flag(run, "--parameters") == ["sdk_container_image=europe-west4-docker.pkg.dev/my-proj/tileseg/tileseg:abc1234"]
    experiments = _flag(run, "--additional-experiments")[0].split(",")
    assert "no_use_multiple_sdk_containers" not in experiments
    assert "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in experiments


def test_launch_checks_parameters_before_calling_gcloud(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "/local/tiles/*.tif", "gs://my-bucket/out")
    assert done.returncode == 2 and "input='/local/tiles/*.tif' does not match" in done.stderr
    assert calls == []
    done, calls = _launch(tmp_path, "gs://my-bucket/t/*.tif", "gs://my-bucket/out", "--stitch=mean")
    assert done.returncode == 2 and "stitch='mean'" in done.stderr and calls == []


def test_smoke_test_runs_gpu_check_in_the_image(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "--build-only", "--smoke-test")
    assert done.returncode == 0, done.stderr
    docker = [c for c in calls if c[0] == "docker"]
    assert docker == [["docker", "run", "--rm", "--gpus", "all", "--entrypoint", "python",
                       "europe-west4-docker.pkg.dev/my-proj/tileseg/tileseg:abc1234", "/opt/tileseg/deploy/gpu_check.py"]]
    assert not [c for c in calls if "run" in c[1:4] and c[0] == "gcloud"]


def test_nightly_schedule_runs_workers_like_launch_sh(tmp_path: Path) -> None:
    done, calls = _launch(tmp_path, "gs://my-bucket/t/*.tif", "gs://my-bucket/out")
    assert done.returncode == 0, done.stderr
    run = next(c for c in calls if c[1:4] == ["dataflow", "flex-template", "run"])
    out = tmp_path / "rendered"
    assert _render(out, VARIABLES).returncode == 0
    launch = json.loads((out / "nightly-launch.json").read_text())["launchParameter"]
    env = launch["environment"]
    assert _flag(run, "--template-file-gcs-location") == [launch["containerSpecGcsPath"]]
    assert _flag(run, "--worker-machine-type") == [env["machineType"]]
    assert _flag(run, "--max-workers") == [str(env["maxWorkers"])]
    assert _flag(run, "--additional-experiments")[0].split(",") == env["additionalExperiments"]
    assert _flag(run, "--temp-location") == [env["tempLocation"]]
    assert _flag(run, "--staging-location") == [env["stagingLocation"]]
    assert _flag(run, "--parameters") == [f"sdk_container_image={env['sdkContainerImage']}"]


# --- the image: version pins, CUDA libraries ---------------------------------------------------------


def _constraint(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)$", (REPO / "constraints.txt").read_text(), re.M | re.I)
    assert found, f"{name} is not pinned in constraints.txt"
    return found.group(1)


def _dockerfile_run_with(text: str) -> str:
    """The Dockerfile RUN instruction whose text contains ``text``, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    runs = [line[4:] for line in joined.splitlines() if line.startswith("RUN ") and text in line]
    assert len(runs) == 1, f"one RUN step with {text!r} expected"
    return runs[0]


def test_dockerfile_beam_version_default_agrees_with_constraints() -> None:
    default = re.search(r"^ARG BEAM_VERSION=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert default and default.group(1) == _constraint("apache-beam")
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in (DEPLOY / "Dockerfile").read_text()


@pytest.mark.parametrize(("pinned", "arg", "installed", "ok"), [
    ("2.77.0", "2.77.0", "2.77.0", True),
    ("2.77.0", "2.76.0", "2.76.0", False),  # image built from another Beam than constraints.txt
    ("2.77.0", "2.77.0", "2.76.0", False),  # a base image that is not what its tag says
])
def test_dockerfile_beam_check_fails_the_build_when_versions_disagree(
        tmp_path: Path, pinned: str, arg: str, installed: str, ok: bool) -> None:
    (tmp_path / "constraints.txt").write_text(f"absl-py==2.5.1\napache-beam=={pinned}\nzipp==4.1.2\n")
    fake_python = tmp_path / "bin" / "python"
    fake_python.parent.mkdir()
    fake_python.write_text(f"#!/bin/sh\necho {installed}\n")
    fake_python.chmod(0o755)
    env = {"PATH": f"{fake_python.parent}{os.pathsep}{os.environ['PATH']}", "BEAM_VERSION": arg}
    done = subprocess.run(["sh", "-c", _dockerfile_run_with("apache_beam.__version__")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode == 0) is ok
    if not ok:
        assert f"constraints.txt apache-beam=={pinned}, BEAM_VERSION={arg}, base image {installed}" in done.stderr


def test_dockerfile_installs_everything_and_stages_nothing_at_launch() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in re.sub(r"#.*", "", text)
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in re.sub(r"#.*", "", text)
    assert re.search(r"^COPY deploy/main\.py deploy/gpu_check\.py deploy/$", text, re.M)
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/tileseg/deploy/main.py" in text
    assert "-c deploy/gpu-constraints.txt" in _dockerfile_run_with('"tensorflow[and-cuda]"')
    assert "pip check" in _dockerfile_run_with("pip install --no-cache-dir -c constraints.txt -c deploy/gpu-constraints.txt .")
    assert "ldconfig" in _dockerfile_run_with("deploy/cuda_libs.py >")
    main = (DEPLOY / "main.py").read_text()
    assert "from pipelines.segment import main" in main


def test_gpu_constraints_pin_exactly_the_cuda_wheels_of_the_pinned_tensorflow() -> None:
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    assert version("tensorflow") == _constraint("tensorflow"), "the venv's TensorFlow is not constraints.txt's"
    wanted = {}
    for text in requires("tensorflow") or []:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}) and \
                not req.marker.evaluate({"extra": ""}):
            wanted[req.name] = req.specifier
    assert len(wanted) >= 10
    pins = dict(line.split("==") for line in (DEPLOY / "gpu-constraints.txt").read_text().split("\n")
                if line and not line.startswith("#"))
    assert set(pins) == set(wanted)
    for name, pinned in pins.items():
        assert wanted[name].contains(pinned), f"{name}=={pinned} is outside tensorflow's {wanted[name]}"


def test_cuda_lib_dirs_found_in_site_packages_and_checked_against_the_loader(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    for component, files in {"cublas": ["libcublas.so.12", "libcublasLt.so.12"], "cudnn": ["libcudnn.so.9"],
                             "cuda_nvcc": [], "nccl": ["libnccl.so.2"]}.items():
        lib = site / "nvidia" / component / "lib"
        lib.mkdir(parents=True)
        for f in files:
            (lib / f).write_bytes(b"")
    (site / "nvidia" / "cudnn" / "include").mkdir()
    dirs = cuda_libs.nvidia_lib_dirs([str(site)])
    assert dirs == [str((site / "nvidia" / c / "lib").resolve()) for c in ("cublas", "cudnn", "nccl")]
    cache = (f"3 libs found in cache `/etc/ld.so.cache'\n"
             f"\tlibcublas.so.12 (libc6,x86-64) => {dirs[0]}/libcublas.so.12\n"
             f"\tlibnccl.so.2 (libc6,x86-64) => {dirs[2]}/libnccl.so.2\n"
             f"\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6\n")
    assert cuda_libs.missing_from_cache(dirs, cache) == [dirs[1]]
    assert cuda_libs.driver_stubs(dirs) == []
    (Path(dirs[1]) / "libcuda.so.1").write_bytes(b"")
    assert cuda_libs.driver_stubs(dirs) == [f"{dirs[1]}/libcuda.so.1"]


# --- the image smoke test, on this CPU ---------------------------------------------------------------


def test_gpu_check_segments_one_patch_of_the_default_model_on_the_cpu() -> None:
    env = os.environ | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(DEPLOY / "gpu_check.py"), "--allow-cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    card = load_card(DEFAULT_MODEL)
    assert result["ok"] is True and result["gpu"] is False and result["device"] == "cpu"
    assert result["model"] == card.model_id
    assert result["patch"] == [card.patch_size, card.patch_size]
    assert result["precision"] in set(PRECISIONS) - {"auto"}
    assert result["seconds"] > 0
    histogram = {int(k): v for k, v in result["histogram"].items()}
    assert set(histogram) == set(range(card.num_classes))  # no label outside the card's classes
    assert sum(histogram.values()) == card.patch_size ** 2
    assert sum(1 for n in histogram.values() if n) >= 2, "a synthetic scene should show several classes"
    assert result["class_names"] == [c.name for c in card.classes]

    done = subprocess.run([sys.executable, str(DEPLOY / "gpu_check.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no GPU visible" in done.stderr and done.stdout == ""

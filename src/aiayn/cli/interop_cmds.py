"""The command line of model conversion: ``aiayn import`` (Hugging Face folder -> aiayn model folder)
and ``aiayn export`` (aiayn model folder -> Hugging Face folder, or CTranslate2 folder).

The conversions themselves are :mod:`aiayn.interop.pretrained`, :mod:`aiayn.interop.hf_export` and
:mod:`aiayn.interop.ct2`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import AiaynError
from .commands import add_overwrite


def _same_folder(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _cmd_import(args: argparse.Namespace) -> int:
    from ..interop.hf_files import is_hf_folder
    from ..interop.pretrained import load_initial, write_model_folder
    from ..training.rundir import claim_out_dir, create_out_dir, release_out_dir

    source, out = Path(args.hf_dir), Path(args.out)
    if not is_hf_folder(source):
        raise AiaynError(
            f"{source}: not a Hugging Face model folder (no config.json with a model_type)"
        )
    if _same_folder(source, out):
        raise AiaynError(f"--out {out}: is the folder being imported; choose another one")
    # The checks of `aiayn train --out`, before anything is read: a foreign folder is refused.
    claim_out_dir(out, args.overwrite)
    initial = load_initial(None, source)
    create_out_dir(out)
    try:
        write_model_folder(initial, out)
    finally:
        release_out_dir(out)
    parameters = sum(t.numel() for t in initial.build().parameters())
    print(json.dumps({"kind": initial.kind, "out": str(out), "parameters": parameters}))
    return 0


def _holds_aiayn_model(folder: Path) -> bool:
    from ..training.checkpoint import read_config
    from ..training.rundir import is_aiayn_run

    if is_aiayn_run(folder):
        return True
    try:
        read_config(folder)
    except AiaynError:
        return False
    return True


def _check_export_out(out: Path, overwrite: bool) -> None:
    """A new or empty folder; a non-empty one only with ``--overwrite``, never an aiayn folder
    (its ``config.json`` would be replaced by Hugging Face's)."""
    if out.exists() and not out.is_dir():
        raise AiaynError(f"--out {out}: is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if _holds_aiayn_model(out):
        raise AiaynError(
            f"--out {out}: holds an aiayn model, whose files the export would replace; "
            "choose another folder"
        )
    if not overwrite:
        raise AiaynError(
            f"--out {out}: the folder is not empty; choose a new folder, or pass --overwrite to "
            "write the Hugging Face files into it"
        )


def _cmd_export(args: argparse.Namespace) -> int:
    directory, out = Path(args.model_dir), Path(args.out)
    if _same_folder(directory, out):
        raise AiaynError(f"--out {out}: is the folder being exported; choose another one")
    if args.quantize and args.to != "ctranslate2":
        raise AiaynError("--quantize: only with --to ctranslate2 (a Hugging Face folder is float)")
    _check_export_out(out, args.overwrite)
    if args.to == "ctranslate2":
        print(json.dumps(_export_ctranslate2(directory, out, args.quantize)))
        return 0
    from ..interop.hf_export import export_hf

    print(json.dumps(export_hf(directory, out)))
    return 0


def _export_ctranslate2(directory: Path, out: Path, quantize: str | None) -> dict[str, object]:
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:
        raise AiaynError(
            "--to ctranslate2 needs the ctranslate2 package: pip install 'aiayn[ctranslate2]'"
        )
    from ..interop.ct2 import save_ctranslate2, save_ctranslate2_generator
    from ..interop.pretrained import read_model_folder

    initial = read_model_folder(directory)
    tokenizers = initial.tokenizers
    if initial.kind == "transformer":
        model = initial.build()
        save_ctranslate2(model, tokenizers["source"], tokenizers["target"], out, quantize)
    elif initial.kind == "gpt":
        save_ctranslate2_generator(initial.build(), tokenizers["text"], out, quantize)
    else:
        raise AiaynError(
            f"{directory}: a {initial.kind} model; --to ctranslate2 exports translation models "
            "(for its Translator) and GPTs (for its Generator)"
        )
    return {"kind": initial.kind, "format": "ctranslate2", "quantize": quantize, "out": str(out)}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``aiayn import`` and ``aiayn export``."""
    p = sub.add_parser(
        "import",
        help="convert a Hugging Face model folder (GPT-2, Llama, Marian, BERT, ViT) into an aiayn "
        "model folder",
        description="Reads config.json, the weights (safetensors only: pickles can run code) and "
        "the model's own tokenizer, so its token ids stay those of the weights: tokenizer.json, "
        "GPT-2's vocab.json + merges.txt, BERT's vocab.txt, or Marian's source.spm + target.spm "
        "+ vocab.json (needs the sentencepiece package). Prints {kind, out, parameters}.",
    )
    p.add_argument(
        "hf_dir", metavar="HF_DIR", help="folder written by save_pretrained (model and tokenizer)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="the aiayn model folder to write (a new or empty one; see --overwrite)",
    )
    add_overwrite(p)
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser(
        "export",
        help="convert an aiayn model folder into a Hugging Face or CTranslate2 model folder",
        description="Writes what save_pretrained writes (config.json, model.safetensors) and the "
        "tokenizer: tokenizer.json + tokenizer_config.json, or Marian's source.spm + target.spm "
        "+ vocab.json for a model imported with them; a ViT gets preprocessor_config.json. GPT "
        "becomes GPT2LMHeadModel or LlamaForCausalLM, a translation model MarianMTModel, BERT "
        "BertForMaskedLM, ViT ViTForImageClassification; text classifiers are not exported. "
        "--to ctranslate2 writes a translation model for CTranslate2's Translator, a GPT for its "
        "Generator (model.bin, config.json, the vocabularies, and the aiayn_*tokenizer.json "
        "files that make their pieces). Prints {kind, model_type, out} (hf) or {kind, format, quantize, out}.",
    )
    p.add_argument(
        "model_dir", metavar="DIR", help="aiayn model directory (written by aiayn train or import)"
    )
    p.add_argument(
        "--to",
        required=True,
        choices=("hf", "ctranslate2"),
        help="target format (hf: transformers' folder; ctranslate2: CTranslate2's, for "
        "translation models and GPTs, needs the ctranslate2 package)",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="with --to ctranslate2: int8 weights (CTranslate2's own quantisation; default float32)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="output folder (loadable by transformers' from_pretrained)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even though it is not empty (an aiayn folder is always refused)",
    )
    p.set_defaults(func=_cmd_export)

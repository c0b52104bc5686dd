"""fairseq ``transformer`` checkpoints <-> :class:`~radam_repro.models.transformer.Transformer`, without fairseq.

Weight names (fairseq -> ours)::

    {encoder,decoder}.embed_tokens.weight           -> {encoder,decoder}_embed.weight
    decoder.output_projection.weight                -> output_projection (absent when tied)
    {enc,dec}.layers.N.{self_attn,encoder_attn}.{q,k,v}_proj.{weight,bias}
                                                    -> {..}_layers.N.{..}.in_proj_{weight,bias} = cat(q, k, v)
    *.out_proj.*                                    -> unchanged
    *.layers.N.fc1 / fc2                            -> *.layers.N.ffn.fc1 / ffn.fc2
    encoder .self_attn_layer_norm / decoder .self_attn_layer_norm -> attn_block.norm / self_attn_block.norm
    .encoder_attn_layer_norm, .final_layer_norm     -> encoder_attn_block.norm, ffn_block.norm
    {encoder,decoder}.layer_norm (pre-norm only)    -> {encoder,decoder}_norm
    *.version, *._float_tensor                      -> dropped (re-created on export)

Checkpoints load with ``torch.load(weights_only=True)``; the few non-tensor globals fairseq pickles
(``argparse.Namespace`` of old checkpoints, numpy scalars of its meters) are allow-listed for that
call only. The architecture comes from the weights' shapes plus the attention heads from the
checkpoint's ``cfg.model`` / ``args``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from radam_repro.errors import CorruptFile, zip_damage
from radam_repro.models.transformer import Transformer, TransformerConfig

SAFE_GLOBALS = [argparse.Namespace]
LAYER_NORMS = {  # fairseq name -> ours, per side
    "encoder": {"self_attn_layer_norm": "attn_block.norm", "final_layer_norm": "ffn_block.norm"},
    "decoder": {
        "self_attn_layer_norm": "self_attn_block.norm",
        "encoder_attn_layer_norm": "encoder_attn_block.norm",
        "final_layer_norm": "ffn_block.norm",
    },
}
ARCHITECTURE_KEYS = {  # ours -> fairseq's: what the architecture is read from
    "encoder_embed.weight": "encoder.embed_tokens.weight",
    "decoder_embed.weight": "decoder.embed_tokens.weight",
    "encoder_layers.0.ffn.fc1.weight": "encoder.layers.0.fc1.weight",
}
FAIRSEQ_VERSION = torch.tensor([3.0])  # fairseq's TransformerEncoder/Decoder state version: no upgrades on load


def load(path: str | Path) -> dict[str, Any]:
    """A fairseq checkpoint, read with ``weights_only=True`` and only :data:`SAFE_GLOBALS` allowed.

    A file that fails its zip CRC-32s, does not load that way, or holds no ``model`` mapping of tensors, is
    :class:`CorruptFile`.
    """
    if (damage := zip_damage(path)) is not None:
        raise CorruptFile(path, f"fairseq checkpoint {path}: {damage}: the file is damaged")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, damaged, or Python objects that weights_only refuses
        raise CorruptFile(
            path,
            f"cannot load checkpoint {path} safely (torch.load weights_only=True): "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}",
        ) from None
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in model.items()):
        raise CorruptFile(path, f"{path} is not a checkpoint: it holds no 'model' mapping of tensors")
    return checkpoint


def is_fairseq_state(state: dict[str, Tensor]) -> bool:
    return "encoder.embed_tokens.weight" in state


def to_radam(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A fairseq ``transformer`` state dict in our names (q/k/v concatenated into ``in_proj``)."""
    out, qkv = {}, {}
    for name, value in state.items():
        if name.endswith((".version", "._float_tensor")):
            continue
        side, rest = name.split(".", 1)
        if side not in LAYER_NORMS:
            raise ValueError(f"unexpected fairseq parameter {name!r}: only encoder.* and decoder.* are mapped")
        if rest == "embed_tokens.weight":
            out[f"{side}_embed.weight"] = value
        elif rest == "output_projection.weight":
            out["output_projection"] = value
        elif rest.startswith("layer_norm."):
            out[f"{side}_norm.{rest.split('.', 1)[1]}"] = value
        elif match := re.fullmatch(r"layers\.(\d+)\.(\w+)\.(.+)", rest):
            layer, module, param = match.groups()
            prefix = f"{side}_layers.{layer}"
            if proj := re.fullmatch(r"([qkv])_proj\.(weight|bias)", param):
                qkv.setdefault(f"{prefix}.{module}.in_proj_{proj.group(2)}", {})[proj.group(1)] = value
            elif module in ("fc1", "fc2"):
                out[f"{prefix}.ffn.{module}.{param}"] = value
            elif module in LAYER_NORMS[side]:
                out[f"{prefix}.{LAYER_NORMS[side][module]}.{param}"] = value
            else:
                out[f"{prefix}.{module}.{param}"] = value
        else:
            raise ValueError(
                f"unexpected fairseq parameter {name!r} (learned positions, layernorm_embedding and "
                "adaptive softmax are not part of our Transformer)"
            )
    for name, parts in qkv.items():
        if missing := [f"{letter}_proj" for letter in "qkv" if letter not in parts]:
            raise ValueError(f"the attention parameters of {name.rsplit('.', 1)[0]} lack {', '.join(missing)}")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    embed = out.get("decoder_embed.weight")
    if "output_projection" in out and embed is not None and torch.equal(out["output_projection"], embed):
        del out["output_projection"]  # tied (share_decoder_input_output_embed / share_all_embeddings)
    return out


def to_fairseq(state: dict[str, Tensor], tied_output: bool) -> dict[str, Tensor]:
    """Our state dict in fairseq's ``transformer`` names (the inverse of :func:`to_radam`)."""
    inverse = {side: {ours: theirs for theirs, ours in norms.items()} for side, norms in LAYER_NORMS.items()}
    out = {}
    for name, value in state.items():
        if name in ("encoder_embed.weight", "decoder_embed.weight"):
            out[f"{name.split('_')[0]}.embed_tokens.weight"] = value
        elif name == "output_projection":
            out["decoder.output_projection.weight"] = value
        elif name.startswith(("encoder_norm.", "decoder_norm.")):
            side, param = name.split("_norm.")
            out[f"{side}.layer_norm.{param}"] = value
        else:
            match = re.fullmatch(r"(encoder|decoder)_layers\.(\d+)\.(.+)", name)
            side, layer, rest = match.groups()
            prefix = f"{side}.layers.{layer}"
            if proj := re.fullmatch(r"(\w+)\.in_proj_(weight|bias)", rest):
                for letter, part in zip("qkv", value.chunk(3)):
                    out[f"{prefix}.{proj.group(1)}.{letter}_proj.{proj.group(2)}"] = part.clone()
            elif rest.startswith("ffn."):
                out[f"{prefix}.{rest[4:]}"] = value
            elif (block := rest.rsplit(".", 1)[0]) in inverse[side]:
                out[f"{prefix}.{inverse[side][block]}.{rest.rsplit('.', 1)[1]}"] = value
            else:
                out[f"{prefix}.{rest}"] = value
    if tied_output:
        out["decoder.output_projection.weight"] = out["decoder.embed_tokens.weight"]
    for side in ("encoder", "decoder"):
        out[f"{side}.version"] = FAIRSEQ_VERSION.clone()
        out[f"{side}.embed_positions._float_tensor"] = torch.FloatTensor(1)
    return out


def model_options(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's model options: ``cfg["model"]`` (a Namespace for fairseq's legacy archs) or ``args`` (older)."""
    for options in ((checkpoint.get("cfg") or {}).get("model"), checkpoint.get("args")):
        if options is not None:
            return dict(vars(options)) if isinstance(options, argparse.Namespace) else dict(options)
    return {}


def architecture(checkpoint: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Any]:
    """Our :class:`TransformerConfig` keys for a fairseq checkpoint (``state`` already in our names)."""
    options = model_options(checkpoint)
    if (
        options.get("activation_fn", "relu") != "relu"
        or options.get("no_scale_embedding")
        or options.get("layernorm_embedding")
    ):
        raise ValueError(
            "only fairseq's ReLU transformer with scaled embeddings and no layernorm_embedding maps "
            f"onto our Transformer (activation_fn={options.get('activation_fn')!r})"
        )
    heads = options.get("encoder_attention_heads") or (options.get("encoder") or {}).get("attention_heads")
    if not heads:
        raise ValueError("the checkpoint names no encoder_attention_heads (neither cfg.model nor args)")
    count = lambda side: len({k.split(".")[1] for k in state if k.startswith(f"{side}_layers.")})  # noqa: E731
    if missing := [k for k in ARCHITECTURE_KEYS if k not in state]:
        raise ValueError(
            f"the checkpoint lacks {', '.join(ARCHITECTURE_KEYS[k] for k in missing)}: not a complete transformer"
        )
    encoder_embed, decoder_embed = state["encoder_embed.weight"], state["decoder_embed.weight"]
    return dict(
        src_vocab_size=encoder_embed.size(0),
        tgt_vocab_size=decoder_embed.size(0),
        padding_idx=1,
        d_model=encoder_embed.size(1),
        ffn_dim=state["encoder_layers.0.ffn.fc1.weight"].size(0),
        heads=int(heads),
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        pre_norm="encoder_norm.weight" in state,
        share_all_embeddings=bool(options.get("share_all_embeddings", False)),
        share_decoder_input_output_embed="output_projection" not in state,
        max_positions=int(options.get("max_source_positions") or 1024),
        dropout=float(options.get("dropout", 0.1)),
        attention_dropout=float(options.get("attention_dropout", 0.0)),
        activation_dropout=float(options.get("activation_dropout") or options.get("relu_dropout") or 0.0),
    )


def average(states: Iterable[tuple[Path, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """fairseq ``scripts/average_checkpoints.py``: the element-wise mean (float64 sums) of ``(path, state dict)`` pairs.

    Every state must hold the first one's parameters with the same shapes; else :class:`CorruptFile` names
    the file and the parameter (no broadcasting).
    """
    total: dict[str, Tensor] = {}
    for count, (path, state) in enumerate(states):
        if count == 0:
            first, reference = path, {key: (value.shape, value.dtype) for key, value in state.items()}
        elif state.keys() != reference.keys():
            differ = sorted(state.keys() ^ reference.keys())
            raise CorruptFile(
                path, f"{path} holds other parameters than {first} ({', '.join(differ[:3])}): cannot average them"
            )
        for key, value in state.items():
            if value.shape != reference[key][0]:
                raise CorruptFile(
                    path,
                    f"{path}: {key} has shape {list(value.shape)} but {list(reference[key][0])} in {first}: "
                    "checkpoints of different models cannot be averaged",
                )
            total[key] = total[key] + value.double() if key in total else value.double()
    return {key: (value / (count + 1)).to(reference[key][1]) for key, value in total.items()}


def as_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]


def import_weights(paths: str | Path | Iterable[str | Path]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Our state dict (averaged over several checkpoints) and architecture from fairseq checkpoint(s)."""
    paths = as_paths(paths)
    states, checkpoint = [], {}
    for path in paths:
        checkpoint = load(path)
        if not is_fairseq_state(checkpoint["model"]):
            raise CorruptFile(
                path, f"{path} is not a fairseq transformer checkpoint (no model.encoder.embed_tokens.weight)"
            )
        try:
            states.append((path, to_radam(checkpoint["model"])))
        except (ValueError, RuntimeError) as e:  # a missing or misshapen q/k/v part: torch.cat's error
            raise CorruptFile(path, f"fairseq checkpoint {path}: {e}") from None
    state = states[0][1] if len(states) == 1 else average(states)
    try:
        return state, architecture(checkpoint, state)
    except (ValueError, IndexError) as e:  # a missing key, or an embedding that is not a matrix
        raise CorruptFile(paths[-1], f"fairseq checkpoint {paths[-1]}: {e}") from None


def load_model(paths: str | Path | Iterable[str | Path], **overrides: Any) -> Transformer:
    """Our :class:`Transformer` with the weights of fairseq checkpoint(s) (averaged if several), in eval mode."""
    paths = as_paths(paths)
    state, arch = import_weights(paths)
    model = Transformer(TransformerConfig(**{**arch, **overrides}))
    load_weights(model, state, paths)
    return model.eval()


def load_weights(model: Transformer, state: dict[str, Tensor], paths: list[Path]) -> None:
    """``model.load_state_dict(state)``; a missing, extra or misshapen parameter is :class:`CorruptFile` naming it."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        problems = " ".join(str(e).split())[:600]
        names = ", ".join(map(str, paths))
        raise CorruptFile(paths[-1], f"fairseq checkpoint {names} does not fit our Transformer: {problems}") from None


def export(
    model: Transformer, path: str | Path, *, source_lang: str, target_lang: str, data: str = "", num_updates: int = 0
) -> None:
    """Save ``model`` as a checkpoint that ``fairseq-generate``/``fairseq-train --restore-file`` read.

    The model options written to ``cfg.model`` (arch ``transformer``) describe our architecture;
    the data-bin folder is given on the fairseq command line as usual.
    """
    cfg = model.cfg
    tied = cfg.share_all_embeddings or cfg.share_decoder_input_output_embed
    side = lambda prefix, layers: {
        f"{prefix}_embed_dim": cfg.d_model,
        f"{prefix}_ffn_embed_dim": cfg.ffn_dim,  # noqa: E731
        f"{prefix}_layers": layers,
        f"{prefix}_attention_heads": cfg.heads,
        f"{prefix}_normalize_before": cfg.pre_norm,
        f"{prefix}_learned_pos": False,
    }
    model_cfg = {
        "_name": "transformer",
        "arch": "transformer",
        **side("encoder", cfg.encoder_layers),
        **side("decoder", cfg.decoder_layers),
        "decoder_output_dim": cfg.d_model,
        "decoder_input_dim": cfg.d_model,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation_dropout": cfg.activation_dropout,
        "activation_fn": "relu",
        "share_all_embeddings": cfg.share_all_embeddings,
        "share_decoder_input_output_embed": cfg.share_decoder_input_output_embed,
        "max_source_positions": cfg.max_positions,
        "max_target_positions": cfg.max_positions,
    }
    task_cfg = {"_name": "translation", "data": data, "source_lang": source_lang, "target_lang": target_lang}
    state = {
        "args": None,
        "cfg": {"_name": None, "model": model_cfg, "task": task_cfg},
        "model": to_fairseq(model.state_dict(), tied),
        "optimizer_history": [
            {
                "criterion_name": "LabelSmoothedCrossEntropyCriterion",
                "optimizer_name": "RAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": num_updates,
            }
        ],
        "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


STRUCTURE = (
    "src_vocab_size",
    "tgt_vocab_size",
    "d_model",
    "ffn_dim",
    "heads",
    "encoder_layers",
    "decoder_layers",
    "pre_norm",
    "share_all_embeddings",
)


def initialise(model: Transformer, paths: str | Path | Iterable[str | Path]) -> None:
    """Load fairseq checkpoint(s) (averaged if several) into ``model``; a differing architecture is named."""
    paths = as_paths(paths)
    state, arch = import_weights(paths)
    differ = {key: (arch[key], getattr(model.cfg, key)) for key in STRUCTURE if arch[key] != getattr(model.cfg, key)}
    tied = model.cfg.share_all_embeddings or model.cfg.share_decoder_input_output_embed
    if arch["share_decoder_input_output_embed"] != tied:
        differ["share_decoder_input_output_embed"] = (arch["share_decoder_input_output_embed"], tied)
    if differ:
        raise ValueError(
            f"fairseq checkpoint {paths} does not fit the task's model: "
            + ", ".join(f"{key}={theirs} in the checkpoint but {ours} here" for key, (theirs, ours) in differ.items())
            + ". Set the matching task.model.* keys; vocabulary sizes come from the dictionaries, so train on the "
            "data-bin folder (dict.*.txt) the checkpoint was trained with."
        )
    load_weights(model, state, paths)

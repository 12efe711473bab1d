"""The rows the accuracy benchmark trains: one width and depth for every model, the recipe
candidates of `full` (``accuracy --select-full``) and the CRT ablations (``accuracy --ablations``).
"""

from __future__ import annotations

TRANSFORMER = {"d_model": 64, "depth": 1, "heads": 4, "dropout": 0.1}
# Recipes for `full`, compared on the validation clips of fold 0 only (``--select-full``); the
# test clips of the main table never choose a recipe.
FULL_CANDIDATES: dict[str, dict] = {
    "sinusoidal, token": {
        "model": {**TRANSFORMER, "type": "full", "pool": "token"},
        "train": {"lr": 5e-4, "warmup_epochs": 3},
    },
    "sinusoidal, embed norm, mean": {
        "model": {**TRANSFORMER, "type": "full", "embed_norm": True},
        "train": {},
    },
    "rotary, mean": {"model": {**TRANSFORMER, "type": "full", "positions": "rotary"}, "train": {}},
    "rotary, max": {
        "model": {**TRANSFORMER, "type": "full", "positions": "rotary", "pool": "max"},
        "train": {},
    },
    "rotary, embed norm, mean": {
        "model": {**TRANSFORMER, "type": "full", "positions": "rotary", "embed_norm": True},
        "train": {},
    },
    "rotary, embed norm, max": {
        "model": {
            **TRANSFORMER,
            "type": "full",
            "positions": "rotary",
            "embed_norm": True,
            "pool": "max",
        },
        "train": {},
    },
}
FULL_RECIPE = "rotary, embed norm, mean"


def crt_model(num_frames: int, k: int, cell: str = "gru", **keys: object) -> dict:
    """The paper's CRT (the model defaults) at segments of T/k frames, with ``keys`` changed."""
    return {
        **TRANSFORMER,
        "type": "crt",
        "memory_cell": cell,
        "segment_len": num_frames // k,
        **keys,
    }


def model_variants(num_frames: int, smoke: bool) -> dict[str, dict]:
    """name -> {"model": model config, "train": recipe overrides} at one width and depth: the
    paper's CRT, Transformer-XL at the same segment lengths, and the other baselines."""
    variants = {}
    for cell in ("gru", "ncgru"):
        for k in (4, 8, 16):
            variants[f"crt {cell} S=T/{k}"] = {"model": crt_model(num_frames, k, cell), "train": {}}
    for k in (4, 8, 16):
        variants[f"xl S=T/{k}"] = {
            "model": {**TRANSFORMER, "type": "xl", "segment_len": num_frames // k},
            "train": {},
        }
    # one recurrent layer as wide as the Transformers (it has no heads)
    variants["gru"] = {
        "model": {key: TRANSFORMER[key] for key in ("d_model", "depth", "dropout")}
        | {"type": "gru"},
        "train": {},
    }
    variants["segment S=T/8"] = {
        "model": {**TRANSFORMER, "type": "segment", "segment_len": num_frames // 8},
        "train": {},
    }
    # one factor at a time against "crt gru S=T/4": the memory alone removed (crt's position
    # RNN kept), and crt reading its clip as xl does (the mean of the frame outputs)
    variants["segment S=T/4, recurrent positions"] = {
        "model": {
            **TRANSFORMER,
            "type": "segment",
            "segment_len": num_frames // 4,
            "positions": "recurrent",
        },
        "train": {},
    }
    variants["crt gru S=T/4, mean head (as xl)"] = {
        "model": crt_model(num_frames, 4, head="mean"),
        "train": {},
    }
    variants[f"full ({FULL_RECIPE})"] = FULL_CANDIDATES[FULL_RECIPE]
    variants["meanpool"] = {"model": {"type": "meanpool"}, "train": {}}
    if smoke:
        keep = ("crt gru S=T/4", "xl S=T/4", "gru", f"full ({FULL_RECIPE})", "meanpool")
        variants = {name: variants[name] for name in keep}
    return variants


# The paper's CRT, the reference of every ablation row.
ABLATION_REFERENCE = "crt gru S=T/4"
# name -> (k of S=T/k, CRT keys changed from the paper's): the paper's table 8 in video form
# (each of its two RNNs removed, then both: the earlier variant), a 32-number position RNN
# (position_dim 32: fewer FLOPs than xl, see the cost table) and the memory's gates at spread
# time scales.
ABLATIONS: dict[str, tuple[int, dict]] = {
    ABLATION_REFERENCE: (4, {}),
    "crt gru S=T/4, memory RNN only": (4, {"memory_read": "sequence", "positions": "learned"}),
    "crt gru S=T/4, position RNN only": (4, {"memory_read": "token", "positions": "recurrent"}),
    "crt gru S=T/4, neither (earlier variant)": (
        4,
        {"memory_read": "token", "positions": "learned"},
    ),
    "crt gru S=T/4, 32-number position RNN": (4, {"position_dim": 32}),
    # the memory's gates: time scales spread log-uniformly up to 30 min (crt_video 0.4 to 0.6's
    # default) instead of every unit at one time scale of 1 + e^4 = 56 frames
    "crt gru S=T/4, time scales to 30 min": (
        4,
        {"memory_horizon": 1800.0, "memory_gate_bias": None},
    ),
}


def ablation_variants(num_frames: int, smoke: bool) -> dict[str, dict]:
    """The rows of ``accuracy --ablations``, as ``model_variants``; all but the reference are
    marked ``ablation``."""
    names = (ABLATION_REFERENCE, "crt gru S=T/4, neither (earlier variant)") if smoke else ABLATIONS
    return {
        name: {
            "model": crt_model(num_frames, ABLATIONS[name][0], **ABLATIONS[name][1]),
            "train": {},
            "ablation": name != ABLATION_REFERENCE,
        }
        for name in names
    }

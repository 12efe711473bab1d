import sys

import pytest
import timm
import torch
import torch.nn.functional as F

from crt_video.errors import ConfigError
from crt_video.models.crvit import CRViT
from crt_video.models.timesformer import TimeSformer, TimeSformerConfig
from crt_video.models.timesformer_weights import load_pretrained

# A depth-2 VisionTransformer(attention_type='divided_space_time') of facebookresearch/TimeSformer
# (timesformer/models/vit.py), as its .pyth files store it: under "model_state", each key
# prefixed "model." by the vit_base_patch16_224 wrapper.
OFFICIAL_BLOCK = [
    "norm1",
    "attn.qkv",
    "attn.proj",
    "temporal_norm1",
    "temporal_attn.qkv",
    "temporal_attn.proj",
    "temporal_fc",
    "norm2",
    "mlp.fc1",
    "mlp.fc2",
]
OFFICIAL_KEYS = [
    "cls_token",
    "pos_embed",
    "time_embed",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    *(
        f"blocks.{i}.{module}.{param}"
        for i in range(2)
        for module in OFFICIAL_BLOCK
        for param in ("weight", "bias")
    ),
    "norm.weight",
    "norm.bias",
    "head.weight",
    "head.bias",
]
WIDTH = 64


def tiny(**overrides) -> TimeSformerConfig:
    keys = dict(img_size=32, patch_size=16, num_frames=8, embed_dim=WIDTH, depth=2, num_heads=2)
    return TimeSformerConfig(**{**keys, **overrides})


def official_state(num_frames: int = 8, grid: int = 2, num_classes: int = 400) -> dict:
    """Random tensors under the official names, with the official shapes of a tiny model."""
    shapes = {
        "cls_token": (1, 1, WIDTH),
        "pos_embed": (1, 1 + grid * grid, WIDTH),
        "time_embed": (1, num_frames, WIDTH),
        "patch_embed.proj.weight": (WIDTH, 3, 16, 16),
        "head.weight": (num_classes, WIDTH),
        "head.bias": (num_classes,),
    }
    for key in OFFICIAL_KEYS:
        if key not in shapes:
            module = key.split(".")[-2]
            rows = {"qkv": 3 * WIDTH, "fc1": 4 * WIDTH}.get(module, WIDTH)
            columns = 4 * WIDTH if module == "fc2" else WIDTH
            shapes[key] = (
                (rows, columns) if key.endswith("weight") and "norm" not in key else (rows,)
            )
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(shapes[key], generator=generator) for key in OFFICIAL_KEYS}


def save_official(path, state: dict) -> str:
    checkpoint = {
        "epoch": 15,
        "model_state": {f"model.{key}": value for key, value in state.items()},
        "optimizer_state": {},
        "cfg": "TRAIN:\n  ENABLE: true\nDATA:\n  NUM_FRAMES: 8\n",  # official: cfg.dump()
    }
    torch.save(checkpoint, path)
    return str(path)


def test_official_names_are_this_models_names():
    model = TimeSformer(3, 5, tiny())
    assert list(model.state_dict()) == OFFICIAL_KEYS


def test_official_pyth_loads_every_tensor(tmp_path, logs):
    state = official_state()
    path = save_official(tmp_path / "TimeSformer_divST_8x32_224_K400.pyth", state)
    model = TimeSformer(3, 5, tiny())
    report = load_pretrained(model, path)
    assert (report.layout, report.mapped) == ("official", len(OFFICIAL_KEYS) - 2)
    assert report.new == ("head.weight", "head.bias") and report.interpolated == ()
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("head."):
            assert torch.equal(loaded[key], value), key
    assert model.head.weight.shape == (5, WIDTH)  # its own head, not the file's 400 classes
    assert any(
        f"loaded {report.mapped} tensors of {path}" in record.getMessage()
        for record in logs.records
    )


def test_config_pretrained_loads_in_the_constructor(tmp_path):
    state = official_state()
    path = save_official(tmp_path / "k400.pyth", state)
    model = TimeSformer(3, 5, tiny(pretrained=path))
    assert torch.equal(
        model.blocks[1].temporal_attn.qkv.weight, state["blocks.1.temporal_attn.qkv.weight"]
    )


def test_eight_time_embeddings_spread_over_sixteen_frames(tmp_path, logs):
    state = official_state(num_frames=8)
    path = save_official(tmp_path / "k400.pyth", state)
    model = TimeSformer(3, 5, tiny(num_frames=16))
    report = load_pretrained(model, path)
    assert report.interpolated == ("time_embed 8->16",)
    # nearest, as the official loader: frames 2k and 2k+1 share entry k
    assert torch.equal(model.time_embed, state["time_embed"].repeat_interleave(2, dim=1))
    assert any("interpolated: time_embed 8->16" in record.getMessage() for record in logs.records)


def test_position_embeddings_follow_a_larger_image(tmp_path):
    state = official_state(grid=2)
    path = save_official(tmp_path / "k400.pyth", state)
    model = TimeSformer(3, 5, tiny(img_size=64))  # a 4x4 grid
    report = load_pretrained(model, path)
    assert report.interpolated == ("pos_embed 5->17",)
    assert torch.equal(model.pos_embed[:, :1], state["pos_embed"][:, :1])  # the class entry
    grid = state["pos_embed"][:, 1:].reshape(1, 2, 2, WIDTH).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model.pos_embed[:, 1:], expected.flatten(2).transpose(1, 2))


def hf_model(num_frames: int = 4):
    transformers = pytest.importorskip("transformers")
    config = transformers.TimesformerConfig(
        image_size=32,
        patch_size=16,
        num_frames=num_frames,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * WIDTH,
        num_labels=5,
    )
    torch.manual_seed(0)
    model = transformers.TimesformerForVideoClassification(config).eval()
    with torch.no_grad():  # random everywhere, so no zero-initialised tensor hides a mix-up
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def test_hugging_face_model_gives_the_same_features(tmp_path):
    hf = hf_model(num_frames=4)
    hf.save_pretrained(tmp_path / "hf")  # model.safetensors and config.json
    model = TimeSformer(3, 5, tiny(num_frames=4, mlp_ratio=2.0)).eval()
    report = load_pretrained(model, tmp_path / "hf")
    assert report.layout == "huggingface"
    assert report.mapped == len(hf.state_dict()) - 2 and report.new == ("head.weight", "head.bias")
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        expected = hf.timesformer(pixel_values=clip).last_hidden_state[:, 0]
        torch.testing.assert_close(model.forward_features(clip), expected, rtol=1e-5, atol=1e-5)


def test_pretrained_true_reads_the_hub_model(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    hf_model(num_frames=8).save_pretrained(tmp_path / "hub")
    asked = []

    def download(repo, name):
        asked.append((repo, name))
        return str(tmp_path / "hub" / name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    report = load_pretrained(TimeSformer(3, 5, tiny(mlp_ratio=2.0)), True)
    assert asked == [("facebook/timesformer-base-finetuned-k400", "model.safetensors")]
    assert report.layout == "huggingface"


def test_pretrained_true_without_the_hub_client_asks_for_a_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ConfigError, match="pass a local weights file") as err:
        TimeSformer(3, 5, tiny(pretrained=True))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "other, key",
    [
        (dict(embed_dim=192, num_heads=3), "cls_token is [1, 1, 192]"),  # vit_tiny's width
        (dict(embed_dim=WIDTH, num_heads=2), "has no time_embed"),  # a ViT of the same width
    ],
)
def test_another_architecture_is_a_one_line_error(tmp_path, other, key):
    vit = timm.models.VisionTransformer(img_size=32, patch_size=16, depth=2, **other)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ConfigError, match="weights for another architecture") as err:
        TimeSformer(3, 5, tiny(pretrained=str(tmp_path / "vit.pth")))
    assert key in str(err.value) and str(tmp_path / "vit.pth") in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unexpected_key_is_an_error(tmp_path):
    state = official_state()
    state["blocks.2.norm1.weight"] = torch.ones(WIDTH)  # a deeper model
    path = save_official(tmp_path / "deep.pyth", state)
    with pytest.raises(ConfigError, match="has blocks.2.norm1.weight, which the model does not"):
        load_pretrained(TimeSformer(3, 5, tiny()), path)


@pytest.mark.parametrize("content", [None, {"weights": [1, 2]}])
def test_a_file_that_is_not_weights_is_an_error(tmp_path, content):
    path = tmp_path / "odd.pth"
    if content is not None:
        torch.save(content, path)
    with pytest.raises(ConfigError, match="odd.pth"):
        load_pretrained(TimeSformer(3, 5, tiny()), path)


def test_stage_one_timesformer_loads_into_crvit(tmp_path):
    torch.manual_seed(0)
    stage_one = TimeSformer(3, 5, tiny()).eval()
    with torch.no_grad():
        for block in stage_one.blocks:
            block.temporal_fc.weight.normal_(std=0.1)
    # as a crt_video training checkpoint stores it
    torch.save({"model": stage_one.state_dict(), "class_names": ["a"]}, tmp_path / "best.pth")
    config = tiny(pretrained=str(tmp_path / "best.pth"), iterations=1, memory_slot="token_add")
    crvit = CRViT(3, 7, config).eval()
    report = load_pretrained(crvit, tmp_path / "best.pth")
    assert report.layout == "crt_video"
    assert {key.split(".")[0] for key in report.new} == {"head", "memory_cell"}
    for key, value in stage_one.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(crvit.state_dict()[key], value), key
    # One iteration from a zero memory added to the time attention is the TimeSformer itself.
    head_inputs = []
    crvit.head.register_forward_pre_hook(lambda _, args: head_inputs.append(args[0]))
    clip = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        crvit(clip)
        features = stage_one.forward_features(clip)
    torch.testing.assert_close(head_inputs[0], torch.cat([features, features], 1))


@pytest.mark.parametrize("slot", ["key_value", "token"])
def test_crvit_memory_embedding_is_new_with_a_memory_token(tmp_path, slot):
    stage_one = TimeSformer(3, 5, tiny()).state_dict()
    torch.save(stage_one, tmp_path / "stage1.pth")
    crvit = CRViT(3, 5, tiny(memory_slot=slot))
    report = load_pretrained(crvit, tmp_path / "stage1.pth")
    assert "memory_embed" in report.new
    assert all(key.startswith(("head.", "memory_")) for key in report.new)
    for key, value in stage_one.items():  # the blocks' weights, temporal_fc's among them, 1:1
        if not key.startswith("head."):
            assert torch.equal(crvit.state_dict()[key], value), key

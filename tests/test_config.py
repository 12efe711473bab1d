import json
import pickle
from pathlib import Path

import pytest

from crt_video.config import config_hash, dump_config, load_config
from crt_video.errors import ConfigError
from crt_video.run_config import load_run_config


def load(path: Path, options: list[str] | None = None) -> dict:
    """The merged config dict, after every section has been typed and checked."""
    return load_run_config(path, options).source


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Training configs; configs/serve/ holds the home service's (tests/test_serve_parts.py)
SHIPPED = sorted(
    p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts and "serve" not in p.parts
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def base_dir(tmp_path):
    """A tiny config tree: a base folder defining keys and a child inheriting them."""
    write(
        tmp_path,
        "_base_/runtime.py",
        "data_root = 'data'\nprotocol = 'cs'\nval_mode = 'subjects'\nwork_dir = None\n"
        "cache_dir = 'cache'\nseed = 0\ndevice = 'auto'\nsampling = dict(fps=4.0, max_frames=None)\n"
        "demo = None\n",
    )
    write(
        tmp_path,
        "_base_/model.py",
        "encoder = dict(name='vit_tiny_patch16_224', pretrained=True, kwargs=dict(img_size=32))\n"
        "model = dict(type='crt', depth=2, segment_len=16)\n"
        "train = dict(epochs=30, batch_size=32, crop_ratio=(0.8, 1.0))\n",
    )
    return tmp_path


def child(folder: Path, body: str, name: str = "child.py") -> Path:
    bases = "_base_ = ['_base_/runtime.py', '_base_/model.py']\n"
    return write(folder, name, bases + body)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_loads_and_is_plain_data(path):
    cfg = load(path)
    assert cfg["_config_name"] == path.stem
    assert cfg["protocol"] in ("cs", "cv1", "cv2", "cv", "thumos14")  # cv: TSU cross-view
    assert cfg["sampling"]["fps"] > 0
    assert cfg["model"]["type"] in ("crt", "segment", "full", "meanpool", "timesformer", "crvit")
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    json.dumps(cfg)


def test_shipped_protocols_and_demo_marker():
    assert load(CONFIGS / "smarthome_cv2.py")["protocol"] == "cv2"
    assert load(CONFIGS / "smarthome_cs.py")["demo"] is None
    demo = load(CONFIGS / "demo.py")
    assert demo["demo"]["seed"] == 0
    assert demo["encoder"]["pretrained"] is False
    assert demo["train"]["lr"] == load(CONFIGS / "smarthome_cs.py")["train"]["lr"]


def test_child_merges_into_bases_key_by_key(base_dir):
    cfg = load(child(base_dir, "model = dict(depth=1)\ntrain = dict(epochs=3)\n"))
    assert cfg["model"] == {"type": "crt", "depth": 1, "segment_len": 16}
    assert cfg["train"]["epochs"] == 3
    assert cfg["train"]["batch_size"] == 32
    assert "_base_" not in cfg


def test_delete_replaces_the_base_dict(base_dir):
    cfg = load(child(base_dir, "model = dict(_delete_=True, type='meanpool')\n"))
    assert cfg["model"] == {"type": "meanpool"}


def test_chained_inheritance_resolves_paths_relative_to_each_file(base_dir):
    child(base_dir, "protocol = 'cv1'\n", name="a.py")
    write(base_dir, "sub/b.py", "_base_ = '../a.py'\ntrain = dict(epochs=1)\n")
    cfg = load(base_dir / "sub/b.py")
    assert (cfg["protocol"], cfg["train"]["epochs"], cfg["_config_name"]) == ("cv1", 1, "b")


def test_cfg_options_parse_python_literals(base_dir):
    options = [
        "train.epochs=5",
        "train.crop_ratio=(0.5, 1.0)",
        "encoder.pretrained=False",
        "sampling.max_frames=None",
        "data_root=/videos/my clips",
        "encoder.kwargs.drop_path_rate=0.1",
        "model.memory_cell=ncgru",
    ]
    cfg = load(child(base_dir, ""), options)
    assert cfg["train"]["epochs"] == 5
    assert cfg["train"]["crop_ratio"] == (0.5, 1.0)
    assert cfg["encoder"]["pretrained"] is False
    assert cfg["sampling"]["max_frames"] is None
    assert cfg["data_root"] == "/videos/my clips"
    assert cfg["encoder"]["kwargs"] == {"img_size": 32, "drop_path_rate": 0.1}
    assert cfg["model"]["memory_cell"] == "ncgru"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "train = dict(epoch=5)\n",
            r"child\.py: unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)",
        ),
        ("protcol = 'cs'\n", r"unknown key 'protcol' \(did you mean 'protocol'\?\)"),
        ("sampling = dict(fsp=2)\n", r"'sampling\.fsp' \(did you mean 'sampling\.fps'\?\)"),
        ("train = dict(_delete_=True, epochs=1, bach_size=2)\n", r"'train\.bach_size'"),
        ("zzzz = 1\n", r"unknown key 'zzzz'; valid keys at the top level: .*train"),
    ],
)
def test_typos_name_the_key_file_and_closest_match(base_dir, body, message):
    with pytest.raises(ConfigError, match=message):
        load(child(base_dir, body))


def test_free_form_sections_are_not_checked_here(base_dir):
    cfg = load(child(base_dir, "model = dict(heads=8)\nencoder = dict(kwargs=dict(a=1))\n"))
    assert cfg["model"]["heads"] == 8
    assert cfg["encoder"]["kwargs"] == {"img_size": 32, "a": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("protocol = 'cs3'\n", "protocol 'cs3' is not one of cs, cv1, cv2"),
        ("val_mode = 'random'\n", "val_mode 'random' is not one of subjects, random5, none"),
        ("device = 'gpu'\n", "device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
        ("encoder = dict(pretrained=1)\n", "encoder.pretrained"),
        ("encoder = dict(kwargs=[32])\n", r"encoder\.kwargs=\[32\] must be a dict"),
        ("encoder = dict(name='vit_tiny_patch16_244')\n", "is not a timm model; close matches"),
    ],
)
def test_bad_values_list_the_valid_ones(base_dir, body, message):
    with pytest.raises(ConfigError, match=message):
        load(child(base_dir, body))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("train.epoch=3", r"unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)"),
        ("modle.depth=1", r"did you mean 'model\.depth'"),
        ("train.epochs", "not KEY=VALUE"),
        ("demo.seed=1", "'demo' is None, not a dict"),
        ("protocol=cv9", "protocol 'cv9' is not one of"),
    ],
)
def test_bad_cfg_options(base_dir, option, message):
    with pytest.raises(ConfigError, match=message):
        load(child(base_dir, ""), [option])


def test_file_errors(base_dir):
    with pytest.raises(ConfigError, match="missing.py not found"):
        load(base_dir / "missing.py")
    with pytest.raises(ConfigError, match=r"child\.py:3: syntax error"):
        load(child(base_dir, "train = dict(\n  epochs=3,,\n)\n"))
    with pytest.raises(ConfigError, match=r"child\.py:2: NameError"):
        load(child(base_dir, "seed = undefined + 1\n"))
    with pytest.raises(ConfigError, match="base config 'nope.py' not found"):
        load(write(base_dir, "orphan.py", "_base_ = ['nope.py']\n"))
    with pytest.raises(ConfigError, match="is a PosixPath"):
        load(child(base_dir, "import pathlib\ndata_root = pathlib.Path('x')\n"))
    with pytest.raises(ConfigError, match="missing keys .*train"):
        load(write(base_dir, "bare.py", "_base_ = ['_base_/runtime.py']\n"))


def test_inheritance_loops_are_reported(base_dir):
    write(base_dir, "x.py", "_base_ = ['y.py']\n")
    write(base_dir, "y.py", "_base_ = ['x.py']\n")
    with pytest.raises(ConfigError, match="loops"):
        load(base_dir / "x.py")


@pytest.mark.parametrize("name", ["demo.py", "smarthome_cs.py"])
def test_dumped_config_loads_back_equal(tmp_path, name):
    # Loaded untyped: the 1-tuple only tests the file format (it is no valid crop_ratio).
    cfg = load_config(CONFIGS / name, ["encoder.kwargs.img_size=48", "train.crop_ratio=(0.5,)"])
    cfg["sampling"]["note"] = "x" * 120  # forces the multi-line layout
    path = dump_config(cfg, tmp_path / name)
    text = path.read_text()
    assert "train = dict(\n" in text
    again = load_config(path)
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    assert {k: v for k, v in again.items() if not k.startswith("_")} == public
    assert again["_config_name"] == cfg["_config_name"]


def test_work_dir_defaults_to_the_config_name(base_dir):
    runtime = load_run_config(child(base_dir, "")).runtime
    assert runtime.resolve_work_dir(None) == Path("work_dirs/child")
    assert runtime.resolve_work_dir("out/run1") == Path("out/run1")
    runtime = load_run_config(child(base_dir, ""), ["work_dir=elsewhere"]).runtime
    assert runtime.resolve_work_dir(None) == Path("elsewhere")


def test_config_hash_is_short_stable_and_order_independent():
    a = config_hash({"fps": 4.0, "encoder": {"name": "vit", "size": (224, 224)}})
    b = config_hash({"encoder": {"size": [224, 224], "name": "vit"}, "fps": 4.0})
    assert a == b and len(a) == 12 and int(a, 16) >= 0
    assert config_hash({"fps": 2.0}) != config_hash({"fps": 4.0})

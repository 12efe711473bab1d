"""The online task, THUMOS'14 online action detection: features -> one class per frame, as the
frame arrives -> per-frame mAP.

Selected by ``model.task='online'``. The data is the LSTR/TeSTra layout (:mod:`crt_video.data.
thumos`): pre-extracted feature streams and one-hot per-frame targets. Training draws windows
as the dense task does and minimises the cross-entropy of a softmax over every class but
Ambiguous, on the frames that are not Ambiguous. ``gru`` predicts each frame from it and what
came before; ``crt`` and ``xl`` also from the rest of its segment, so they answer a segment
behind; ``segment`` and ``full`` see later frames too, and their reports say ``offline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crt_video.data.feature_dataset import FeatureData
from crt_video.data.first_use import generate_on_first_use
from crt_video.data.splits import SPLITS
from crt_video.data.thumos import (
    OnlineDataset,
    load_targets,
    read_data_info,
)
from crt_video.engine.evaluate import predict_logits
from crt_video.engine.train_task import TrainTask
from crt_video.errors import DatasetError
from crt_video.evaluation.online import perframe_map
from crt_video.features.frame_encoder import FrameEncoder
from crt_video.features.source import prepare_features
from crt_video.models.transformer import valid_mask
from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks.base import Task, register_task
from crt_video.tasks.per_frame import per_frame_training
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, broadcast_object
from crt_video.utils.io import atomic_write_json
from crt_video.utils.logging import get_logger
from crt_video.utils.threads import cpu_threads

if TYPE_CHECKING:
    from crt_video.run_config import RunConfig

logger = get_logger(__name__)

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_perframe_map", "lr", "seconds")


@dataclass
class LabelledSession:
    name: str
    features: torch.Tensor  # [L, D] float16
    targets: torch.Tensor  # [L, C] float32


def resolve_online_root(
    data_root: str | None, demo: dict | None, dist_info: DistInfo = SINGLE_PROCESS
) -> Path:
    """The dataset folder; with a ``demo`` section it is generated on first use (rank 0)."""
    if not data_root:
        raise DatasetError("an online-detection config needs data_root (the THUMOS folder)")
    root = Path(data_root).expanduser()
    if demo is not None:
        from crt_video.data.thumos_demo import check_thumos_demo, make_thumos_demo

        generate_on_first_use(
            root,
            lambda: make_thumos_demo(root, **demo),
            lambda: check_thumos_demo(root, **demo),
            "the THUMOS-layout demo",
            dist_info,
        )
    if not root.is_dir():
        raise DatasetError(
            f"data_root {root} does not exist; put the THUMOS features there (the LSTR layout) "
            "or pass --cfg-options data_root=DIR"
        )
    return root.resolve()


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, ambiguous: int | None
) -> torch.Tensor:
    """Cross-entropy of a softmax over the classes but Ambiguous against the (normalised)
    targets, averaged over the valid frames that are not Ambiguous."""
    keep = valid_mask(lengths, logits.shape[1])
    if ambiguous is not None:
        keep = keep & (targets[..., ambiguous] < 0.5)
        logits = torch.cat([logits[..., :ambiguous], logits[..., ambiguous + 1 :]], dim=-1)
        targets = torch.cat([targets[..., :ambiguous], targets[..., ambiguous + 1 :]], dim=-1)
    targets = targets / targets.sum(-1, keepdim=True).clamp(min=1e-6)
    loss = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return (loss * keep).sum() / keep.sum().clamp(min=1)


def frame_scores(logits: np.ndarray, ambiguous: int | None) -> np.ndarray:
    """Softmax over the classes the model was trained on; Ambiguous scores 0."""
    if ambiguous is not None:
        logits = logits.copy()
        logits[:, ambiguous] = -np.inf
    return torch.from_numpy(logits).float().softmax(-1).numpy()


@register_task
class OnlineTask(Task):
    kind = TASK_KINDS["online"]

    def class_names(self, run: RunConfig) -> tuple[str, ...]:
        return read_data_info(self.video_dir(run), run.data.val_mode).class_names

    def video_dir(self, run: RunConfig, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
        return resolve_online_root(run.data.data_root, run.demo, dist_info)

    def prepare_data(
        self,
        run: RunConfig,
        device: torch.device,
        splits: tuple[str, ...] = SPLITS,
        dist_info: DistInfo = SINGLE_PROCESS,
        encoder: FrameEncoder | None = None,
    ) -> FeatureData:
        """Each split's sessions with their features and aligned targets."""
        root = self.video_dir(run, dist_info)
        dataset = read_data_info(root, run.data.val_mode)
        sessions = {split: dataset.sessions[split] for split in splits}
        wanted = [session for split in splits for session in sessions[split]]
        store, identity = prepare_features(
            run.feature_source, root, wanted, encoder, device, dist_info
        )
        for split in ("train", "test"):
            if split in splits and not sessions[split]:
                raise DatasetError(f"{root}: the {split} session set is empty")
        videos = {
            split: [self._labelled(root, store, dataset, session) for session in names]
            for split, names in sessions.items()
        }
        return FeatureData(store, videos, dataset.class_names, identity)

    def training(
        self, run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo
    ) -> TrainTask:
        ambiguous = _ambiguous(data)
        val_videos = data.splits.get("val", [])

        def loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor):
            return soft_cross_entropy(logits, targets, lengths, ambiguous)

        def validate(model: nn.Module) -> dict:
            metrics = self._score(model, data, val_videos, device, dist_info)
            return {"loss": metrics["loss"], "perframe_map": metrics["perframe_map"]}

        return per_frame_training(
            self.name,
            run,
            [(session.name, session.features, session.targets) for session in data.splits["train"]],
            loss,
            validate if val_videos else None,
            "perframe_map",
            LOG_COLUMNS,
            dist_info,
        )

    def evaluate(
        self,
        run: RunConfig,
        model: nn.Module,
        data: FeatureData,
        split: str,
        out_dir: Path,
        device: torch.device,
        dist_info: DistInfo = SINGLE_PROCESS,
    ) -> dict:
        """metrics.json: perframe_map, mcap, the per-class APs, and whether the model is online."""
        with cpu_threads(device, 1):
            metrics = self._score(model, data, data.splits[split], device, dist_info)
        # what a frame's output waits for (crt_video.models.registry.LATENCIES)
        metrics |= {
            "num_videos": len(data.splits[split]),
            "online": model.latency != "video",
            "latency": model.latency,
        }
        if dist_info.is_main:
            atomic_write_json(Path(out_dir) / "metrics.json", metrics)
        return broadcast_object(metrics)

    def summary(self, metrics: dict) -> str:
        mode = {
            "frame": "online",
            "segment": "online, a segment behind",
            "video": "offline (sees later frames)",
        }[metrics["latency"]]
        return (
            f"per-frame mAP {metrics['perframe_map']:.4f}, mcAP {metrics['mcap']:.4f} over "
            f"{metrics['num_videos']} videos, {mode}"
        )

    def _labelled(self, root: Path, store, dataset: OnlineDataset, session: str) -> LabelledSession:
        features = torch.from_numpy(store.load(session)[0])
        targets = load_targets(root, session, len(dataset.class_names), len(features))
        return LabelledSession(session, features, torch.from_numpy(targets))

    def _score(self, model, data: FeatureData, videos, device, dist_info) -> dict:
        ambiguous = _ambiguous(data)
        logits = predict_logits(model, lambda video: video.features, videos, device, dist_info)
        targets = torch.cat([video.targets for video in videos])
        everything = torch.from_numpy(np.concatenate(logits))
        lengths = torch.tensor([len(everything)])
        loss = soft_cross_entropy(everything[None], targets[None], lengths, ambiguous)
        scores = np.concatenate([frame_scores(rows, ambiguous) for rows in logits])
        background = data.class_names.index("Background")
        result = perframe_map(targets.numpy(), scores, data.class_names, background, ambiguous)
        return {**result, "loss": float(loss)}


def _ambiguous(data: FeatureData) -> int | None:
    return data.class_names.index("Ambiguous") if "Ambiguous" in data.class_names else None

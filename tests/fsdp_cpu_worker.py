"""One rank of the 2-process FSDP check on CPU (run by torchrun from tests/test_distributed.py).

accelerate builds no FSDP world on CPU (ARCHITECTURE.md "Distributed training"), so this worker
calls accelerate's own FSDP2 preparation (`fsdp2_prepare_model`, the code `fsdp_gpu.yaml` runs on
GPUs) on a gloo world with the plugin that config describes, then takes one SFT step on a real
episode of the corpus, sharded and unsharded, and writes (rank 0) what was wrapped and how far the
two differ. Usage: fsdp_cpu_worker.py CORPUS TINY_MODEL OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import yaml


def fsdp_plugin(config_file: Path):
    """accelerate's FSDP plugin with the `fsdp_config` of an accelerate config file."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = yaml.safe_load(config_file.read_text())["fsdp_config"]
    return FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"], state_dict_type=fsdp["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"])


def sft_batch(corpus: str, model_dir: str):
    """One collated SFT episode (frames included) and the image pad id, as training.sft builds it."""
    from training.data.chat_template import DEFAULT_SYSTEM_PROMPT, TemplateConfig, TurnRenderer
    from training.data.corpus import read_split
    from training.data.dataset import CollateEpisodes, EpisodeDataset
    from training.data.episodes import EpisodeConfig
    from training.model import load_image_processor, load_tokenizer

    split = read_split(corpus, "train")
    tokenizer = load_tokenizer(model_dir)
    template = TemplateConfig(system_prompt=DEFAULT_SYSTEM_PROMPT)
    renderer = TurnRenderer(tokenizer, template.system_prompt, template.image_pad_token)
    pairs = [(d, split.video_path(d.video_id)) for d in split.dialogues[:1]]
    dataset = EpisodeDataset(pairs, EpisodeConfig(max_frames=4), renderer, load_image_processor(model_dir, 3136),
                             template, 3136)
    return CollateEpisodes(tokenizer.pad_token_id)([dataset[0]]).tensors, renderer.image_pad_id


def dist_rollouts_match(corpus: str, model_dir: str, sharded, reference) -> list[bool]:
    """GRPO's sampling under FSDP2 (training.distributed.sampling_policy): each rank samples a
    different number of rollouts (so a different number of forwards) twice, from the sharded
    policy's whole copy, and compares them with the same rollouts of the unsharded model."""
    from accelerate.utils import DistributedType

    from curation.video.frames import frame_timeline
    from training.data.chat_template import TurnRenderer
    from training.data.corpus import read_split
    from training.data.episodes import EpisodeConfig, build_episode
    from training.distributed import sampling_policy
    from training.model import load_image_processor, load_tokenizer
    from training.rl.rollout import ProcessorBits, RolloutConfig, rollout_group

    split = read_split(corpus, "train")
    dialogue = split.dialogues[0]
    bits = ProcessorBits(TurnRenderer(load_tokenizer(model_dir)), load_image_processor(model_dir, 3136), 3136)
    episode = build_episode(dialogue, split.video_path(dialogue.video_id), EpisodeConfig(max_frames=4), frame_timeline)
    stand_in = SimpleNamespace(unwrap_model=lambda m: m, device=torch.device("cpu"),
                               distributed_type=DistributedType.FSDP)
    matches = True
    for round_ in range(2):  # the second entry refreshes the copy built by the first
        config = RolloutConfig(n=1 + dist.get_rank(), max_new_tokens_per_turn=4, seed=round_)
        with sampling_policy(stand_in, sharded) as policy:
            sampled = rollout_group(policy, bits, episode, config)
        expected = rollout_group(reference, bits, episode, config)
        matches &= [r.input_ids.tolist() for r in sampled] == [r.input_ids.tolist() for r in expected]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, matches)
    return everyone


def main(corpus: str, model_dir: str, out: str) -> None:
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    from training.model import load_trainable_model
    from training.sft import LoraSettings, batch_loss

    dist.init_process_group("gloo")
    root = Path(__file__).resolve().parents[1]
    plugin = fsdp_plugin(root / "configs" / "accelerate" / "fsdp_gpu.yaml")
    stand_in = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), torch_device_mesh=None,
                               device=torch.device("cpu"), mixed_precision="no", is_main_process=dist.get_rank() == 0)
    tensors, image_pad_id = sft_batch(corpus, model_dir)

    def sft_step(model):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        loss = batch_loss(model, tensors, torch.device("cpu"), image_pad_id)
        loss.backward()
        optimizer.step()
        return loss.item()

    def trainable(model):
        return load_trainable_model(model_dir, True, True, False, LoraSettings())

    reference = trainable(model_dir)
    sharded = fsdp2_prepare_model(stand_in, trainable(model_dir))
    # the class each FSDP unit wraps (FSDP2 subclasses it as FSDP<Name>)
    units = [type(m).__name__.removeprefix("FSDP") for m in sharded.modules() if isinstance(m, FSDPModule)]
    local_numel = sum(p.to_local().numel() for p in sharded.parameters())
    full_numel = sum(p.numel() for p in reference.parameters())
    loss_sharded, loss_reference = sft_step(sharded), sft_step(reference)
    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    same_rollouts = dist_rollouts_match(corpus, model_dir, sharded, reference)
    if dist.get_rank() == 0:
        ref_state = reference.state_dict()
        before = trainable(model_dir).state_dict()
        Path(out).write_text(json.dumps({
            "units": {name: units.count(name) for name in sorted(set(units))},
            "local_share": local_numel / full_numel,
            "loss_sharded": loss_sharded, "loss_reference": loss_reference,
            "max_weight_diff": max((full[k] - ref_state[k]).abs().max().item() for k in ref_state),
            "moved": sum(not torch.equal(full[k], before[k]) for k in before),
            "trainable": sum(p.requires_grad for p in reference.parameters()),
            "params": len(before), "rollouts_match_by_rank": same_rollouts}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])

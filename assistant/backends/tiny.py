"""Random tiny checkpoints of the REAL omni architectures, built locally on first use.

`tiny_model_path("qwen2_5_omni")` returns a folder that loads through exactly the same
`from_pretrained` path as the real weights: config, safetensors, a byte-level BPE tokenizer with
Qwen's special tokens and chat template, the processor (Whisper features, Qwen2-VL images) and,
for Qwen2.5-Omni, the speaker map `spk_dict.pt`. Seeded, so two builds are identical.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from assistant.config import build_once, cache_dir

__all__ = ["ARCHITECTURES", "tiny_model_path"]

log = logging.getLogger(__name__)

ARCHITECTURES = ("qwen2_5_omni", "qwen3_omni")
BUILD_VERSION = 8  # bump when the recipe changes: a new folder is built
SEED = 1234

# Special tokens as the real Qwen-Omni tokenizers spell them. Their ids come right after the BPE
# vocabulary; every config field that names a token id is filled from this table.
SPECIAL_2_5 = {
    "eos": "<|im_end|>", "bos": "<|im_start|>", "pad": "<|endoftext|>",
    "audio": "<|AUDIO|>", "audio_bos": "<|audio_bos|>", "audio_eos": "<|audio_eos|>",
    "image": "<|IMAGE|>", "video": "<|VIDEO|>", "vision_bos": "<|vision_bos|>", "vision_eos": "<|vision_eos|>",
    "tts_pad": "<|tts_pad|>", "tts_bos": "<|tts_bos|>", "tts_eos": "<|tts_eos|>",
}
SPECIAL_3 = {
    "eos": "<|im_end|>", "bos": "<|im_start|>", "pad": "<|endoftext|>",
    "audio": "<|audio_pad|>", "audio_bos": "<|audio_start|>", "audio_eos": "<|audio_end|>",
    "image": "<|image_pad|>", "video": "<|video_pad|>", "vision_bos": "<|vision_start|>",
    "vision_eos": "<|vision_end|>",
    "tts_pad": "<tts_pad>", "tts_bos": "<tts_text_bos>", "tts_eos": "<tts_text_eod>",
    "tts_bos_single": "<tts_text_bos_single>",
}

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ VISION_BOS }}{{ IMAGE }}{{ VISION_EOS }}"
    "{% elif part['type'] == 'audio' %}{{ AUDIO_BOS }}{{ AUDIO }}{{ AUDIO_EOS }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_WORDS = (
    "the a an and or but if then so because what who where when why how is are was were be been "
    "I you he she it we they me my your our their this that these those here there hello hi yes no "
    "please thank thanks sorry okay good great bad new old big small one two three four five six "
    "seven eight nine ten hundred thousand time day night today tomorrow morning name voice image "
    "picture photo sound speech music talk say tell ask answer question help know think see hear "
    "look listen remember forget like love want need make take give get go come run walk read write "
    "doctor coach friend family home work school city country world water food coffee tea red green "
    "blue yellow black white color cat dog bird tree sky sun moon star weather rain snow warm cold "
    "capital France Paris England London number plus minus equals math science history story book"
)


def tiny_model_path(architecture: str = "qwen2_5_omni", root: Path | None = None) -> Path:
    """Return the folder of the tiny checkpoint, building it on first use (atomically)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    root = Path(root) if root else cache_dir() / "tiny"
    builder = _build_qwen2_5 if architecture == "qwen2_5_omni" else _build_qwen3

    def build(tmp: Path) -> None:
        log.info("building the tiny %s checkpoint in %s", architecture, root)
        builder(tmp)

    return build_once(root / f"{architecture}-v{BUILD_VERSION}", build)


def _train_tokenizer(special: dict[str, str], vocab_size: int = 1024):
    """A byte-level BPE (like Qwen's) trained on a small fixed corpus, with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    words = _CORPUS_WORDS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 5)] * 3
    lines += [w.capitalize() + "." for w in words] + [f"{i} + {i + 1} = {2 * i + 1}" for i in range(50)]
    tok.train_from_iterator(lines, trainer=trainer)
    # Role names are single tokens in Qwen's vocabulary; the talkers look for them after <|im_start|>.
    tok.add_tokens(["system", "user", "assistant"])
    specials = list(dict.fromkeys(special.values()))
    tok.add_special_tokens(specials)
    extra = {k + "_token": v for k, v in special.items() if k not in ("eos", "bos", "pad")}
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=special["eos"],
        pad_token=special["pad"],
        additional_special_tokens=specials,
        extra_special_tokens=extra,
        model_max_length=32768,
    )
    hf.padding_side = "left"
    template = CHAT_TEMPLATE
    for key in ("VISION_BOS", "VISION_EOS", "IMAGE", "AUDIO_BOS", "AUDIO_EOS", "AUDIO"):
        name = {"VISION_BOS": "vision_bos", "VISION_EOS": "vision_eos", "IMAGE": "image",
                "AUDIO_BOS": "audio_bos", "AUDIO_EOS": "audio_eos", "AUDIO": "audio"}[key]
        template = template.replace("{{ " + key + " }}", special[name])
    hf.chat_template = template
    ids = {k: hf.convert_tokens_to_ids(v) for k, v in special.items()}
    return hf, ids


def _processor_parts(patch_size: int):
    from transformers import Qwen2VLImageProcessor, WhisperFeatureExtractor

    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300,
                                       n_fft=400, padding_value=0.0, return_attention_mask=True)
    images = Qwen2VLImageProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                   min_pixels=56 * 56, max_pixels=448 * 448)
    return features, images


def _video_processor(patch_size: int):
    try:
        from transformers import Qwen2VLVideoProcessor

        return Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2)
    except (ImportError, ValueError, AttributeError):  # needs torchvision; videos are not used
        return None


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def _make_audible(vocoder, sample_input, target_rms: float = 0.1) -> None:
    """Random vocoder weights give near-silent output (~1e-7); scale the last convolution so the
    tiny model's speech is audible noise (tests capture it from a speaker and check it is there)."""
    import torch

    convs = [m for m in vocoder.modules() if isinstance(m, torch.nn.Conv1d)]
    with torch.no_grad():
        for _ in range(3):  # the output is clamped to [-1, 1]; converge in a few passes
            out = vocoder(sample_input).float()
            rms = float(out.pow(2).mean().sqrt())
            if rms <= 0 or abs(rms - target_rms) < target_rms * 0.2:
                break
            convs[-1].weight.mul_(target_rms / rms)


def _fill_uninitialised(model) -> None:
    """Some sub-modules (the Qwen3 talker's MoE router and experts) are left as torch.empty by
    random init: garbage or zeros. Give every such matrix seeded small normal weights."""
    import torch

    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.dim() < 2:
                continue
            bad = not torch.isfinite(param).all() or param.abs().max() > 10 or param.abs().max() == 0
            if bad:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def _text(vocab: int, hidden: int, layers: int = 2, heads: int = 4, kv: int = 2, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                 "mrope_section": [2, 1, 1]}, **extra)


def _build_qwen2_5(out: Path) -> None:
    import torch
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniProcessor,
    )

    tokenizer, ids = _train_tokenizer(SPECIAL_2_5)
    vocab = len(tokenizer)
    hidden = 32
    thinker = dict(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=hidden, n_window=100, max_source_positions=1500),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[0]),
        text_config=_text(vocab, hidden),
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
        user_token_id=tokenizer.convert_tokens_to_ids("user"),
    )
    codec_vocab = 512  # codec tokens; the last few are control tokens as in the real 8448 layout
    talker = dict(
        **{k: v for k, v in _text(codec_vocab, hidden).items() if k != "vocab_size"},
        vocab_size=codec_vocab, embedding_size=hidden, head_dim=8,
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        tts_text_start_token_id=ids["tts_bos"], tts_text_end_token_id=ids["tts_eos"],
        tts_text_pad_token_id=ids["tts_pad"],
        tts_codec_start_token_id=codec_vocab - 7, tts_codec_end_token_id=codec_vocab - 6,
        tts_codec_pad_token_id=codec_vocab - 8, tts_codec_mask_token_id=codec_vocab - 4,
    )
    token2wav = dict(
        dit_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, ff_mult=2,
                        emb_dim=16, num_embeds=codec_vocab, mel_dim=80, enc_emb_dim=16, enc_dim=16,
                        enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
                        block_size=24, look_ahead_layers=[1], look_backward_layers=[0], repeats=2),
        bigvgan_config=dict(mel_dim=80, upsample_initial_channel=64, resblock_kernel_sizes=[3],
                            resblock_dilation_sizes=[[1, 3, 5]], upsample_rates=[5, 3, 2, 2, 2, 2],
                            upsample_kernel_sizes=[11, 7, 4, 4, 4, 4]),
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav,
                               enable_audio_output=True)
    _seed()
    model = Qwen2_5OmniForConditionalGeneration(config).eval()
    _fill_uninitialised(model)
    # Speakers: the real checkpoint ships spk_dict.pt with a text bos token, an x-vector
    # ("cond", 1 x enc_emb_dim) and a reference mel (1 x T x 80) per voice.
    gen = torch.Generator().manual_seed(SEED)
    speakers = {
        name: {"bos_token": ids["tts_bos"],
               "cond": torch.randn(1, 16, generator=gen),
               "ref_mel": torch.randn(1, 30, 80, generator=gen)}
        for name in ("Chelsie", "Ethan")
    }
    # Calibrate on what the vocoder really gets: the DiT's mel for random codes.
    codes = torch.randint(0, codec_vocab - 8, (1, 40), generator=torch.Generator().manual_seed(SEED))
    voice = speakers["Chelsie"]
    with torch.no_grad():
        mel = model.token2wav.code2wav_dit_model.sample(voice["cond"], voice["ref_mel"], codes)
    _make_audible(model.token2wav.code2wav_bigvgan_model, mel)
    model.save_pretrained(out)
    torch.save(speakers, out / "spk_dict.pt")
    features, images = _processor_parts(patch_size=14)
    processor = Qwen2_5OmniProcessor(image_processor=images, video_processor=_video_processor(14),
                                     feature_extractor=features, tokenizer=tokenizer,
                                     chat_template=tokenizer.chat_template)
    processor.save_pretrained(out)
    _write_meta(out, "qwen2_5_omni", ids, talker_eos=[codec_vocab - 8, codec_vocab - 6])


def _build_qwen3(out: Path) -> None:
    from transformers import (
        Qwen3OmniMoeConfig,
        Qwen3OmniMoeForConditionalGeneration,
        Qwen3OmniMoeProcessor,
    )

    tokenizer, ids = _train_tokenizer(SPECIAL_3)
    vocab = len(tokenizer)
    hidden = 32
    moe = dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
               head_dim=8)
    thinker = dict(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=hidden, n_window=50, n_window_infer=800,
                          downsample_hidden_size=8, max_source_positions=1500),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        text_config=_text(vocab, hidden, **moe),
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        audio_start_token_id=ids["audio_bos"], vision_start_token_id=ids["vision_bos"],
    )
    codec_vocab = 2048 + 64  # > 1024, as the talker needs; control ids sit above the codebook
    talker = dict(
        text_config=dict(**_text(codec_vocab, hidden, **moe), shared_expert_intermediate_size=16),
        code_predictor_config=dict(vocab_size=2048, hidden_size=hidden, intermediate_size=hidden * 2,
                                   num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=8, num_code_groups=4,
                                   rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}),
        num_code_groups=4, thinker_hidden_size=hidden, accept_hidden_layer=1,
        codec_pad_id=2048 + 4, codec_bos_id=2048 + 5, codec_eos_token_id=2048 + 6, codec_nothink_id=2048 + 11,
        codec_think_bos_id=2048 + 12, codec_think_eos_id=2048 + 13,
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["vision_bos"], audio_start_token_id=ids["audio_bos"],
        speaker_id={"chelsie": 2048 + 20, "ethan": 2048 + 21, "aiden": 2048 + 22},
        spatial_merge_size=2,
    )
    code2wav = dict(codebook_size=2048, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=2, intermediate_size=64, num_quantizers=4, decoder_dim=32,
                    upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], sliding_window=72)
    config = Qwen3OmniMoeConfig(thinker_config=thinker, talker_config=talker, code2wav_config=code2wav,
                                enable_audio_output=True,
                                tts_pad_token_id=ids["tts_pad"], tts_bos_token_id=ids["tts_bos"],
                                tts_eos_token_id=ids["tts_eos"], im_start_token_id=ids["bos"],
                                im_end_token_id=ids["eos"], system_token_id=tokenizer.convert_tokens_to_ids("system"),
                                user_token_id=tokenizer.convert_tokens_to_ids("user"),
                                assistant_token_id=tokenizer.convert_tokens_to_ids("assistant"))
    _seed()
    model = Qwen3OmniMoeForConditionalGeneration(config).eval()
    _fill_uninitialised(model)
    import torch

    codes = torch.randint(0, 2048, (1, 4, 30), generator=torch.Generator().manual_seed(SEED))
    _make_audible(model.code2wav, codes)
    model.save_pretrained(out)
    features, images = _processor_parts(patch_size=16)
    processor = Qwen3OmniMoeProcessor(image_processor=images, video_processor=_video_processor(16),
                                      feature_extractor=features, tokenizer=tokenizer,
                                      chat_template=tokenizer.chat_template)
    processor.save_pretrained(out)
    _write_meta(out, "qwen3_omni", ids, talker_eos=[2048 + 6])


def _write_meta(out: Path, architecture: str, ids: dict[str, int], talker_eos: list[int]) -> None:
    meta = {"architecture": architecture, "build_version": BUILD_VERSION, "seed": SEED,
            "token_ids": ids, "talker_eos_token_id": talker_eos}
    (out / "tiny_meta.json").write_text(json.dumps(meta, indent=1))

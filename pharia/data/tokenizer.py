"""Tokenizer stage: a byte-level BPE, either trained here or the real GPT-2 vocabulary.

`data.tokenizer: bpe` trains a byte-level BPE on the train split only (held-out text must not shape
the vocabulary it is evaluated with). `data.tokenizer: gpt2` loads OpenAI's GPT-2 vocabulary from a
`.tiktoken` file on disk (by default the copy the `openai-whisper` distribution ships, so nothing is
downloaded) and converts it into the same HF `tokenizers` object, so the packer, trainer and
evaluation never need to know which one they got. Byte-level means every string round-trips exactly,
whatever its script, so German umlauts, emoji and code whitespace need no special handling.

Special tokens, read back by `special_token_ids` rather than assumed:

- `bpe`: `<|endoftext|>` id 0 separates documents in the packed shards, `<|pad|>` id 1 fills
  batches, then (with `data.domain_tags`) `<|web|>`, `<|academic|>`, `<|books|>`, `<|code|>`,
  `<|multilingual|>` ids 2..6, all counted inside `data.vocab_size`.
- `gpt2`: GPT-2's own `<|endoftext|>` id 50256; padding reuses it (GPT-2 has no pad token, and pad
  positions are never attended to nor scored, so sharing the id costs nothing and keeps the real
  50,257-token vocabulary); domain tags follow at 50257..50261 and need `data.vocab_size >= 50262`.

Literal occurrences of any special-token string inside documents are encoded as ordinary text (see
`load_tokenizer`), so data can never forge a document boundary or a domain tag.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pharia.config import DOMAINS, ConfigError, DataConfig
from pharia.data.manifest import atomic_dir, atomic_write_json, sha256_file
from pharia.errors import DataError

EOS_TOKEN = "<|endoftext|>"  # noqa: S105 - a token string, not a password
PAD_TOKEN = "<|pad|>"  # noqa: S105
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # the first two ids of a trained BPE, in this order
DOMAIN_TOKENS: dict[str, str] = {domain: f"<|{domain}|>" for domain in DOMAINS}
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer_meta.json"
TOKENIZER_FIELDS = ("vocab_size", "tokenizer", "gpt2_vocab_file", "domain_tags")  # this stage's DVC params

# GPT-2's pre-tokenisation regex, as in OpenAI's encoder.py (and whisper/tokenizer.py): contractions,
# letter runs, digit runs, other-symbol runs, each with one optional leading space; whitespace runs
# leave their last space to the word that follows.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_DISTRIBUTION = "openai-whisper"
GPT2_ASSET = "whisper/assets/gpt2.tiktoken"


@dataclass(frozen=True)
class SpecialTokenIds:
    """The ids the packer, trainer and evaluation need, read from the tokenizer itself so that
    no stage hard-codes the layout of one tokenizer kind."""

    eos_id: int
    pad_id: int
    domain_ids: dict[str, int]  # domain -> id of its tag; empty when the tokenizer has no tags


def special_token_ids(tokenizer: Any) -> SpecialTokenIds:
    """eos, pad and domain-tag ids of a loaded `tokenizers.Tokenizer`.

    eos is `<|endoftext|>` and must exist. pad is `<|pad|>` when the tokenizer has it (a trained
    BPE always does); a tokenizer without one pads with eos, the GPT-2 convention `tokenizer: gpt2`
    uses. Domain tags are reported when present: all of DOMAINS or none (a partial set means the
    file was not written by this module).
    """
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise DataError(f"tokenizer has no {EOS_TOKEN} token: documents cannot be separated (retrain it)")
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    domain_ids = {d: tokenizer.token_to_id(t) for d, t in DOMAIN_TOKENS.items()}
    present = {d: i for d, i in domain_ids.items() if i is not None}
    if present and len(present) != len(DOMAIN_TOKENS):
        missing = ", ".join(DOMAIN_TOKENS[d] for d in DOMAIN_TOKENS if d not in present)
        raise DataError(f"tokenizer has only some domain tags, missing {missing} (retrain it)")
    return SpecialTokenIds(eos_id=eos_id, pad_id=eos_id if pad_id is None else pad_id, domain_ids=present)


def iter_documents(ingest_dir: Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of `documents.jsonl`, optionally only one split, in file order (streamed)."""
    path = Path(ingest_dir) / "documents.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found: expected the output of `pharia data ingest`")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                valid = isinstance(row["text"], str) and row["split"] in ("train", "validation", "heldout")
            except (ValueError, KeyError, TypeError):
                valid = False
            if not valid:
                raise DataError(f"{path}:{number}: expected a JSON object with a string 'text' and a 'split'")
            if split is None or row["split"] == split:
                yield row


def bpe_special_tokens(domain_tags: bool) -> list[str]:
    """The special tokens of a trained BPE, in id order (the trainer assigns them ids 0, 1, ...)."""
    return [*SPECIAL_TOKENS, *(DOMAIN_TOKENS.values() if domain_tags else ())]


def build_tokenizer(
    texts: Iterator[str], vocab_size: int, length: int | None = None, special_tokens: list[str] | None = None
) -> Any:
    """Train a byte-level BPE whose special tokens take the first ids (default: eos 0, pad 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS if special_tokens is None else special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


# ------------------------------------------------------------------------------------------ gpt2
def default_gpt2_vocab_file() -> Path:
    """`gpt2.tiktoken` inside the installed openai-whisper distribution, located through its
    metadata: importing `whisper` would pull in torch, numba and ffmpeg bindings for one data file."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return Path(str(distribution(GPT2_DISTRIBUTION).locate_file(GPT2_ASSET)))
    except PackageNotFoundError:
        raise DataError(
            f"tokenizer gpt2 needs the GPT-2 vocabulary: install `{GPT2_DISTRIBUTION}` "
            "(`pip install --no-deps openai-whisper`, see requirements-data.txt) "
            "or set data.gpt2_vocab_file to a gpt2.tiktoken file"
        ) from None


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a `.tiktoken` file: one `<base64 token bytes> <rank>` per line, ranks 0..n-1.

    Read here rather than with `tiktoken.load.load_tiktoken_bpe`, which also writes a copy into a
    cache directory keyed by the path (a stale copy would win if the file changed). A rank is the
    token's id and its merge priority, so the ranks must be exactly 0..n-1 and include every byte.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"GPT-2 vocabulary {path} not found: install `{GPT2_DISTRIBUTION}` "
            "(`pip install --no-deps openai-whisper`) or point data.gpt2_vocab_file at a gpt2.tiktoken file"
        )
    ranks: dict[bytes, int] = {}
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise DataError(f"{path}:{number}: expected '<base64 token> <rank>' (a .tiktoken file)") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise DataError(f"{path}: ranks must be 0..{len(ranks) - 1}, each once (a .tiktoken vocabulary)")
    if any(bytes([b]) not in ranks for b in range(256)):
        raise DataError(f"{path}: not a byte-level vocabulary (some of the 256 single bytes are missing)")
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, the alphabet HF's ByteLevel uses:
    printable Latin-1 bytes map to themselves, the others to code points from 256 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in printable)
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}


def gpt2_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merge rules that make an HF BPE model encode exactly like tiktoken on these ranks.

    tiktoken does not store merges: within a pre-token it repeatedly joins the adjacent pair whose
    concatenation has the lowest rank (leftmost on ties). So every split of a token into two tokens
    is a merge, with the merged token's rank as its priority; HF's BPE then picks the same pair at
    every step (lowest priority, leftmost). Ties between two splits of one token are broken by the
    parts' ranks, as transformers' TikTokenConverter does. GPT-2: 108,299 rules against the 50,000 original merges.
    """
    found = [
        (rank, ranks[token[:i]], ranks[token[i:]], token[:i], token[i:])
        for token, rank in ranks.items()
        for i in range(1, len(token))
        if token[:i] in ranks and token[i:] in ranks
    ]
    return [(left, right) for *_, left, right in sorted(found)]


def build_gpt2_tokenizer(ranks: dict[bytes, int], domain_tags: bool) -> Any:
    """An HF `tokenizers` Tokenizer equivalent to tiktoken's GPT-2 encoding: ids are the ranks,
    eos `<|endoftext|>` follows them (50256), then the domain tags when asked for."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    table = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    model = models.BPE(
        vocab={text(token): rank for token, rank in ranks.items()},
        merges=[(text(left), text(right)) for left, right in gpt2_merges(ranks)],
        ignore_merges=True,  # like tiktoken: a pre-token that is itself in the vocabulary is one token
    )
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = [EOS_TOKEN, *(DOMAIN_TOKENS.values() if domain_tags else ())]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for offset, token in enumerate(specials):
        assert tokenizer.token_to_id(token) == len(ranks) + offset, f"{token} must follow the ranks"
    return tokenizer


def _gpt2(cfg: DataConfig) -> tuple[Any, dict[str, Any]]:
    """Load and convert the GPT-2 vocabulary; refuse a `data.vocab_size` it does not fit in."""
    from importlib.metadata import version

    path = Path(cfg.gpt2_vocab_file).expanduser() if cfg.gpt2_vocab_file else default_gpt2_vocab_file()
    ranks = read_tiktoken_ranks(path)
    needed = len(ranks) + 1 + (len(DOMAIN_TOKENS) if cfg.domain_tags else 0)
    if cfg.vocab_size < needed:
        tags = f" + {len(DOMAIN_TOKENS)} domain tags" if cfg.domain_tags else ""
        fix = (
            " or set data.domain_tags: false"
            if cfg.domain_tags and cfg.vocab_size >= needed - len(DOMAIN_TOKENS)
            else ""
        )
        raise ConfigError(
            f"data.vocab_size is {cfg.vocab_size} but tokenizer gpt2 needs {needed} "
            f"({len(ranks)} tokens of {path.name} + {EOS_TOKEN}{tags}): set data.vocab_size "
            f"(and model.vocab_size) to at least {needed}{fix}"
        )
    source: dict[str, Any] = {"file": str(path), "sha256": sha256_file(path), "tokens": len(ranks)}
    if not cfg.gpt2_vocab_file:
        source["distribution"] = f"{GPT2_DISTRIBUTION}=={version(GPT2_DISTRIBUTION)}"
    tokenizer = build_gpt2_tokenizer(ranks, cfg.domain_tags)
    return tokenizer, {"model": "GPT-2 byte-level BPE (tiktoken ranks -> HF tokenizers)", "source": source}


# ----------------------------------------------------------------------------------- the stage
def load_tokenizer(path: Path) -> Any:
    """Load `tokenizer.json` (or the directory holding it) for encoding documents: special-token
    strings that occur in text are encoded as text; the packer inserts the eos id itself."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer not found: {path} (run `pharia data tokenize` first)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a plain Exception for malformed files
        raise DataError(f"{path}: not a tokenizers JSON file ({str(exc).splitlines()[0]})") from None
    tokenizer.encode_special_tokens = True
    return tokenizer


def _train_bpe(ingest_dir: Path, cfg: DataConfig) -> tuple[Any, dict[str, Any]]:
    """Train on the train split, streamed: the corpus may not fit in memory, only the trainer's
    word counts do. Document and character counts are taken as the trainer reads."""
    counts = {"documents": 0, "chars": 0}

    def texts() -> Iterator[str]:
        for row in iter_documents(ingest_dir, "train"):
            counts["documents"] += 1
            counts["chars"] += len(row["text"])
            yield row["text"]

    stream = texts()
    first = next(stream, None)
    if first is None:
        raise DataError(f"{Path(ingest_dir) / 'documents.jsonl'} has no train-split documents to train a tokenizer on")
    specials = bpe_special_tokens(cfg.domain_tags)
    tokenizer = build_tokenizer(itertools.chain([first], stream), cfg.vocab_size, special_tokens=specials)
    for token_id, token in enumerate(specials):
        assert tokenizer.token_to_id(token) == token_id, f"{token} must have id {token_id}"
    return tokenizer, {
        "model": "byte-level BPE (HF tokenizers)",
        "trained_on": {
            "split": "train",
            **counts,
            "documents_sha256": sha256_file(Path(ingest_dir) / "documents.jsonl"),
        },
    }


def train_tokenizer(ingest_dir: Path, cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Build the configured tokenizer and publish tokenizer.json + tokenizer_meta.json atomically.

    `bpe` trains on the train-split documents of `ingest_dir`; `gpt2` converts the GPT-2 vocabulary
    without reading the corpus (the meta records the sha256 of the .tiktoken file it came from).
    """
    tokenizer, details = _gpt2(cfg) if cfg.tokenizer == "gpt2" else _train_bpe(ingest_dir, cfg)
    ids = special_token_ids(tokenizer)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save(str(tmp / TOKENIZER_FILE))
        meta = {
            "schema": "pharia.tokenizer/v2",
            "tokenizer": cfg.tokenizer,
            "file": TOKENIZER_FILE,
            "sha256": sha256_file(tmp / TOKENIZER_FILE),
            "model": details.pop("model"),
            "vocab_size_requested": cfg.vocab_size,
            "vocab_size": tokenizer.get_vocab_size(),
            "eos_token_id": ids.eos_id,
            "pad_token_id": ids.pad_id,
            "domain_tags": ids.domain_ids,
            "special_tokens": {t.content: i for i, t in sorted(tokenizer.get_added_tokens_decoder().items())},
            **details,
        }
        atomic_write_json(tmp / META_FILE, meta)
    return meta

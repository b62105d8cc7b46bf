"""WordPiece tokenization with the Rust `tokenizers` library and dynamic padding into numpy batches.

Truncation is done here rather than inside `tokenizers` so that the number of dropped tokens is
known exactly and can be reported: silently classifying the first 512 tokens of a long review is
a correctness problem a user needs to hear about. Within one call or file job (`Truncations`), the
first few truncated inputs are named one by one and later ones counted, since a file of long reviews
would otherwise print a line per row; a file job reports the count when it ends.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import BPE, Unigram, WordPiece

from fastsentiment.checks import is_count
from fastsentiment.errors import InputError, ModelError
from fastsentiment.models.architectures import architecture_of
from fastsentiment.models.modeldir import ADDED_TOKENS_FILE, ModelDir
from fastsentiment.texts import input_name
from fastsentiment.windows import check_options

log = logging.getLogger("fastsentiment")

NAMED_TRUNCATIONS = 5  # truncated inputs warned about by name in one call or job; later ones are only counted
# A text of combining marks or variation selectors alone, which a BERT tokenizer strips with the accents: the model
# would see nothing but its special tokens, and score that with confidence.
NOTHING_TO_READ = "empty text (its tokenizer keeps none of its characters)"


class Truncations:
    """The inputs one call or file job cut to the model's limit: the first `named` named in a warning, the rest
    counted (with the longest). Owned by its caller (one job, one call, one server batch), so that no count outlives
    it or is shared between threads. named=0 counts silently: the tool's own texts, or a server, which reports
    counts instead ("input 3" of a model batch would name no request)."""

    def __init__(self, named: int = NAMED_TRUNCATIONS) -> None:
        self.named = named
        self.count = 0
        self.longest = 0

    def note(self, name: str, tokens: int, limit: int, limit_name: str = "the model's limit") -> None:
        self.count += 1
        self.longest = max(self.longest, tokens)
        if self.count <= self.named:
            log.warning(
                "%s has %d tokens; truncated to %s of %d (%d tokens dropped)",
                name,
                tokens,
                limit_name,
                limit,
                tokens - limit,
            )
            if self.count == self.named:
                log.warning("further inputs over %d tokens are truncated without a line each", limit)


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for a batch of texts (int64, shape [batch, longest])."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


class TextEncoder:
    """Turns texts into token ids for one model, truncating to the model's maximum length."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        pad_id: int,
        limit_name: str = "the model's limit",
        pad_to_multiple_of: int = 1,
    ) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # The special tokens the tokenizer's template wraps one text in ([CLS] … [SEP]: 2), and of those the ones
        # after it, which a cut text keeps.
        wrapped = tokenizer.encode("a").special_tokens_mask
        self.special_tokens = sum(wrapped)
        self.closing_tokens = len(wrapped) - len(_without_trailing_ones(wrapped))
        if max_length <= self.special_tokens:
            raise InputError(
                f"max_length (--max-length) must be at least {self.special_tokens + 1} (a token of text beside the "
                f"{self.special_tokens} special tokens), got {max_length}"
            )
        self.max_length = max_length
        self.limit_name = limit_name  # what warnings call max_length: the model's, or the one asked for
        self.pad_id = pad_id
        self.pad_to_multiple_of = checked_pad_multiple(pad_to_multiple_of)

    @classmethod
    def from_model_dir(cls, model: ModelDir, max_length: int | None = None) -> TextEncoder:
        limit = model.max_length
        if max_length is not None:
            if not isinstance(max_length, int) or isinstance(max_length, bool):
                raise InputError(f"max_length (--max-length) must be a whole number of tokens, got {max_length!r}")
            if max_length > limit:
                raise InputError(f"max_length (--max-length) {max_length} exceeds what the model accepts ({limit})")
            limit = max_length
        tokenizer = load_tokenizer(model)
        pad_id = tokenizer.token_to_id(_special_token(model.tokenizer_config, "pad_token", "[PAD]"))
        if pad_id is None:
            pad_id = int(model.config.get("pad_token_id") or 0)
        return cls(tokenizer, limit, pad_id, "the model's limit" if max_length is None else "the max_length")

    def limited_to(self, max_length: int) -> TextEncoder:
        """The same tokenizer cutting at `max_length` tokens instead (a call's own limit)."""
        return TextEncoder(self._tokenizer, max_length, self.pad_id, "the max_length", self.pad_to_multiple_of)

    def padded_to_multiple_of(self, multiple: int) -> TextEncoder:
        """The same tokenizer and cut, padding each batch to a multiple of `multiple` tokens (`pad`)."""
        return TextEncoder(self._tokenizer, self.max_length, self.pad_id, self.limit_name, multiple)

    def encodings(self, texts: Sequence[str]) -> list:
        """The tokenizer's whole encodings (ids, character offsets, special-token mask), never truncated."""
        return self._tokenizer.encode_batch(list(texts))

    def encode(self, texts: Sequence[str], truncations: Truncations | None = None) -> list[list[int]]:
        """Token ids per text (special tokens included), truncated to `max_length`, each cut noted in `truncations`
        (default: one for this call, which names the first few)."""
        cuts = truncations or Truncations()
        # A name only for a text that is cut: a busy server encodes thousands a second. (Each read of `.ids` builds
        # a new list, so it is read once.)
        return [
            self.fit(ids, input_name(number), cuts) if len(ids := encoding.ids) > self.max_length else ids
            for number, encoding in enumerate(self.encodings(texts), 1)
        ]

    def check_options(self, long_text: str, stride: int | None, aggregate: str | None) -> tuple[int | None, str]:
        """`windows.check_options` for this encoder's windows: (stride, aggregate) filled in, or an InputError."""
        return check_options(long_text, stride, aggregate, self.max_length, self.special_tokens)

    def reads_nothing(self, tokens: int) -> bool:
        """Whether a text of `tokens` tokens (special ones included) is its special tokens alone: nothing of the
        text would reach the model."""
        return tokens <= self.special_tokens

    def fit(self, ids: Sequence[int], name: str, truncations: Truncations) -> list[int]:
        """`ids` cut to `max_length`, a cut noted in `truncations` under `name` ("input 3", "line 12")."""
        if len(ids) > self.max_length:
            truncations.note(name, len(ids), self.max_length, self.limit_name)
        return truncated(ids, self.max_length, self.closing_tokens)

    def pad(self, sequences: Sequence[Sequence[int]], length: int | None = None) -> Batch:
        """Pad to the longest sequence in the batch (dynamic padding), rounded up to a multiple of
        `pad_to_multiple_of` (at most to `max_length`), or to a fixed `length`."""
        longest = max(len(ids) for ids in sequences)
        width = self.padded_width(longest) if length is None else max(length, longest)
        input_ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return Batch(input_ids=input_ids, attention_mask=attention_mask)

    def padded_width(self, longest: int) -> int:
        """The width `pad` gives a batch whose longest sequence has `longest` tokens."""
        rounded = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return max(longest, min(rounded, self.max_length))


def checked_pad_multiple(multiple: Any) -> int:
    """`pad_to_multiple_of` as an int, or an InputError."""
    if not is_count(multiple):
        raise InputError(f"pad_to_multiple_of must be a whole number of at least 1, got {multiple!r}")
    return int(multiple)


def truncated(ids: Sequence[int], length: int, closing_tokens: int = 1) -> list[int]:
    """The first `length` tokens, still closed by the `closing_tokens` final special tokens ([SEP], </s>) as the
    model was trained."""
    if len(ids) <= length:
        return list(ids)
    kept = length - closing_tokens
    return [*ids[:kept], *ids[len(ids) - closing_tokens :]]


def _without_trailing_ones(mask: Sequence[int]) -> Sequence[int]:
    end = len(mask)
    while end and mask[end - 1]:
        end -= 1
    return mask[:end]


def load_tokenizer(model: ModelDir) -> Tokenizer:
    """The model's fast tokenizer, as `transformers.AutoTokenizer` builds it: tokenizer.json when present, else
    WordPiece from vocab.txt (with the tokens added to it, at their ids) for transformers' WordPiece classes alone;
    for those classes (BERT's, DistilBERT's, MPNet's) with the normalisation, splitting and [CLS] … [SEP] template
    that tokenizer_config.json's settings give, whatever tokenizer.json says; either way with the special tokens
    tokenizer_config.json names registered."""
    tokenizer_file = model.path / "tokenizer.json"
    if tokenizer_file.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:  # tokenizers raises a bare Exception for malformed files
            raise ModelError(f"{tokenizer_file}: cannot load tokenizer ({error})") from None
        named = tokenizer_class(model) or ""
        if (wordpiece_class := WORDPIECE_CLASSES.get(named)) is not None:
            tokenizer = _as_wordpiece_class(tokenizer, wordpiece_class, model)
        elif (sentencepiece_class := SENTENCEPIECE_CLASSES.get(named)) is not None:
            tokenizer = _as_sentencepiece_class(tokenizer, sentencepiece_class, model)
        elif named == ROBERTA_CLASS:
            tokenizer = _as_roberta_class(tokenizer, model)
    else:
        wordpiece_class = _vocab_txt_class(model)
        tokenizer = _wordpiece_from_vocab(model.path / "vocab.txt", model.tokenizer_config)
        # tokenizer.json lists its added tokens itself; a vocab.txt has them beside it, in the settings.
        tokenizer = _with_added_tokens(_as_wordpiece_class(tokenizer, wordpiece_class, model), model)
    return _with_named_special_tokens(tokenizer, model.tokenizer_config)


@dataclass(frozen=True)
class WordPieceClass:
    """What one of transformers' WordPiece tokenizer classes builds when tokenizer_config.json names no token:
    its [CLS] and [SEP] (MPNet's are <s> and </s>) and its unknown-word token."""

    cls_token: str
    sep_token: str
    unk_token: str = "[UNK]"
    # MPNet wraps a text with RobertaProcessing, BERT with a [CLS] $A [SEP] template: one text gets the same ids.
    roberta_template: bool = False


_BERT = WordPieceClass("[CLS]", "[SEP]")
# transformers' classes (by the names AutoTokenizer resolves, "Fast" suffix removed) that build their tokenizer
# from tokenizer_config.json's settings and keep only the vocabulary of tokenizer.json: BertTokenizer.__init__
# (transformers/models/bert/tokenization_bert.py; DistilBertTokenizer subclasses it with an __init__ of its own,
# the others are other names for it; ConvBertTokenizer, a subclass without one, reads tokenizer.json as it is) and
# MPNetTokenizer.__init__ (models/mpnet/tokenization_mpnet.py), called with the vocabulary alone by
# TokenizersBackend.convert_to_native_format (tokenization_utils_tokenizers.py). Any other name,
# PreTrainedTokenizerFast included, and one transformers does not know, loads tokenizer.json as it is.
WORDPIECE_CLASSES: dict[str, WordPieceClass] = {
    **dict.fromkeys(
        (
            "BertTokenizer",
            "DistilBertTokenizer",
            "ElectraTokenizer",
            "LayoutLMTokenizer",
            "LxmertTokenizer",
            "MobileBertTokenizer",
            "SqueezeBertTokenizer",
        ),
        _BERT,
    ),
    "MPNetTokenizer": WordPieceClass("<s>", "</s>", roberta_template=True),
}


def _vocab_txt_class(model: ModelDir) -> WordPieceClass:
    """The WordPiece class a folder's vocab.txt is read as: the one its tokenizer class names (BERT's where none is
    named). A class of another kind cuts a text into other tokens than the model was trained on, and its vocab.txt
    often reads as a WordPiece vocabulary all the same: BertJapaneseTokenizer splits words with MeCab, or (its
    "basic" splitter) composes accents and keeps Chinese characters together; BERTweet's and PhoBERT's are BPE."""
    name = tokenizer_class(model)
    if name is None:
        return _BERT
    if (wordpiece_class := WORDPIECE_CLASSES.get(name)) is None:
        named = tokenizer_class(model, as_named=True)
        raise ModelError(
            f"{model.path}: tokenizer class {named!r} is not supported without a tokenizer.json (from vocab.txt "
            "alone fastsentiment builds only BERT's and MPNet's WordPiece tokenizers); where transformers has a fast "
            "tokenizer of that class, save a tokenizer.json with "
            "`AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`"
        )
    return wordpiece_class


def tokenizer_class(model: ModelDir, *, as_named: bool = False) -> str | None:
    """The tokenizer class AutoTokenizer picks for `model`, without a "Fast" suffix (BertTokenizerFast is
    BertTokenizer) unless `as_named` (a message names the class as the folder does: PreTrainedTokenizerFast, a class
    of its own, is not PreTrainedTokenizer): tokenizer_config.json's tokenizer_class, else config.json's, else its
    model_type's."""
    for named in (model.tokenizer_config.get("tokenizer_class"), model.config.get("tokenizer_class")):
        if isinstance(named, str):  # "" too: a name no class has, so tokenizer.json is read as it is
            return named if as_named else named.removesuffix("Fast")
    architecture = architecture_of(model.model_type)
    return None if architecture is None else architecture.tokenizer_class


def _as_wordpiece_class(tokenizer: Tokenizer, wordpiece_class: WordPieceClass, model: ModelDir) -> Tokenizer:
    """`tokenizer` (its vocabulary and added tokens) with the pipeline transformers' WordPiece class rebuilds
    from tokenizer_config.json: a tokenizer.json lower-casing a cased model, or missing its template, would give
    the model other ids than it was trained on."""
    settings = model.tokenizer_config
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=_flag(model, "tokenize_chinese_chars", True),
        # None: strip accents when lower-casing, as BERT did.
        strip_accents=_flag(model, "strip_accents", None),
        lowercase=_flag(model, "do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    unk = _special_token(settings, "unk_token", wordpiece_class.unk_token)
    if isinstance(tokenizer.model, WordPiece):
        # transformers builds WordPiece(vocab, unk_token) afresh: the defaults, not tokenizer.json's, split words.
        tokenizer.model.continuing_subword_prefix = "##"
        tokenizer.model.max_input_chars_per_word = 100
        if tokenizer.model.token_to_id(unk) is not None:
            tokenizer.model.unk_token = unk
    else:  # a BPE or Unigram tokenizer.json under a WordPiece class: transformers reads its vocabulary as WordPiece's
        tokenizer.model = WordPiece(tokenizer.get_vocab(with_added_tokens=False), unk_token=unk)
    cls = _special_token(settings, "cls_token", wordpiece_class.cls_token)
    sep = _special_token(settings, "sep_token", wordpiece_class.sep_token)
    ids = _wrapping_ids(tokenizer, model, cls, sep)
    if wordpiece_class.roberta_template:
        tokenizer.post_processor = processors.RobertaProcessing(
            (sep, ids[sep]), (cls, ids[cls]), trim_offsets=True, add_prefix_space=False
        )
    else:
        tokenizer.post_processor = processors.BertProcessing((sep, ids[sep]), (cls, ids[cls]))
    return tokenizer


@dataclass(frozen=True)
class SentencePieceClass:
    """What one of transformers' SentencePiece (Unigram) classes builds around tokenizer.json's pieces and its
    precompiled character map: XLM-R's and CamemBERT's split on whitespace first (runs of spaces, a leading or a
    trailing one, make no piece of their own, as in SentencePiece); DeBERTa-v2's strip and squeeze spaces in its
    normaliser, and may lower-case and split off punctuation."""

    cls_token: str
    sep_token: str
    whitespace_split: bool  # XLM-R's and CamemBERT's; else DeBERTa-v2's normaliser and pre-tokenizer settings


# The classes whose __init__ rebuild the pipeline from tokenizer_config.json's settings (models/xlm_roberta,
# camembert and deberta_v2/tokenization_*.py in transformers 5), keeping only tokenizer.json's Unigram pieces and
# precompiled character map. A tokenizer.json written before them (the hub's XLM-R files of 2020) splits with a bare
# Metaspace: "great  film" had a piece for the second space, which the model never saw in training, and a DeBERTa
# label flipped on it.
SENTENCEPIECE_CLASSES: dict[str, SentencePieceClass] = {
    "XLMRobertaTokenizer": SentencePieceClass("<s>", "</s>", whitespace_split=True),
    "CamembertTokenizer": SentencePieceClass("<s>", "</s>", whitespace_split=True),
    "DebertaV2Tokenizer": SentencePieceClass("[CLS]", "[SEP]", whitespace_split=False),
}


def _as_sentencepiece_class(
    tokenizer: Tokenizer, sentencepiece_class: SentencePieceClass, model: ModelDir
) -> Tokenizer:
    """`tokenizer` (its Unigram pieces and added tokens) with the pipeline transformers' SentencePiece class
    rebuilds from tokenizer_config.json; a tokenizer.json of another model kind is read as it is, as there is no
    Unigram vocabulary to rebuild around."""
    if not isinstance(tokenizer.model, Unigram):
        return tokenizer
    # The normaliser alone, as JSON (its pickled state): the whole tokenizer's took 150 ms for a 250,000-piece vocabulary
    normalizer = json.loads(tokenizer.normalizer.__getstate__()) if tokenizer.normalizer is not None else None
    charsmap = _precompiled_charsmap(normalizer)
    prepend = "always" if _init_flag(model, "add_prefix_space", True) else None
    if sentencepiece_class.whitespace_split:
        tokenizer.normalizer = normalizers.Precompiled(charsmap) if charsmap is not None else None
        steps = [pre_tokenizers.WhitespaceSplit()]
        prepend = prepend or "never"
    else:
        lowercase = [normalizers.Lowercase()] if _init_flag(model, "do_lower_case", False) else []
        if charsmap is not None:
            squeeze = [normalizers.Precompiled(charsmap), normalizers.Strip(left=False, right=True),
                       normalizers.Replace(Regex(r" {2,}"), " ")]  # fmt: skip
        else:
            squeeze = [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                       normalizers.Strip(left=False, right=True)]  # fmt: skip
        tokenizer.normalizer = normalizers.Sequence([*lowercase, *squeeze])
        steps = [pre_tokenizers.Punctuation(behavior="isolated")] if _init_flag(model, "split_by_punct", False) else []
        prepend = prepend or "first"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*steps, pre_tokenizers.Metaspace("▁", prepend_scheme=prepend)])
    # XLM-R and CamemBERT wrap a text in their bos and eos tokens, DeBERTa-v2 in its cls and sep
    first, last = ("bos_token", "eos_token") if sentencepiece_class.whitespace_split else ("cls_token", "sep_token")
    cls = _special_token(model.tokenizer_config, first, sentencepiece_class.cls_token)
    sep = _special_token(model.tokenizer_config, last, sentencepiece_class.sep_token)
    ids = _wrapping_ids(tokenizer, model, cls, sep)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", special_tokens=[(cls, ids[cls]), (sep, ids[sep])]
    )
    return tokenizer


# transformers 5's RobertaTokenizer.__init__ (models/roberta/tokenization_roberta.py) rebuilds the byte-level pipeline
# around tokenizer.json's BPE from tokenizer_config.json's add_prefix_space and trim_offsets.
ROBERTA_CLASS = "RobertaTokenizer"


def _as_roberta_class(tokenizer: Tokenizer, model: ModelDir) -> Tokenizer:
    """`tokenizer` (its BPE vocabulary, merges and added tokens) with the pipeline RobertaTokenizer rebuilds: a
    tokenizer.json that disagrees with tokenizer_config.json on add_prefix_space numbered a text's first word as
    another piece than transformers does. One of another model kind is read as it is."""
    if not isinstance(tokenizer.model, BPE):
        return tokenizer
    prefix = _flag(model, "add_prefix_space", False)
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    cls = _special_token(model.tokenizer_config, "cls_token", "<s>")
    sep = _special_token(model.tokenizer_config, "sep_token", "</s>")
    ids = _wrapping_ids(tokenizer, model, cls, sep)
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, ids[sep]), (cls, ids[cls]), trim_offsets=_flag(model, "trim_offsets", True), add_prefix_space=prefix
    )
    return tokenizer


def _precompiled_charsmap(normalizer: dict | None) -> bytes | None:
    """SentencePiece's precompiled character map in a tokenizer.json normaliser (alone or in a sequence), as
    transformers takes it from there."""
    steps = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "Precompiled" and step.get("precompiled_charsmap"):
            return base64.b64decode(step["precompiled_charsmap"])
    return None


def _wrapping_ids(tokenizer: Tokenizer, model: ModelDir, cls: str, sep: str) -> dict[str, int]:
    """The ids of the tokens a class wraps a text in, refused in one line where the vocabulary lacks one."""
    ids = {token: tokenizer.token_to_id(token) for token in (cls, sep)}
    if None in ids.values():
        missing = " and ".join(token for token, id_ in ids.items() if id_ is None)
        raise ModelError(f"{model.path}: the tokenizer's vocabulary has no {missing} to wrap a text in")
    return ids


def _init_flag(model: ModelDir, key: str, default: bool) -> bool:
    """A true/false setting of tokenizer_config.json that a class's __init__ reads by its truth (`default` when
    absent): null is false there (`"always" if add_prefix_space else "never"`), as saved configs may write it; other
    values are refused as `_flag` refuses them."""
    if model.tokenizer_config.get(key, default) is None:
        return False
    return bool(_flag(model, key, default))


def _flag(model: ModelDir, key: str, default: bool | None) -> bool | None:
    """A true/false setting of tokenizer_config.json (`default` when absent). Another value (null only where the
    default is null) is refused: transformers fails on some ("do_lower_case": "false" in BertTokenizer) and reads
    others by Python's truth ("false" is true there), so no reading of it is safe to guess."""
    value = model.tokenizer_config.get(key, default)
    if not (isinstance(value, bool) or (value is None and default is None)):
        raise ModelError(f"{model.path / 'tokenizer_config.json'}: {key} must be true or false, got {value!r}")
    return value


SPECIAL_TOKEN_KEYS = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")


def _special_token(tokenizer_config: dict, key: str, default: str | None = None) -> str | None:
    """The token a tokenizer_config.json names under `key`, or `default`."""
    return _token_content(tokenizer_config.get(key)) or default


def _token_content(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string, or (older configs) an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _named_special_tokens(tokenizer_config: dict) -> list[str]:
    """The special tokens tokenizer_config.json names: under SPECIAL_TOKEN_KEYS and additional_special_tokens."""
    named = [_special_token(tokenizer_config, key) for key in SPECIAL_TOKEN_KEYS]
    named += [_token_content(token) for token in tokenizer_config.get("additional_special_tokens") or []]
    return [token for token in dict.fromkeys(named) if token is not None]


def _with_named_special_tokens(tokenizer: Tokenizer, tokenizer_config: dict) -> Tokenizer:
    """A text that contains a special token ("<pad>") gets that token's id from transformers, which registers the
    tokens tokenizer_config.json names; a tokenizer.json that does not list one among its added tokens would cut the
    text into pieces instead, and the model would see another input. Only tokens of the vocabulary are registered,
    so no id changes."""
    registered = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    missing = [
        token
        for token in _named_special_tokens(tokenizer_config)
        if token not in registered and tokenizer.token_to_id(token) is not None
    ]
    if missing:
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in missing])
    return tokenizer


def _wordpiece_from_vocab(vocab: Path, tokenizer_config: dict) -> Tokenizer:
    """BERT's WordPiece, with the special tokens the config names (MPNet's vocab.txt holds <s> and </s>)."""
    try:
        wordpiece = BertWordPieceTokenizer(
            str(vocab),
            unk_token=_special_token(tokenizer_config, "unk_token", "[UNK]"),
            sep_token=_special_token(tokenizer_config, "sep_token", "[SEP]"),
            cls_token=_special_token(tokenizer_config, "cls_token", "[CLS]"),
            pad_token=_special_token(tokenizer_config, "pad_token", "[PAD]"),
            mask_token=_special_token(tokenizer_config, "mask_token", "[MASK]"),
        )  # its normaliser and template: `_as_wordpiece_class`, from the same settings as a tokenizer.json's
    except Exception as error:
        raise ModelError(f"{vocab}: cannot build a WordPiece tokenizer ({error})") from None
    # BertWordPieceTokenizer wraps a Tokenizer; the inner one is what encode_batch runs on.
    return wordpiece._tokenizer


# The settings of an added token that transformers keeps (tokenizers' AddedToken arguments); other keys are ignored.
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def _with_added_tokens(tokenizer: Tokenizer, model: ModelDir) -> Tokenizer:
    """vocab.txt's tokenizer with the tokens a fine-tune added to it ("[USER]", "@user"), as transformers adds them:
    in order of id after the vocabulary, with their own settings (matched before normalisation or after, whole words
    or within them). Without them such a token was cut into pieces, and the model saw another input. The ids the
    folder states are checked against the ids the tokens get, so that no token is silently read as another's row of
    the embeddings (transformers numbers them in order whatever the folder says)."""
    stated, source = _stated_added_tokens(model)
    if not stated:
        return tokenizer
    vocabulary = tokenizer.get_vocab_size(with_added_tokens=False)
    tokenizer.add_tokens([stated[index] for index in sorted(stated)])
    for index, token in sorted(stated.items()):
        given = tokenizer.token_to_id(token.content)
        if given != index:
            raise ModelError(
                f"{source}: the added token {token.content!r} has id {index} there, but {given} when added after "
                f"vocab.txt's {vocabulary} tokens in order of id, as transformers adds it"
            )
    return tokenizer


def _stated_added_tokens(model: ModelDir) -> tuple[dict[int, AddedToken], Path]:
    """The added tokens by id and the file that states them: tokenizer_config.json's added_tokens_decoder, else
    added_tokens.json (the older file, whose tokens are special where tokenizer_config.json names them so), as
    transformers reads them."""
    settings = model.tokenizer_config
    config_file = model.path / "tokenizer_config.json"
    if "added_tokens_decoder" in settings:
        decoder = settings["added_tokens_decoder"]
        if not isinstance(decoder, dict) or not all(
            str(index).isascii()
            and str(index).isdigit()  # "³" is a digit to isdigit, not to int()
            and isinstance(entry, dict)
            and _token_content(entry) is not None
            and all(isinstance(entry.get(flag, False), bool) for flag in ADDED_TOKEN_FLAGS)
            for index, entry in decoder.items()
        ):
            raise ModelError(
                f"{config_file}: added_tokens_decoder must map token ids to tokens "
                '({"content": "[USER]", "special": true, ...})'
            )
        tokens = {
            int(index): AddedToken(
                entry["content"], **{flag: entry[flag] for flag in ADDED_TOKEN_FLAGS if flag in entry}
            )
            for index, entry in decoder.items()
        }
        return tokens, config_file
    added_file = model.path / ADDED_TOKENS_FILE
    if not added_file.is_file():
        return {}, added_file
    try:
        ids = json.loads(added_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{added_file}: malformed JSON ({error})") from None
    if not isinstance(ids, dict) or not all(
        token and isinstance(index, int) and not isinstance(index, bool) and index >= 0 for token, index in ids.items()
    ):
        raise ModelError(f'{added_file}: expected a JSON object from added tokens to their ids ({{"[USER]": 30522}})')
    special = set(_named_special_tokens(settings))
    tokens = {
        index: AddedToken(token, normalized=token not in special, special=token in special)
        for token, index in ids.items()
    }
    return tokens, added_file

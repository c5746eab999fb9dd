"""The one resolver of ``builtin:NAME`` specs (aiayn.data.builtin.specs) and the readers that call it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiayn.data.builtin import BUILTIN_CORPORA, load_builtin_corpus
from aiayn.data.builtin.specs import (
    BuiltinKind,
    builtin_names,
    is_builtin,
    kinds_of,
    known_builtins,
    resolve_builtin,
)
from aiayn.data.images import load_images
from aiayn.data.lm_data import load_text, load_train_valid
from aiayn.errors import AiaynError


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("builtin:zh-en", BuiltinKind.TRANSLATION, "zh-en"),
        ("builtin:copy", BuiltinKind.TRANSLATION, "copy"),
        ("builtin:reverse", BuiltinKind.TRANSLATION, "reverse"),
        ("builtin:bible-fr-en", BuiltinKind.TRANSLATION, "bible-fr-en"),
        ("builtin:shakespeare", BuiltinKind.TEXT, "shakespeare"),
        ("builtin:digits", BuiltinKind.IMAGES, "digits"),
        ("builtin:minilm", BuiltinKind.TEXT_MODEL, "minilm"),
        ("builtin:minilm", BuiltinKind.TOKENIZER, "minilm"),
    ],
)
def test_each_kind_resolves_to_its_bare_name(spec, kind, name):
    assert resolve_builtin(spec, kind) == name
    assert resolve_builtin(Path(spec), kind) == name  # a flag typed as a path reads the same


def test_every_catalogued_name_resolves_as_its_own_kind():
    for kind in BuiltinKind:
        for name in builtin_names(kind):
            assert kind in kinds_of(name)
            assert resolve_builtin(f"builtin:{name}", kind) == name


def test_the_corpus_loader_and_the_resolver_share_one_list():
    assert BUILTIN_CORPORA == builtin_names(BuiltinKind.TRANSLATION) == ("zh-en", "copy", "reverse")


def test_bible_is_a_family_whose_languages_the_loader_checks():
    # Any bible-* name is a translation corpus to the resolver; bible.parse_name judges the pair.
    assert resolve_builtin("builtin:bible-xx-en", BuiltinKind.TRANSLATION) == "bible-xx-en"
    with pytest.raises(AiaynError, match="no public-domain Bible for language 'xx'"):
        load_builtin_corpus("bible-xx-en", "train")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            BuiltinKind.TRANSLATION,
            "builtin:nope: unknown built-in translation corpus; known translation corpora: "
            "builtin:zh-en, builtin:copy, builtin:reverse, "
            "builtin:bible-SRC-TGT (e.g. builtin:bible-fr-en)",
        ),
        (BuiltinKind.TEXT, "builtin:nope: unknown built-in text; known texts: builtin:shakespeare"),
        (
            BuiltinKind.IMAGES,
            "builtin:nope: unknown built-in image set; known image sets: builtin:digits",
        ),
        (
            BuiltinKind.TEXT_MODEL,
            "builtin:nope: unknown built-in text model; known text models: builtin:minilm",
        ),
        (
            BuiltinKind.TOKENIZER,
            "builtin:nope: unknown built-in tokenizer; known tokenizers: builtin:minilm",
        ),
    ],
)
def test_an_unknown_name_lists_the_names_of_the_kind_wanted(kind, message):
    with pytest.raises(AiaynError) as caught:
        resolve_builtin("builtin:nope", kind)
    assert str(caught.value) == message


def test_an_empty_name_is_unknown():
    with pytest.raises(AiaynError, match="builtin:: unknown built-in text; known texts"):
        resolve_builtin("builtin:", BuiltinKind.TEXT)


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        (
            "builtin:zh-en",
            BuiltinKind.TEXT,
            "builtin:zh-en is a translation corpus, not a text; texts: builtin:shakespeare",
        ),
        (
            "builtin:shakespeare",
            BuiltinKind.IMAGES,
            "builtin:shakespeare is a text, not an image set; image sets: builtin:digits",
        ),
        (
            "builtin:digits",
            BuiltinKind.TEXT_MODEL,
            "builtin:digits is an image set, not a text model; text models: builtin:minilm",
        ),
        (
            "builtin:bible-fr-en",
            BuiltinKind.TEXT,
            "builtin:bible-fr-en is a translation corpus, not a text; texts: builtin:shakespeare",
        ),
        (
            "builtin:minilm",
            BuiltinKind.TRANSLATION,
            "builtin:minilm is a text model, not a translation corpus; translation corpora: "
            "builtin:zh-en, builtin:copy, builtin:reverse, "
            "builtin:bible-SRC-TGT (e.g. builtin:bible-fr-en)",
        ),
    ],
)
def test_a_name_of_another_kind_says_which_kind_it_is(spec, kind, message):
    with pytest.raises(AiaynError) as caught:
        resolve_builtin(spec, kind)
    assert str(caught.value) == message


def test_the_flag_starts_the_message():
    with pytest.raises(AiaynError) as caught:
        resolve_builtin("builtin:nope", BuiltinKind.TOKENIZER, flag="--tokenizer")
    assert str(caught.value) == (
        "--tokenizer builtin:nope: unknown built-in tokenizer; known tokenizers: builtin:minilm"
    )
    with pytest.raises(AiaynError, match=r"^--text builtin:zh-en is a translation corpus"):
        resolve_builtin("builtin:zh-en", BuiltinKind.TEXT, flag="--text")


def test_only_the_prefix_makes_a_spec():
    assert is_builtin("builtin:zh-en") and is_builtin(Path("builtin:digits"))
    assert not is_builtin("corpus.tsv") and not is_builtin("data/builtin:x")
    assert not is_builtin(Path("/tmp/builtin"))
    with pytest.raises(ValueError, match="not a builtin:NAME spec"):
        resolve_builtin("corpus.tsv", BuiltinKind.TRANSLATION)


def test_bare_names_for_the_corpus_loader():
    known = known_builtins(BuiltinKind.TRANSLATION, prefixed=False)
    assert known == "zh-en, copy, reverse, bible-SRC-TGT (e.g. bible-fr-en)"
    with pytest.raises(AiaynError, match="known corpora: zh-en, copy, reverse, bible-SRC-TGT"):
        load_builtin_corpus("en-de", "train")


# ---- the readers in the data layer call the resolver -----------------------------------------------


def test_the_text_reader_refuses_a_translation_corpus():
    with pytest.raises(AiaynError, match="builtin:zh-en is a translation corpus, not a text"):
        load_text("builtin:zh-en")
    with pytest.raises(AiaynError, match="unknown built-in text; known texts: builtin:shakespeare"):
        load_train_valid("builtin:nope")


def test_the_image_reader_refuses_a_text():
    with pytest.raises(AiaynError, match="builtin:shakespeare is a text, not an image set"):
        load_images("builtin:shakespeare", "train")
    with pytest.raises(AiaynError, match="unknown built-in image set; known image sets"):
        load_images("builtin:mnist", "test")

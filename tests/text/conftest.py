import pytest

pytest.importorskip(
    "transformers", reason="the text tests need Hugging Face Transformers (pip install 'fastclr[text]')"
)


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """``hf:FOLDER`` of a tiny random BertModel with its fast tokenizer (tests/textkit.py)."""
    from textkit import tiny_bert

    return "hf:" + str(tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tokenizer(tiny_arch):
    from fastclr.text.encoder import load_tokenizer

    return load_tokenizer(tiny_arch)

"""generate() and compare(): chat-templated prompts, base vs adapter from one model."""

from __future__ import annotations

import torch

import lora_nb


def perturbed_adapter(llama):
    model, tok = lora_nb.load(llama)
    model = lora_nb.inject(model, r=4, verbose=False)
    torch.manual_seed(0)
    with torch.no_grad():  # a visibly different adapter without a training run
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    return model, tok


def test_generate_uses_the_chat_template(llama):
    model, tok = lora_nb.load(llama)
    prompt = "Even or odd?\n\n42"
    answer = lora_nb.generate(model, tok, prompt, max_new_tokens=5)
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    assert answer == tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    batch = lora_nb.generate(model, tok, [prompt, "Even or odd?\n\n7"], max_new_tokens=5)
    assert isinstance(batch, list) and batch[0] == answer  # left padding keeps batched answers identical


def test_compare_shows_base_and_adapter_side_by_side(llama):
    model, tok = perturbed_adapter(llama)
    prompts = ["Even or odd?\n\n42", "Tell me whether the number is even or odd.\n\n9"]
    result = lora_nb.compare(model, tok, prompts, max_new_tokens=5)
    plain, _ = lora_nb.load(llama)
    assert [r[1] for r in result.rows] == lora_nb.generate(plain, tok, prompts, max_new_tokens=5)
    assert [r[2] for r in result.rows] == lora_nb.generate(model, tok, prompts, max_new_tokens=5)  # adapter back on
    assert [r[1] for r in result.rows] != [r[2] for r in result.rows]
    assert "base" in str(result) and "<table" in result._repr_html_()


def test_compare_needs_an_adapter(llama):
    model, tok = lora_nb.load(llama)
    try:
        lora_nb.compare(model, tok, "hi")
    except lora_nb.ConfigError as e:
        assert "inject" in str(e)
    else:
        raise AssertionError("compare accepted a model without an adapter")


def test_compare_says_when_the_base_is_the_untrained_embedded_model(llama, tmp_path):
    import shutil

    from lora_nb.inference.generation import UNTRAINED, Comparison

    model, tok = perturbed_adapter(llama)
    result = lora_nb.compare(model, tok, "Even or odd?\n\n42", max_new_tokens=3)
    assert result.note == UNTRAINED and str(result).startswith(UNTRAINED + "\n") and UNTRAINED in result._repr_html_()
    copy = shutil.copytree(llama, tmp_path / "pretrained")  # a model of the user's own: no note
    model, tok = lora_nb.load(str(copy))
    assert lora_nb.compare(lora_nb.inject(model, r=4, verbose=False), tok, "hi", max_new_tokens=2).note == ""
    from lora_nb.inference.generation import is_embedded
    from lora_nb.core.files import cache_dir

    # pretrained_base()'s place
    converted = shutil.copytree(llama, cache_dir() / "pretrained" / f"copy-{tmp_path.name}")
    try:
        assert is_embedded(lora_nb.load(str(converted))[0]) is False and is_embedded(lora_nb.load(llama)[0]) is True
    finally:
        shutil.rmtree(converted)
    raw = Comparison([("Is 7 even?", "\\\ufffdU\ufffd\x1b[0m", "odd")])
    assert "\ufffd" not in str(raw) + raw._repr_html_() and "\x1b" not in str(raw) and "\\·U··[0m" in str(raw)
    assert raw.rows[0][1] == "\\\ufffdU\ufffd\x1b[0m"  # the answers themselves are kept as generated


def test_a_misspelt_or_mistyped_generation_setting_is_one_line(llama):
    import pytest

    model, tok = lora_nb.load(llama)
    cases = [(dict(max_new_tokenz=4),
              r"^generate.max_new_tokenz: is not a generation setting\..*Did you mean 'max_new_tokens'\?"),
             (dict(max_new_tokens="4"), r"^generate.max_new_tokens: must be a number"),
             (dict(max_new_tokens=0), r"^generate.max_new_tokens: must be a whole number above 0"),
             (dict(do_sample="false"), r"^generate.do_sample: must be True or False"),
             (dict(temperature="hot"), r"^generate.temperature: must be a number")]
    for kwargs, message in cases:
        with pytest.raises(lora_nb.ConfigError, match=message) as error:
            lora_nb.generate(model, tok, "Is 4 even?", **kwargs)
        assert "\n" not in str(error.value)
    assert isinstance(lora_nb.generate(model, tok, "Is 4 even?", max_new_tokens=2, top_k=5), str)

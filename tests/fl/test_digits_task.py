"""The digits task: data read without scikit-learn's import, and its hand-made LoRA layers."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import torch

from fedspec.fl.lora import lora_pairs, trainable_names
from fedspec.fl.splits import digits_arrays
from fedspec.fl.tasks import load_task


def test_digits_arrays_equal_scikit_learns_load_digits() -> None:
    from sklearn.datasets import load_digits

    x, y = digits_arrays()
    ref = load_digits()
    np.testing.assert_array_equal(x, (ref.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, ref.target)
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (1797, 64)


def test_loading_digits_imports_neither_peft_nor_transformers_nor_sklearn() -> None:
    code = (
        "import sys; from fedspec.fl.tasks import load_task; t = load_task('digits', 200); t.build_model(4, 2.0); "
        "print(sorted(m for m in ('peft', 'transformers', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_lora_starts_as_the_base_model_and_trains_only_adapters_and_head() -> None:
    task = load_task("digits", 200)
    torch.manual_seed(0)
    model = task.build_model(4, 2.0)
    names = trainable_names(model)
    assert names == ["fc1.lora_A.weight", "fc1.lora_B.weight", "fc2.lora_A.weight", "fc2.lora_B.weight", "head.weight", "head.bias"]
    assert [(p.a, p.b) for p in lora_pairs(names)] == [("fc1.lora_A.weight", "fc1.lora_B.weight"), ("fc2.lora_A.weight", "fc2.lora_B.weight")]
    x = task.test.features[:8]
    base = torch.nn.functional.relu
    m = model
    expected = m.head(base(m.fc2.base(base(m.fc1.base(x)))))
    torch.testing.assert_close(model(x), expected)  # B = 0 at the start
    # A non-zero B adds scaling · B A x to the layer.
    with torch.no_grad():
        model.fc1.lora_B.weight.normal_()
    h = m.fc1(x)
    torch.testing.assert_close(h, m.fc1.base(x) + 2.0 * x @ m.fc1.lora_A.weight.T @ m.fc1.lora_B.weight.T)
    assert m.fc1.lora_A.weight.abs().max() <= 1 / 8 + 1e-6  # kaiming-uniform a=√5 on 64 inputs: U(±1/√64)


def test_digits_lora_in_eval_mode_computes_the_same_layer_with_the_merged_weight() -> None:
    task = load_task("digits", 200)
    torch.manual_seed(0)
    layer = task.build_model(4, 2.0).fc2
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.rand(32, 128)
    reference = layer.base(x).double() + 2.0 * (x.double() @ layer.lora_A.weight.T.double() @ layer.lora_B.weight.T.double())
    trained = layer.train()(x)
    evaluated = layer.eval()(x)
    torch.testing.assert_close(evaluated.double(), reference, rtol=1e-5, atol=1e-5)  # float32 against float64
    torch.testing.assert_close(evaluated, trained)


def test_a_cache_folder_that_cannot_be_written_costs_a_pretraining_not_the_item(tmp_path, monkeypatch, caplog) -> None:
    """The base weights are cached per machine to save time; a full or read-only cache folder must not fail items."""
    torch.manual_seed(0)  # the adapters' random init
    cached = load_task("digits", 200).build_model(4, 2.0).state_dict()  # through the tests' shared cache
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("FEDSPEC_CACHE", str(blocked / "cache"))  # a folder that cannot be made
    with caplog.at_level(logging.WARNING):
        task = load_task("digits", 200)
    torch.manual_seed(0)
    rebuilt = task.build_model(4, 2.0).state_dict()
    assert "base weights not cached" in caplog.text and str(blocked / "cache") in caplog.text
    assert rebuilt.keys() == cached.keys()
    for name, tensor in cached.items():
        torch.testing.assert_close(rebuilt[name], tensor, rtol=0, atol=0)

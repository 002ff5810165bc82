"""The backbone templates (templates/<family>.py), checked against the catalogue and against timm.

The template files are loaded as plain files, the way they run in a user's checkout (torch only).
timm (pretrained=False, nothing downloaded) is the reference: parameter counts, checkpoint names and
feature maps must match it. ONNX export is checked with onnxruntime.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


catalogue = _load_file(TEMPLATES / "__init__.py", "_mbpatch_test_catalogue")
CATALOG = catalogue.CATALOG
IDS = list(CATALOG)
FAMILIES = sorted({b.family for b in CATALOG.values()})


@lru_cache(maxsize=None)
def family(name: str):
    """The template file `templates/<name>.py` as a module of its own (no package, no relative imports)."""
    return _load_file(TEMPLATES / f"{name}.py", f"_mbpatch_test_template_{name}")


def backbone_cls(bid: str):
    b = CATALOG[bid]
    return getattr(family(b.family), b.cls)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Run this module's (small) CPU work on one thread: on a 2-core machine that is about as fast as two
    when idle, and several times faster when other jobs share the cores (OpenMP barriers stall then)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN statistics/affines and layer scales non-trivial values, so comparisons test every path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # layer scale, 1e-5 at init would hide its branch
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
    return model


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    scale = max(1.0, float(b.abs().max()))
    return float((a - b).abs().max()) <= tol * scale


# ---------------------------------------------------------------------------------------------------------
# timm reference (built once per backbone; tests that use it are grouped by pytest)
# ---------------------------------------------------------------------------------------------------------


class Reference:
    def __init__(self, bid: str, folder: Path):
        timm = pytest.importorskip("timm")
        b = CATALOG[bid]
        torch.manual_seed(0)
        full = randomize_(timm.create_model(b.reference, pretrained=False))
        self.state = {k: v.clone() for k, v in full.state_dict().items()}
        self.path = folder / f"{b.reference}.pth"
        torch.save(self.state, self.path)
        self.wide = bid.endswith("_wide")
        if self.wide:
            # SSDLite's taps, read off timm's whole network: the 1x1 expansion (conv_pw + bn1 with its ReLU6) of
            # the first block of timm's stages 2, 3 and 5 (the stride-2 stages after strides 4, 8, 16), then
            # forward_features (conv_head + bn2); every parameter but the classifier's
            self.features = full.eval()
            classifier = sum(p.numel() for p in full.classifier.parameters())
            self.params = sum(p.numel() for p in full.parameters()) - classifier
            return
        del full
        feats = timm.create_model(b.reference, pretrained=False, features_only=True)
        # FeatureListNet (RepViT) flattens `stages.0` into `stages_0`; the others keep timm's names.
        feats.load_state_dict({k: self.state[re.sub(r"^(\w+?)_(\d+)\.", r"\1.\2.", k)] for k in feats.state_dict()})
        self.features = feats.eval()
        self.params = sum(p.numel() for p in feats.parameters())
        self.taps = list(zip(feats.feature_info.reduction(), feats.feature_info.channels()))
        self.extra_tap = None
        if b.family == "mobilenetv4":
            # timm's stride-32 tap is after the 1x1 conv to 960 (blocks.4); ours ends before it, at blocks.3.
            self.params -= sum(p.numel() for p in feats.blocks[4].parameters())
            self.extra_tap = feats.blocks[3]

    @torch.no_grad()
    def maps(self, x: torch.Tensor):
        """timm's features_only maps at strides 4, 8, 16, 32 (MobileNetV4: stride 32 before the 960 conv;
        MobileNetV2's wide variants: the expansions and the final 1x1 conv)."""
        if self.wide:
            expansions = []
            keep = lambda module, inputs, out: expansions.append(out)  # noqa: E731
            handles = [self.features.blocks[i][0].bn1.register_forward_hook(keep) for i in (2, 3, 5)]
            try:
                last = self.features.forward_features(x)
            finally:
                for handle in handles:
                    handle.remove()
            return expansions + [last]
        captured = {}
        handle = None
        if self.extra_tap is not None:
            handle = self.extra_tap.register_forward_hook(lambda m, i, o: captured.setdefault("s32", o))
        try:
            outs = self.features(x)
        finally:
            if handle is not None:
                handle.remove()
        by_stride = {r: o for (r, _), o in zip(self.taps, outs)}
        if "s32" in captured:
            by_stride[32] = captured["s32"]
        return [by_stride[s] for s in (4, 8, 16, 32)]


@pytest.fixture(scope="module", params=IDS)
def ref(request, tmp_path_factory):
    bid = request.param
    return bid, Reference(bid, tmp_path_factory.mktemp(bid))


# ---------------------------------------------------------------------------------------------------------
# The template files and the catalogue
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMILIES)
def test_template_imports_only_torch_and_stdlib(fam):
    tree = ast.parse((TEMPLATES / f"{fam}.py").read_text(encoding="utf-8"))
    stdlib = set(getattr(sys, "stdlib_module_names", ())) or {"json", "math", "struct", "pathlib"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in {fam}.py"
            roots = [node.module.split(".")[0]]
        elif isinstance(node, ast.Import):
            roots = [a.name.split(".")[0] for a in node.names]
        else:
            continue
        for root in roots:
            assert root == "torch" or root in stdlib, f"{fam}.py imports {root}"
    source = (TEMPLATES / f"{fam}.py").read_text(encoding="utf-8")
    assert "torch.hub" not in source and "http" not in source, "templates never download anything"


@pytest.mark.parametrize("fam", FAMILIES)
def test_all_lists_exactly_the_catalogue_names(fam):
    mod = family(fam)
    expected = [n for b in CATALOG.values() if b.family == fam for n in b.names]
    assert len(mod.__all__) == len(set(mod.__all__))
    assert set(mod.__all__) == set(expected)
    assert callable(mod.load_timm_weights)


@pytest.mark.parametrize("bid", IDS)
def test_names_are_one_class(bid):
    b = CATALOG[bid]
    mod = family(b.family)
    cls = getattr(mod, b.cls)
    assert inspect.isclass(cls) and issubclass(cls, nn.Module)
    for name in b.names:
        assert getattr(mod, name) is cls, f"{b.family}.{name} is not {b.cls}"
    params = inspect.signature(cls.__init__).parameters
    assert list(params)[:2] == ["self", "weights"]
    assert all(p.default is not inspect.Parameter.empty for n, p in params.items() if n != "self")


@pytest.mark.parametrize("bid", IDS)
def test_width_list_without_forward_pass(bid, monkeypatch):
    cls = backbone_cls(bid)

    def no_forward(self, *args, **kwargs):
        raise AssertionError("forward called during construction")

    monkeypatch.setattr(cls, "forward", no_forward)
    model = cls()
    assert isinstance(model.width_list, list)
    assert model.width_list == list(CATALOG[bid].channels)
    assert model.channel == model.width_list


# ---------------------------------------------------------------------------------------------------------
# Against timm
# ---------------------------------------------------------------------------------------------------------


def test_parameter_count_matches_timm(ref):
    bid, r = ref
    ours = sum(p.numel() for p in backbone_cls(bid)().parameters())
    assert ours == r.params


@pytest.mark.slow
def test_timm_checkpoint_loads_and_maps_match(ref):
    bid, r = ref
    cls = backbone_cls(bid)
    model = cls(weights=str(r.path)).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, r.state[name]), name
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
    theirs = r.maps(x)
    assert isinstance(ours, list) and len(ours) == 4
    for s, a, b in zip((4, 8, 16, 32), ours, theirs):
        assert a.shape == b.shape == (2, CATALOG[bid].channels[(4, 8, 16, 32).index(s)], 256 // s, 192 // s)
        assert close(a, b), f"stride {s}: max diff {float((a - b).abs().max())}"


@pytest.mark.slow
def test_timm_extra_keys_ignored_missing_key_named(ref, tmp_path):
    bid, r = ref
    cls = backbone_cls(bid)
    mod = family(CATALOG[bid].family)
    model = cls()
    ignored = mod.load_timm_weights(model, r.state)
    assert ignored and all(k not in model.state_dict() for k in ignored)
    assert set(ignored) == set(r.state) - set(model.state_dict())

    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    victim = own[len(own) // 2]
    broken = {k: v for k, v in r.state.items() if k != victim}
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(RuntimeError, match=re.escape(victim)):
        cls(weights=str(path))

    key = next(k for k in own if k.endswith(".weight") and r.state[k].dim() == 4)
    wrong = dict(r.state, **{key: torch.zeros(1, 1, 1, 1)})
    with pytest.raises(RuntimeError, match=re.escape(key)):
        cls(weights=wrong)


# ---------------------------------------------------------------------------------------------------------
# Shapes, modes, gradients
# ---------------------------------------------------------------------------------------------------------


def expected_shapes(bid, batch, h, w):
    return [(batch, c, h // s, w // s) for c, s in zip(CATALOG[bid].channels, (4, 8, 16, 32))]


@pytest.mark.parametrize("bid", IDS)
def test_forward_non_square_batch2_train_and_eval(bid):
    model = backbone_cls(bid)()
    for mode, (h, w) in ((True, (160, 224)), (False, (224, 96))):
        model.train(mode)
        with torch.set_grad_enabled(mode):
            outs = model(torch.randn(2, 3, h, w))
        assert [tuple(o.shape) for o in outs] == expected_shapes(bid, 2, h, w)
        assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.slow
@pytest.mark.parametrize("bid", [b for b in IDS if "hybrid" in b])
def test_forward_640x480_both_orientations(bid):
    """The tutorials' Mobile MQA code breaks on 640x480 and on batch > 1; ours must not.

    Only the attention (hybrid) networks have size-dependent code; the others get non-square inputs in
    the test above (smaller, to keep this file fast on a 2-core CPU).
    """
    model = backbone_cls(bid)()
    with torch.no_grad():
        for mode, (h, w) in ((True, (480, 640)), (False, (640, 480))):
            model.train(mode)
            outs = model(torch.randn(2, 3, h, w))
            assert [tuple(o.shape) for o in outs] == expected_shapes(bid, 2, h, w)
            assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("bid", IDS)
def test_every_parameter_gets_a_gradient(bid):
    model = backbone_cls(bid)().train()
    outs = model(torch.randn(2, 3, 64, 96))
    sum(o.float().mean() for o in outs).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters the forward pass does not use: {unused}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bid", IDS)
def test_cuda_matches_cpu_train_and_eval(bid):
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = randomize_(backbone_cls(bid)()).eval()
    x = torch.randn(2, 3, 480, 640)
    with torch.no_grad():
        want = model(x)
        got = model.cuda()(x.cuda())
    for g, w in zip(got, want):
        assert close(g.cpu(), w, tol=1e-3), f"max diff {float((g.cpu() - w).abs().max())}"
    model.train()
    outs = model(torch.randn(2, 3, 640, 480, device="cuda"))
    assert [tuple(o.shape) for o in outs] == expected_shapes(bid, 2, 640, 480)
    sum(o.float().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_mobilenetv2_size_and_module_tree():
    model = backbone_cls("mobilenetv2")()
    assert sum(p.numel() for p in model.parameters()) == 1_811_712
    # 230: timm's module tree of mobilenetv2_100 up to blocks.6 (BatchNormAct2d with its `drop` and `act`
    # slots, seven stage Sequentials) without the per-block aa/se/drop_path identities.
    assert len(list(model.modules())) == 230


# ---------------------------------------------------------------------------------------------------------
# Checkpoint formats
# ---------------------------------------------------------------------------------------------------------


def test_checkpoint_containers_and_safetensors(tmp_path):
    mod = family("mobilenetv2")
    src = randomize_(mod.MobileNetV2())
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state["classifier.weight"] = torch.zeros(1000, 1280)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "train.pth.tar")
    for weights in (tmp_path / "train.pth.tar", wrapped, state):
        model = mod.MobileNetV2(weights=weights)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file(state, str(tmp_path / "model.safetensors"))
    model = mod.MobileNetV2(weights=str(tmp_path / "model.safetensors"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError):
        mod.MobileNetV2(weights=str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("bid", ["mobilenetv2", "mobilenetv4_small", "mobilenetv4_hybrid_medium", "repvit_m1"])
def test_onnx_export_matches_pytorch(bid, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize_(backbone_cls(bid)()).eval()
    x = torch.randn(1, 3, 192, 256)
    path = tmp_path / f"{bid}.onnx"
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["images"],
                      output_names=["p2", "p3", "p4", "p5"], **kwargs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert len(got) == 4
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        assert close(torch.from_numpy(g), w), f"max diff {float((torch.from_numpy(g) - w).abs().max())}"


# ---------------------------------------------------------------------------------------------------------
# Deployment folding (`reparameterize`) and the tutorials' constructor arguments
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bid", IDS)
def test_reparameterize_keeps_eval_outputs_and_is_idempotent(bid):
    """Eval outputs before and after folding agree within 1e-4 x max(1, |output|); no BatchNorm is left (the
    hybrids keep the 4 attention pre-norms that precede a strided depthwise conv); a second call is a no-op."""
    torch.manual_seed(0)
    model = randomize_(backbone_cls(bid)()).eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        before = model(x)
        assert model.reparameterize() is model
        after = model(x)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.reparameterize()
        assert model.state_dict().keys() == state.keys()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(close(a, b) for a, b in zip(after, before))
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (4 if "hybrid" in bid else 0), norms
    assert not any(n.endswith("layer_scale") for n, m in model.named_modules() if m is not None)
    if CATALOG[bid].family == "repvit":
        mixers = {type(m.token_mixer) for m in model.modules() if hasattr(m, "token_mixer")}
        assert mixers == {nn.Conv2d}


def test_reparameterize_per_block_layer():
    blocks = family("mobilenetv2_blocks")
    layer = randomize_(nn.Sequential(blocks.InvertedResidual(32, 32, 1, 6), blocks.InvertedResidual(32, 64, 2, 6)))
    layer.eval()
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        before = layer(x)
        for block in layer:
            block.reparameterize()
        assert close(layer(x), before)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in layer.modules())


@pytest.mark.parametrize("family_name", ["mobilenetv2", "mobilenetv4", "repvit"])
def test_tutorial_pretrained_flag_means_no_weights_file(family_name, tmp_path):
    """The tutorials' yaml rows pass `pretrained` (`[False]`, `[True]`) or nothing; a path is a weights file."""
    bid = {"mobilenetv2": "mobilenetv2", "mobilenetv4": "mobilenetv4_small", "repvit": "repvit_m0_9"}[family_name]
    cls = backbone_cls(bid)
    for flag in (False, True, None):
        torch.manual_seed(0)
        model = cls(flag)
        assert model.width_list == list(CATALOG[bid].channels)
    ckpt = tmp_path / "w.pth"
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, ckpt)
    loaded = cls(str(ckpt))
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(FileNotFoundError):
        cls(str(tmp_path / "missing.pth"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("bid", ["mobilenetv4_hybrid_medium", "repvit_m1_1"])
def test_reparameterized_onnx_export_matches_unfolded_pytorch(bid, tmp_path):
    """The folded graph (what a fused detector exports) computes the unfolded model's maps in onnxruntime."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = randomize_(backbone_cls(bid)()).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        want = model(x)
    model.reparameterize()
    path = tmp_path / f"{bid}-fused.onnx"
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["images"], **kwargs)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    assert len(got) == 4
    for g, w in zip(got, want):
        assert close(torch.from_numpy(g), w), f"max diff {float((torch.from_numpy(g) - w).abs().max())}"
